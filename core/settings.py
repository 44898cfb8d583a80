"""Operator configuration: YAML validated at start-up into frozen settings.

Secrets never live here; they come from the environment (see `bots/environment.py`).
A broken file fails fast with the file, the key and the reason (`ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


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
    # Category -> phrases. Matching is case-insensitive on whole words; see core/risk_guard.py.
    # Required: a missing lexicon would silently switch the guard off.
    lexicon: dict[str, tuple[str, ...]]

    @field_validator("lexicon")
    @classmethod
    def _phrases_not_blank(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if not any(value.values()):
            raise ValueError("list at least one phrase; without a lexicon the risk guard cannot fire")
        for category, phrases in value.items():
            if any(not p.strip() for p in phrases):
                raise ValueError(f"category {category!r} has an empty phrase")
        return value


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
    risk_guard: RiskGuardSettings  # required: the guard must never be silently off
    limits: LimitSettings = LimitSettings()
    notices: NoticeSettings = NoticeSettings()
    moderators: ModeratorSettings = ModeratorSettings()
    discord: DiscordSettings = DiscordSettings()
    retention: RetentionSettings = RetentionSettings()
    budgets: BudgetSettings = BudgetSettings()
    recovery: RecoverySettings = RecoverySettings()
    system_prompt_file: str = "system_prompt.md"
    # Filled from system_prompt_file at load time so the running bot never touches the disk for it.
    system_prompt: str = ""


class ConfigError(Exception):
    """The configuration cannot be used. The message names the file, the key and the reason."""


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def load_settings(path: Path) -> Settings:
    """Read and validate the YAML file at `path` and the system prompt it names."""
    try:
        raw_text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror or exc}") from exc
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
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    prompt_path = (path.parent / settings.system_prompt_file).resolve()
    try:
        prompt = prompt_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: system_prompt_file: cannot read {prompt_path}: {exc.strerror or exc}") from exc
    if not prompt:
        raise ConfigError(f"{path}: system_prompt_file: {prompt_path} is empty")
    return settings.model_copy(update={"system_prompt": prompt})
