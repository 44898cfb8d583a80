"""Operator configuration: every default lives here, in code; a YAML file only overrides some of them.

No file, an empty file and a partial file all work. Secrets never live here; they come from the environment
(see `bots/environment.py`). A broken file fails fast with one line naming the file, the key and the reason
(`ConfigError`). The default system prompt ships inside the package, so the bot runs from any directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_SYSTEM_PROMPT_RESOURCE = "default_system_prompt.md"

# Phrases matched case-insensitively on whole words (core/risk_guard.py). A false positive only keeps the
# bot talking, so the list errs towards firing. A file's `lexicon` replaces only the categories it names.
DEFAULT_LEXICON: dict[str, tuple[str, ...]] = {
    "self_harm": (
        "kill myself",
        "killing myself",
        "end my life",
        "ending my life",
        "take my own life",
        "suicide",
        "suicidal",
        "want to die",
        "wanna die",
        "better off dead",
        "hurt myself",
        "hurting myself",
        "harm myself",
        "self harm",
        "self-harm",
        "cut myself",
        "cutting myself",
        "overdose",
        "overdosed",
        "overdosing",
        "self harming",
        "harming myself",
        "no reason to live",
        "can't go on",
        "cant go on",
        "cannot go on",
        "suicidarme",
        "quitarme la vida",
        "quiero morir",
        "hacerme daño",
        "me suicider",
        "me tuer",
        "envie de mourir",
        "me faire du mal",
        "mich umbringen",
        "selbstmord",
        "nicht mehr leben",
        "mir etwas antun",
    ),
    "crisis": (
        "panic attack",
        "nervous breakdown",
        "mental breakdown",
        "can't take it anymore",
        "cannot take it anymore",
        "no way out",
        "hopeless",
        "hopelessness",
        "in crisis",
        "mental health crisis",
    ),
    "harm_to_others": (
        "kill him",
        "kill her",
        "kill them",
        "kill you",
        "kill everyone",
        "shoot up",
        "going to hurt someone",
        "going to hurt him",
        "going to hurt her",
        "going to hurt them",
        "want to hurt someone",
        "make them pay",
        "bring a gun",
        "voy a matar",
        "je vais tuer",
        "ich bringe ihn um",
        "ich werde ihn umbringen",
    ),
}


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
    # Category -> phrases. A file that names some categories replaces those and keeps the other defaults,
    # so a partial lexicon can never silently drop self_harm; an empty list removes a category.
    lexicon: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(DEFAULT_LEXICON))

    @field_validator("lexicon", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {**DEFAULT_LEXICON, **value}
        return value

    @field_validator("lexicon")
    @classmethod
    def _phrases_not_blank(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        kept = {category: phrases for category, phrases in value.items() if phrases}
        if not kept:
            raise ValueError("list at least one phrase; without a lexicon the risk guard cannot fire")
        for category, phrases in kept.items():
            if any(not p.strip() for p in phrases):
                raise ValueError(f"category {category!r} has an empty phrase")
        return kept


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


class BudgetSettings(_Frozen):
    # 0 switches a budget off.
    per_user_daily_tokens: int = Field(0, ge=0)
    per_channel_daily_tokens: int = Field(0, ge=0)


class Settings(_Frozen):
    model: ModelSettings = ModelSettings()
    rules: RuleSettings = RuleSettings()
    risk_guard: RiskGuardSettings = RiskGuardSettings()
    limits: LimitSettings = LimitSettings()
    notices: NoticeSettings = NoticeSettings()
    moderators: ModeratorSettings = ModeratorSettings()
    discord: DiscordSettings = DiscordSettings()
    retention: RetentionSettings = RetentionSettings()
    budgets: BudgetSettings = BudgetSettings()
    recovery: RecoverySettings = RecoverySettings()
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


def load_settings(path: Path | None) -> Settings:
    """Validate the YAML file at `path` over the defaults (no file: the defaults), and read the system prompt."""
    if path is None:
        return Settings(system_prompt=default_system_prompt())
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
    if settings.system_prompt_file is None:
        return settings.model_copy(update={"system_prompt": default_system_prompt()})
    prompt_path = (path.parent / settings.system_prompt_file).resolve()
    prompt = _read_text(prompt_path, what=f"{path}: system_prompt_file: {prompt_path}").strip()
    if not prompt:
        raise ConfigError(f"{path}: system_prompt_file: {prompt_path} is empty")
    return settings.model_copy(update={"system_prompt": prompt})
