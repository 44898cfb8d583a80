"""Operator configuration: every default lives here, in code; a YAML file only overrides some of them.

No file, an empty file and a partial file all work. Secrets never live here; they come from the environment
(see `bots/environment.py`). A broken file fails fast with one line naming the file, the key and the reason
(`ConfigError`). The default system prompt ships inside the package, so the bot runs from any directory.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from core.risk_guard import PhraseError, check_lexicon

DEFAULT_SYSTEM_PROMPT_RESOURCE = "default_system_prompt.md"
DEFAULT_RISK_REVIEW_RESOURCE = "default_risk_review.md"

# The risk guard's phrases (core/risk_guard.py), shipped as package data; config/risk_phrases.yaml is a copy.
DEFAULT_RISK_PHRASES_RESOURCE = "default_risk_phrases.yaml"
RISK_CATEGORIES = ("self_harm", "harm_to_others", "crisis")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(_Frozen):
    name: str = "claude-opus-4-1"
    max_output_tokens: int = Field(1024, ge=1, le=64000)
    # Oldest turns are dropped past this estimate, leaving headroom for the reply.
    context_budget_tokens: int = Field(150_000, ge=2_000)
    request_timeout_seconds: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0, le=10)
    # The SDK obeys long retry-after values; this caps the whole wait for one reply.
    max_total_wait_seconds: float = Field(90.0, gt=0)


class RuleSettings(_Frozen):
    # Rule 2: a warning only ever follows attempts to redirect, so at least one.
    min_redirects_before_warning: int = Field(2, ge=1)
    min_user_turns_after_warning: int = Field(1, ge=1)


class RiskGuardSettings(_Frozen):
    window_messages: int = Field(10, ge=1)
    support_resources_enabled: bool = True
    support_message: str = (
        "If you are going through something difficult, you don't have to face it alone. "
        "You can reach a local crisis line or emergency services at any time; "
        "findahelpline.com lists free, confidential services by country."
    )
    # The phrase list, relative to the configuration file; unset means the list shipped inside the package.
    phrases_file: str | None = None
    # Category (or `<slot>`) -> phrases. In a file this names only what replaces the phrases file's entries:
    # load_settings fills in the rest, so a partial lexicon can never silently drop self_harm; an empty list
    # removes a category. Built in code, it is the packaged list (read on first use, never at import; the
    # lambda because default_lexicon is defined below, with the file loading).
    lexicon: dict[str, tuple[str, ...]] = Field(default_factory=lambda: default_lexicon())  # noqa: PLW0108

    @field_validator("lexicon")
    @classmethod
    def _phrases_not_blank(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for category, phrases in value.items():
            if any(not p.strip() for p in phrases):
                raise ValueError(f"category {category!r} has an empty phrase")
        return value


class RiskReviewSettings(_Frozen):
    """The risk review by Claude (core/risk_review.py): the gate before every warning and ending, and the
    screen beside every reply. It fails closed: when it cannot answer, nothing is warned or ended."""

    # A small, fast model: it runs beside every reply and before every warning or ending.
    model: str = "claude-haiku-4-5"
    timeout_seconds: float = Field(10.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    max_output_tokens: int = Field(400, ge=64, le=4096)
    # "every_message": screen each user message beside its reply (the default); "endings_only": review
    # only before a warning or an ending.
    screen: Literal["every_message", "endings_only"] = "every_message"
    # The screen reads this many recent messages (every author, Claude's too); the gate reads the whole branch.
    screen_messages: int = Field(20, ge=1)
    # How long a finished reply waits for a screen still running before it is posted without the support
    # resources (they then come with the next reply): the screen adds at most this to an answer.
    screen_grace_seconds: float = Field(1.0, ge=0)
    # The gate reads the whole branch or decides nothing (fail closed); the screen keeps a longer transcript's
    # start and end. About 100k tokens, well inside the review model's context window.
    max_transcript_chars: int = Field(400_000, ge=2_000)
    # An author's mark holds across their conversations on the platform this long after the last signal.
    author_mark_hours: float = Field(24.0, gt=0)
    # Relative to the configuration file; unset means the instructions shipped inside the package.
    instructions_file: str | None = None
    # Filled at load time so the running bot never touches the disk for it.
    instructions: str = ""


class LimitSettings(_Frozen):
    max_message_chars: int = Field(20_000, ge=100)


class NoticeSettings(_Frozen):
    ended_title: str = "This conversation has ended"
    ended_next_steps: str = (
        "You have lost nothing: start a new conversation at any time, or edit one of your earlier "
        "messages to branch this conversation from that point. Feedback on this ending helps us improve."
    )
    ended_reply: str = (
        "This conversation has ended, so nothing posted here reaches Claude. "
        "Start a new conversation, or edit one of your earlier messages to branch from it."
    )
    confirm_question: str = "End this conversation? This is permanent for this thread."
    confirm_declined: str = "Okay, the conversation continues."
    # Shown when the model had nothing fit to show (no text, or text that went with a refused call).
    conversation_continues: str = "(The conversation continues.)"
    model_unavailable: str = (
        "Claude is unavailable right now, so this message has not been answered yet. "
        "Your message is saved; please try again in a moment."
    )
    model_refused: str = (
        "Claude declined to respond to that message. It will not be used in the rest of this conversation."
    )
    too_long: str = "That message is too long ({length} characters; the limit is {limit}). Please shorten it."
    empty: str = "That message is empty. What would you like to talk about?"
    budget_reached: str = "The daily usage budget here has been reached. Please try again tomorrow."


class ModeratorSettings(_Frozen):
    slack_user_ids: tuple[str, ...] = ()
    slack_usergroup_ids: tuple[str, ...] = ()
    slack_workspace_admins: bool = True


class DiscordSettings(_Frozen):
    archive_on_end: bool = False
    # Webhook posts (bridges, feeds) are not people talking to the bot: ignored unless this is on.
    answer_webhooks: bool = False
    # Text attachments (text/* only) up to this size reach the model, marked as attachments.
    max_attachment_bytes: int = Field(16_000, ge=0, le=1_000_000)
    # After a fresh gateway session or a start, active threads written in within this many hours are read
    # for messages nobody saw (at most `catch_up_threads` threads, `catch_up_messages` messages each).
    catch_up_hours: float = Field(24.0, ge=0)
    catch_up_threads: int = Field(50, ge=0, le=1000)
    catch_up_messages: int = Field(50, ge=1, le=100)
    # A gateway that never connects makes the process exit (status 1) after this many seconds, so the
    # platform restarts it and shows why; until then /readyz says it is not ready.
    connect_timeout_seconds: float = Field(300.0, ge=1)


class RetentionSettings(_Frozen):
    message_text_days: int = Field(30, ge=1)


class RecoverySettings(_Frozen):
    # A message nobody answered for this long (a lease lives 15 s) was left by a process that stopped.
    age_seconds: float = Field(30.0, ge=1)
    interval_seconds: float = Field(15.0, ge=0.1)
    # A thread's lease: renewed every third of this while held, gone this long after its holder dies.
    lease_seconds: float = Field(15.0, ge=0.5)


class ShutdownSettings(_Frozen):
    # On SIGTERM, replies in flight get this long to finish before they are cancelled (their messages stay
    # for the next instance). Most platforms send SIGKILL 30 s after SIGTERM: 20 s leaves time to close the
    # database; set it below your platform's grace period.
    drain_seconds: float = Field(20.0, ge=0, le=3600)


class BudgetSettings(_Frozen):
    # 0 switches a budget off.
    per_user_daily_tokens: int = Field(0, ge=0)
    per_channel_daily_tokens: int = Field(0, ge=0)


class Settings(_Frozen):
    model: ModelSettings = ModelSettings()
    rules: RuleSettings = RuleSettings()
    risk_guard: RiskGuardSettings = Field(default_factory=RiskGuardSettings)
    risk_review: RiskReviewSettings = RiskReviewSettings()
    limits: LimitSettings = LimitSettings()
    notices: NoticeSettings = NoticeSettings()
    moderators: ModeratorSettings = ModeratorSettings()
    discord: DiscordSettings = DiscordSettings()
    retention: RetentionSettings = RetentionSettings()
    budgets: BudgetSettings = BudgetSettings()
    recovery: RecoverySettings = RecoverySettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    # Relative to the configuration file; unset means the prompt shipped inside the package.
    system_prompt_file: str | None = None
    # Filled at load time so the running bot never touches the disk for it.
    system_prompt: str = ""


class ConfigError(Exception):
    """The configuration cannot be used. The message names the file, the key and the reason."""


def _describe(error: ValidationError, path: Path) -> str:
    """One line: the file, then each bad key and why (usually there is only one)."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        problems.append(f"{key}: {item['msg']}")
    return f"{path}: " + "; ".join(problems)


def _read_text(path: Path, *, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read: {exc.strerror or exc}") from exc


def default_system_prompt() -> str:
    return resources.files("core").joinpath(DEFAULT_SYSTEM_PROMPT_RESOURCE).read_text(encoding="utf-8").strip()


@functools.cache
def _packaged_risk_phrases() -> tuple[tuple[str, tuple[str, ...]], ...]:
    text = resources.files("core").joinpath(DEFAULT_RISK_PHRASES_RESOURCE).read_text(encoding="utf-8")
    return tuple(_parse_phrases(text, what=f"core/{DEFAULT_RISK_PHRASES_RESOURCE}").items())


def default_lexicon() -> dict[str, tuple[str, ...]]:
    """The phrase list shipped inside the package (read once, on first use)."""
    return dict(_packaged_risk_phrases())


_PHRASES = TypeAdapter(dict[str, tuple[str, ...]])


def _parse_phrases(text: str, *, what: str) -> dict[str, tuple[str, ...]]:
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    try:
        return _PHRASES.validate_python(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{what}: {problems}") from exc


def _with_lexicon(settings: Settings, path: Path | None) -> Settings:
    """The phrases file (or the packaged list) under the config's own `lexicon`, its syntax checked."""
    guard = settings.risk_guard
    if guard.phrases_file is None or path is None:
        base = default_lexicon()
    else:
        phrases_path = (path.parent / guard.phrases_file).resolve()
        what = f"{path}: risk_guard.phrases_file: {phrases_path}"
        base = _parse_phrases(_read_text(phrases_path, what=what), what=what)
        # Like a partial lexicon, an operator's own list can never silently drop a category: it names each one,
        # and an empty list removes one on purpose.
        missing = [category for category in RISK_CATEGORIES if category not in base]
        if missing:
            raise ConfigError(f"{what}: names no {', '.join(missing)} (an empty list removes one on purpose)")
    override = guard.lexicon if "lexicon" in guard.model_fields_set else {}
    merged = {key: phrases for key, phrases in {**base, **override}.items() if phrases}
    where = f"{path}: risk_guard.lexicon" if path is not None else "risk_guard.lexicon"
    if not any(not key.startswith("<") for key in merged):
        raise ConfigError(f"{where}: list at least one phrase; without a lexicon the risk guard cannot fire")
    try:
        check_lexicon(merged)
    except PhraseError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return settings.model_copy(update={"risk_guard": guard.model_copy(update={"lexicon": merged})})


def default_risk_review_instructions() -> str:
    return resources.files("core").joinpath(DEFAULT_RISK_REVIEW_RESOURCE).read_text(encoding="utf-8").strip()


def _with_review_instructions(settings: Settings, path: Path | None) -> Settings:
    review = settings.risk_review
    if path is None or review.instructions_file is None:
        text = default_risk_review_instructions()
    else:
        file = (path.parent / review.instructions_file).resolve()
        text = _read_text(file, what=f"{path}: risk_review.instructions_file: {file}").strip()
        if not text:
            raise ConfigError(f"{path}: risk_review.instructions_file: {file} is empty")
    return settings.model_copy(update={"risk_review": review.model_copy(update={"instructions": text})})


def load_settings(path: Path | None) -> Settings:
    """Validate the YAML file at `path` over the defaults (no file: the defaults); read the prompt and phrases."""
    if path is None:
        return _with_review_instructions(_with_lexicon(Settings(system_prompt=default_system_prompt()), None), None)
    raw_text = _read_text(path, what=f"{path}")
    try:
        raw: Any = yaml.safe_load(raw_text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: (top level): expected a mapping of settings, got {type(raw).__name__}")
    if "system_prompt" in raw:
        raise ConfigError(f"{path}: system_prompt: set system_prompt_file instead (a path to a text file)")
    # `risk_guard:` with nothing under it is YAML null: the same as leaving the section out.
    raw = {key: value for key, value in raw.items() if not (value is None and key in Settings.model_fields)}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    settings = _with_lexicon(settings, path)
    settings = _with_review_instructions(settings, path)
    if settings.system_prompt_file is None:
        return settings.model_copy(update={"system_prompt": default_system_prompt()})
    prompt_path = (path.parent / settings.system_prompt_file).resolve()
    prompt = _read_text(prompt_path, what=f"{path}: system_prompt_file: {prompt_path}").strip()
    if not prompt:
        raise ConfigError(f"{path}: system_prompt_file: {prompt_path} is empty")
    return settings.model_copy(update={"system_prompt": prompt})
