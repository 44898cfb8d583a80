"""Config is YAML validated at start-up; an invalid file fails fast with the file, the key and the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from core.risk_guard import categories_in, compile_lexicon
from core.settings import (
    ConfigError,
    RiskGuardSettings,
    RuleSettings,
    Settings,
    default_lexicon,
    default_risk_review_instructions,
    default_system_prompt,
    load_settings,
)
from tests.support.paths import REPO

CONFIG_DIR = REPO / "config"
SHIPPED = CONFIG_DIR / "lastresort.yaml"
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8")
SHIPPED_PHRASES = CONFIG_DIR / "risk_phrases.yaml"
PACKAGED_PHRASES = REPO / "core" / "default_risk_phrases.yaml"


def write_config(directory: Path, text: str, *, prompt: str | None = None) -> Path:
    """A config file in `directory`, next to copies of the files the shipped one names (the system prompt
    replaced by `prompt` if given)."""
    for companion in CONFIG_DIR.iterdir():
        if companion.is_file() and companion.name != "lastresort.yaml":
            (directory / companion.name).write_bytes(companion.read_bytes())
    if prompt is not None:
        (directory / "system_prompt.md").write_text(prompt, encoding="utf-8")
    path = directory / "lastresort.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def replaced(old: str, new: str) -> str:
    assert old in SHIPPED_TEXT, f"test setup: {old!r} is not in the shipped config"
    return SHIPPED_TEXT.replace(old, new, 1)


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


# --------------------------------------------------------------------------------------------------------------
# The shipped configuration
# --------------------------------------------------------------------------------------------------------------


def test_shipped_config_loads_with_the_documented_defaults() -> None:
    settings = load_settings(SHIPPED)
    assert settings.rules.min_redirects_before_warning == 2
    assert settings.rules.min_user_turns_after_warning == 1
    assert settings.risk_guard.window_messages == 10
    assert settings.risk_guard.support_resources_enabled is True
    assert {"self_harm", "crisis", "harm_to_others"} <= set(settings.risk_guard.lexicon)
    assert all(settings.risk_guard.lexicon.values())
    assert settings.shutdown.drain_seconds == 20


def test_shipped_config_reads_the_system_prompt_file() -> None:
    settings = load_settings(SHIPPED)
    assert settings.system_prompt == (CONFIG_DIR / settings.system_prompt_file).read_text(encoding="utf-8").strip()
    assert settings.system_prompt


def test_code_defaults_are_the_documented_defaults() -> None:
    # ending-rules.md: "default" values are settings with that default, even when the file leaves them out.
    rules = RuleSettings()
    assert rules.min_redirects_before_warning == 2
    assert rules.min_user_turns_after_warning == 1
    guard = RiskGuardSettings(lexicon={"x": ("y",)})
    assert guard.window_messages == 10
    assert guard.support_resources_enabled is True


def test_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "risk_guard:\n  lexicon:\n    self_harm: [suicide]\n")
    settings = load_settings(path)
    assert settings.rules == RuleSettings()
    assert settings.risk_guard.window_messages == 10
    assert settings.system_prompt_file is None
    assert settings.system_prompt == default_system_prompt()


def _comparable(settings: Settings) -> dict[str, object]:
    return settings.model_dump(
        exclude={"system_prompt_file": True, "risk_guard": {"phrases_file"}, "risk_review": {"instructions_file"}}
    )


def test_the_shipped_file_only_repeats_the_defaults_in_code() -> None:
    # "Every key is optional; these are the defaults" stays true: the file and the code never drift apart.
    assert _comparable(load_settings(SHIPPED)) == _comparable(load_settings(None))


def test_the_packaged_risk_review_instructions_are_the_shipped_ones() -> None:
    shipped = (CONFIG_DIR / "risk_review.md").read_text(encoding="utf-8").strip()
    assert default_risk_review_instructions() == shipped
    assert "assess_risk" in shipped and "at_risk: true" in shipped  # it leans towards "at risk"
    assert load_settings(None).risk_review.instructions == shipped


def test_risk_review_settings_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "lastresort.yaml"
    config.write_text("risk_review:\n  screen: sometimes\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"risk_review\.screen"):
        load_settings(config)
    config.write_text("risk_review:\n  instructions_file: missing.md\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"risk_review\.instructions_file"):
        load_settings(config)
    (tmp_path / "mine.md").write_text("Review carefully.\n", encoding="utf-8")
    config.write_text("risk_review:\n  instructions_file: mine.md\n  screen: endings_only\n", encoding="utf-8")
    loaded = load_settings(config).risk_review
    assert (loaded.instructions, loaded.screen) == ("Review carefully.", "endings_only")
    assert loaded.model == "claude-haiku-4-5"


def test_the_packaged_system_prompt_is_the_shipped_one() -> None:
    assert default_system_prompt() == (CONFIG_DIR / "system_prompt.md").read_text(encoding="utf-8").strip()
    assert default_system_prompt()


def test_the_packaged_risk_phrases_are_the_shipped_ones() -> None:
    assert PACKAGED_PHRASES.read_text(encoding="utf-8") == SHIPPED_PHRASES.read_text(encoding="utf-8")
    assert load_settings(SHIPPED).risk_guard.phrases_file == "risk_phrases.yaml"
    assert {"self_harm", "crisis", "harm_to_others"} <= set(default_lexicon())


def test_settings_built_in_code_have_the_packaged_phrases() -> None:
    # Never a guard that cannot fire, however the settings were made.
    assert Settings().risk_guard.lexicon == default_lexicon()
    assert RiskGuardSettings().lexicon == default_lexicon()


def test_nothing_is_read_at_import_time() -> None:
    # The phrases are read on first use, so importing the settings costs nothing and cannot fail.
    code = (
        "import core.settings as s\n"
        "assert s._packaged_risk_phrases.cache_info().currsize == 0\n"
        "s.default_lexicon()\n"
        "assert s._packaged_risk_phrases.cache_info().currsize == 1"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty-file"),
        pytest.param("# only a comment\n", id="only-comments"),
        pytest.param("risk_guard: {}\n", id="empty-risk-guard"),
        pytest.param("risk_guard:\n", id="null-risk-guard"),
        pytest.param("risk_guard:\n  lexicon: {}\n", id="empty-lexicon-keeps-the-defaults"),
        pytest.param("model:\n  max_output_tokens: 512\n", id="partial-file"),
    ],
)
def test_an_empty_or_partial_file_keeps_every_other_default(tmp_path: Path, text: str) -> None:
    settings = load_settings(write_config(tmp_path, text))
    defaults = load_settings(None)
    assert settings.risk_guard == defaults.risk_guard
    assert settings.risk_guard.lexicon == default_lexicon()
    assert settings.rules == defaults.rules and settings.notices == defaults.notices
    assert settings.model.max_output_tokens == (512 if "512" in text else 1024)
    assert settings.system_prompt == default_system_prompt()


def test_no_file_at_all_is_the_defaults_with_the_packaged_prompt() -> None:
    settings = load_settings(None)
    assert settings.risk_guard.lexicon == default_lexicon()
    assert {"self_harm", "crisis", "harm_to_others"} <= set(settings.risk_guard.lexicon)
    assert settings.system_prompt == default_system_prompt()


def test_a_partial_lexicon_replaces_only_the_categories_it_names(tmp_path: Path) -> None:
    # Naming one category must never switch the guard off for the others (self_harm above all).
    text = "risk_guard:\n  lexicon:\n    crisis: [meltdown]\n    harm_to_others: []\n    spam_rage: [grr]\n"
    lexicon = load_settings(write_config(tmp_path, text)).risk_guard.lexicon
    assert lexicon["crisis"] == ("meltdown",)
    assert lexicon["self_harm"] == default_lexicon()["self_harm"]
    assert lexicon["spam_rage"] == ("grr",)
    assert "harm_to_others" not in lexicon  # an empty list removes a category on purpose


def test_phrases_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    mine = "self_harm: [red balloon]\nharm_to_others: []\ncrisis: []\nteapot: [short and stout]\n"
    (tmp_path / "mine.yaml").write_text(mine, encoding="utf-8")
    path = write_config(tmp_path, "risk_guard:\n  phrases_file: mine.yaml\n")
    lexicon = load_settings(path).risk_guard.lexicon
    assert lexicon == {"self_harm": ("red balloon",), "teapot": ("short and stout",)}


def test_a_phrases_file_that_leaves_out_a_category_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("crisis: [blue moon]\nharm_to_others: []\n", encoding="utf-8")
    message = load_error(write_config(tmp_path, "risk_guard:\n  phrases_file: mine.yaml\n"))
    assert "mine.yaml" in message and "names no self_harm" in message


def test_a_config_lexicon_replaces_only_what_it_names_over_the_phrases_file(tmp_path: Path) -> None:
    mine = "self_harm: [red balloon]\ncrisis: [blue moon]\nharm_to_others: []\n"
    (tmp_path / "mine.yaml").write_text(mine, encoding="utf-8")
    text = "risk_guard:\n  phrases_file: mine.yaml\n  lexicon:\n    crisis: [green cheese]\n"
    lexicon = load_settings(write_config(tmp_path, text)).risk_guard.lexicon
    assert lexicon == {"self_harm": ("red balloon",), "crisis": ("green cheese",)}


def test_a_config_lexicon_can_replace_a_slot_of_the_shipped_list(tmp_path: Path) -> None:
    text = "risk_guard:\n  lexicon:\n    <someone>: [the gardener]\n"
    lexicon = compile_lexicon(load_settings(write_config(tmp_path, text)).risk_guard.lexicon)
    assert categories_in("I will kill the gardener", lexicon) == {"harm_to_others"}
    assert categories_in("I will kill him", lexicon) == frozenset()
    assert categories_in("I want to kill myself", lexicon) == {"self_harm"}


def test_settings_are_frozen() -> None:
    settings = load_settings(SHIPPED)
    with pytest.raises(pydantic.ValidationError):
        settings.rules.min_redirects_before_warning = 0  # type: ignore[misc]
    assert isinstance(settings, Settings)


def test_system_prompt_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, SHIPPED_TEXT, prompt="  A custom prompt for this test.\n\n")
    assert load_settings(path).system_prompt == "A custom prompt for this test."


# --------------------------------------------------------------------------------------------------------------
# Invalid files: the message names the file, the key and the reason
# --------------------------------------------------------------------------------------------------------------


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    text = "rules:\n  min_redirects_before_warning: 2\n    min_user_turns_after_warning: 1\n"
    path = write_config(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert "line 3" in message
    assert "not valid YAML" in message


def test_yaml_syntax_error_in_the_shipped_file_points_at_the_broken_line(tmp_path: Path) -> None:
    lines = SHIPPED_TEXT.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("limits:"))
    lines[index] = "limits: [unclosed"
    path = write_config(tmp_path, "\n".join(lines) + "\n")
    message = load_error(path)
    assert str(path) in message
    assert "line " in message
    reported = int(message.split("line ", 1)[1].split(",", 1)[0])
    # The parser notices an unclosed flow sequence at or after the line that opens it.
    assert reported >= index + 1


INVALID = [
    pytest.param(
        replaced("min_redirects_before_warning: 2", 'min_redirects_before_warning: "two"'),
        "rules.min_redirects_before_warning",
        "integer",
        id="wrong-type-string-for-int",
    ),
    pytest.param(
        replaced("min_redirects_before_warning: 2", "min_redirects_before_warning: 0"),
        "rules.min_redirects_before_warning",
        "greater than or equal to 1",
        id="zero-min-redirects",
    ),
    pytest.param(
        replaced("min_user_turns_after_warning: 1", "min_user_turns_after_warning: 0"),
        "rules.min_user_turns_after_warning",
        "greater than or equal to 1",
        id="zero-user-turns-after-warning",
    ),
    pytest.param(
        replaced("window_messages: 10", "window_messages: 0"),
        "risk_guard.window_messages",
        "greater than or equal to 1",
        id="zero-risk-window",
    ),
    pytest.param(
        replaced("max_output_tokens: 1024", "max_output_tokens: lots"),
        "model.max_output_tokens",
        "integer",
        id="wrong-type-model-tokens",
    ),
    pytest.param(
        replaced("support_resources_enabled: true", "support_resources_enabled: maybe"),
        "risk_guard.support_resources_enabled",
        "boolean",
        id="wrong-type-bool",
    ),
    pytest.param(
        SHIPPED_TEXT + "\nmodle:\n  name: typo\n",
        "modle",
        "Extra inputs are not permitted",
        id="unknown-top-level-key",
    ),
    pytest.param(
        replaced("rules:\n", "rules:\n  min_redirect_before_warning: 3\n"),
        "rules.min_redirect_before_warning",
        "Extra inputs are not permitted",
        id="unknown-nested-key-typo",
    ),
    pytest.param(
        "system_prompt_file: system_prompt.md\nrisk_guard:\n  lexicon:\n"
        "    self_harm: []\n    crisis: []\n    harm_to_others: []\n",
        "risk_guard.lexicon",
        "at least one phrase",
        id="lexicon-with-no-phrases",
    ),
    pytest.param(
        "risk_guard:\n  lexicon:\n    self_harm:\n      - suicide\n      - '   '\n",
        "risk_guard.lexicon",
        "empty phrase",
        id="lexicon-blank-phrase",
    ),
    pytest.param("risk_guard:\n  lexicon: [suicide]\n", "risk_guard.lexicon", "dictionary", id="lexicon-a-list"),
    pytest.param("model: claude\n", "model", "ModelSettings", id="section-not-a-mapping"),
    pytest.param("limits:\n  max_message_chars: 5\n", "limits.max_message_chars", "greater than or equal", id="range"),
    pytest.param("shutdown:\n  drain_seconds: -1\n", "shutdown.drain_seconds", "greater than", id="negative-drain"),
    pytest.param("- just\n- a list\n", "(top level)", "mapping", id="top-level-not-a-mapping"),
    pytest.param(
        SHIPPED_TEXT + "\nsystem_prompt: inline prompt\n",
        "system_prompt",
        "system_prompt_file",
        id="inline-system-prompt-rejected",
    ),
]


@pytest.mark.parametrize(("text", "key", "reason"), INVALID)
def test_invalid_config_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write_config(tmp_path, text)
    message = load_error(path)
    assert str(path) in message
    assert key in message
    assert reason in message
    assert "\n" not in message  # one line


def test_a_file_that_is_not_utf8_is_named_with_the_reason(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    path.write_bytes("notices:\n  empty: Caf\u00e9?\n".encode("latin-1"))
    message = load_error(path)
    assert str(path) in message and "not UTF-8" in message and "0xe9" in message


def test_a_system_prompt_that_is_not_utf8_is_named_with_the_setting(tmp_path: Path) -> None:
    path = write_config(tmp_path, "system_prompt_file: prompt.md\n")
    (tmp_path / "prompt.md").write_bytes(b"Be kind \xff\n")
    message = load_error(path)
    assert "system_prompt_file" in message and "prompt.md" in message and "not UTF-8" in message


def test_wrong_type_error_names_only_the_bad_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, replaced("min_redirects_before_warning: 2", 'min_redirects_before_warning: "two"'))
    message = load_error(path)
    assert "min_user_turns_after_warning" not in message
    assert "model." not in message


def test_missing_system_prompt_file_names_the_setting(tmp_path: Path) -> None:
    path = write_config(tmp_path, replaced("system_prompt_file: system_prompt.md", "system_prompt_file: nowhere.md"))
    message = load_error(path)
    assert str(path) in message
    assert "system_prompt_file" in message
    assert "nowhere.md" in message


def test_blank_system_prompt_file_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, SHIPPED_TEXT, prompt="  \n\n ")
    message = load_error(path)
    assert "system_prompt_file" in message
    assert "empty" in message


def test_missing_phrases_file_names_the_setting(tmp_path: Path) -> None:
    path = write_config(tmp_path, replaced("phrases_file: risk_phrases.yaml", "phrases_file: nowhere.yaml"))
    message = load_error(path)
    assert str(path) in message and "risk_guard.phrases_file" in message and "nowhere.yaml" in message


@pytest.mark.parametrize(
    ("phrases", "reason"),
    [
        pytest.param("self_harm: [kill <nobody_here>]\n", "unknown slot <nobody_here>", id="unknown-slot"),
        pytest.param("self_harm: [kill <me>]\n<me>: [<me> again]\n", "refers to itself", id="recursive-slot"),
        pytest.param("self_harm:\n  - maybe? perhaps?\n", "only optional words", id="only-optional-words"),
        pytest.param("self_harm: suicide\n", "self_harm", id="not-a-list"),
        pytest.param("self_harm: [a\n", "not valid YAML", id="broken-yaml"),
        pytest.param("crisis: []\n", "at least one phrase", id="no-category-left"),
    ],
)
def test_a_broken_phrases_file_is_one_line_naming_the_problem(tmp_path: Path, phrases: str, reason: str) -> None:
    categories = "".join(f"{c}: []\n" for c in ("self_harm", "harm_to_others", "crisis") if f"{c}:" not in phrases)
    (tmp_path / "mine.yaml").write_text(phrases + categories, encoding="utf-8")
    message = load_error(write_config(tmp_path, "risk_guard:\n  phrases_file: mine.yaml\n"))
    assert str(tmp_path) in message and reason in message and "\n" not in message


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    message = load_error(path)
    assert str(path) in message
    assert "cannot read" in message


# --------------------------------------------------------------------------------------------------------------
# The command line: exit status 2 with the file, the key and the reason on stderr
# --------------------------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bots.cli", *args],
        env={**base, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["chat", "run", "migrate"])
def test_cli_broken_config_exits_2_naming_file_and_key(tmp_path: Path, command: str) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    path = write_config(config_dir, replaced("min_redirects_before_warning: 2", 'min_redirects_before_warning: "two"'))
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_cli(command, env={"LASTRESORT_CONFIG": str(path), "ANTHROPIC_API_KEY": "x"}, cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr
    assert "rules.min_redirects_before_warning" in result.stderr
    assert "Traceback" not in result.stderr
    # It failed before touching anything: no database file, nothing else.
    assert list(workdir.iterdir()) == []


def test_cli_yaml_syntax_error_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "rules:\n  min_redirects_before_warning: 2\n    oops: 1\n")
    result = run_cli("chat", env={"LASTRESORT_CONFIG": str(path), "ANTHROPIC_API_KEY": "x"}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr
    assert "line 3" in result.stderr


@pytest.mark.parametrize("command", ["run", "chat"])
def test_cli_without_api_key_exits_2_naming_the_variable(tmp_path: Path, command: str) -> None:
    result = run_cli(command, env={"LASTRESORT_CONFIG": str(SHIPPED)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "ANTHROPIC_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_blank_api_key_counts_as_missing(tmp_path: Path) -> None:
    result = run_cli("run", env={"LASTRESORT_CONFIG": str(SHIPPED), "ANTHROPIC_API_KEY": "   "}, cwd=tmp_path)
    assert result.returncode == 2
    assert "ANTHROPIC_API_KEY" in result.stderr


def test_console_script_reports_a_broken_config(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "lastresort"
    if not script.exists():
        pytest.skip("the lastresort console script is not installed in this environment")
    path = write_config(tmp_path, replaced("min_redirects_before_warning: 2", 'min_redirects_before_warning: "two"'))
    result = subprocess.run(
        [str(script), "chat"],
        env={"PATH": os.environ.get("PATH", ""), "LASTRESORT_CONFIG": str(path), "ANTHROPIC_API_KEY": "x"},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr
    assert "rules.min_redirects_before_warning" in result.stderr
