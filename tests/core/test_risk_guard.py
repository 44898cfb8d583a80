"""The risk guard with the shipped lexicon (config/lastresort.yaml): which texts fire, which do not, and the window.

Only what the shipped lexicon really implies is asserted: the guard is a transparent phrase matcher, so a
phrase inside an innocent sentence still fires (the safe side) and anything not listed does not.
"""

from __future__ import annotations

import pytest

from core.risk_guard import Lexicon, assess, categories_in, compile_lexicon, normalize
from core.settings import load_settings
from tests.support.paths import CONFIG

SELF_HARM = "self_harm"
CRISIS = "crisis"
OTHERS = "harm_to_others"


@pytest.fixture(scope="module")
def shipped() -> tuple[Lexicon, int]:
    guard = load_settings(CONFIG).risk_guard
    return compile_lexicon(guard.lexicon), guard.window_messages


@pytest.fixture(scope="module")
def lexicon(shipped: tuple[Lexicon, int]) -> Lexicon:
    return shipped[0]


def test_shipped_lexicon_has_the_three_categories_and_default_window(shipped: tuple[Lexicon, int]) -> None:
    lexicon, window = shipped
    assert {category for category, _ in lexicon.patterns} == {SELF_HARM, CRISIS, OTHERS}
    assert window == 10  # ending-rules.md: "default: the last 10"


FIRES = [
    # English self-harm and suicide
    pytest.param("I want to kill myself", {SELF_HARM}, id="en-kill-myself"),
    pytest.param("honestly i've been thinking about suicide", {SELF_HARM}, id="en-suicide"),
    pytest.param("I just want to die", {SELF_HARM}, id="en-want-to-die"),
    pytest.param(
        "everyone would be better off dead without me... i'd be better off dead", {SELF_HARM}, id="en-better-off-dead"
    ),
    pytest.param("I keep cutting myself", {SELF_HARM}, id="en-cutting-myself"),
    pytest.param("thinking about self-harm again", {SELF_HARM}, id="en-self-hyphen-harm"),
    pytest.param("I can't go on like this", {SELF_HARM}, id="en-cant-go-on"),
    # Spanish, French, German self-harm
    pytest.param("Quiero morir, ya no aguanto", {SELF_HARM}, id="es-quiero-morir"),
    pytest.param("estoy pensando en suicidarme", {SELF_HARM}, id="es-suicidarme"),
    pytest.param("Voy a quitarme la vida", {SELF_HARM}, id="es-quitarme-la-vida"),
    pytest.param("tengo ganas de hacerme daño", {SELF_HARM}, id="es-hacerme-dano"),
    pytest.param("J'ai envie de mourir", {SELF_HARM}, id="fr-envie-de-mourir"),
    pytest.param("je veux me suicider", {SELF_HARM}, id="fr-me-suicider"),
    pytest.param("Je vais me tuer", {SELF_HARM}, id="fr-me-tuer-not-harm-to-others"),
    pytest.param("Ich will mich umbringen", {SELF_HARM}, id="de-mich-umbringen"),
    pytest.param("Ich denke an Selbstmord", {SELF_HARM}, id="de-selbstmord"),
    pytest.param("ich will nicht mehr leben", {SELF_HARM}, id="de-nicht-mehr-leben"),
    pytest.param("Ich werde mir etwas antun", {SELF_HARM}, id="de-mir-etwas-antun"),
    # Crisis
    pytest.param("I'm having a panic attack right now", {CRISIS}, id="en-panic-attack"),
    pytest.param("I feel completely hopeless", {CRISIS}, id="en-hopeless"),
    pytest.param("there is no way out for me", {CRISIS}, id="en-no-way-out"),
    pytest.param("I can't take it anymore", {CRISIS}, id="en-cant-take-it-anymore"),
    # Harm to others, several languages
    pytest.param("I'm going to kill him tonight", {OTHERS}, id="en-kill-him"),
    pytest.param("I will bring a gun to school", {OTHERS}, id="en-bring-a-gun"),
    pytest.param("I'm going to hurt someone", {OTHERS}, id="en-going-to-hurt-someone"),
    pytest.param("they will see, I'll make them pay", {OTHERS}, id="en-make-them-pay"),
    pytest.param("Voy a matar a mi vecino", {OTHERS}, id="es-voy-a-matar"),
    pytest.param("Je vais tuer mon patron", {OTHERS}, id="fr-je-vais-tuer"),
    pytest.param("Ich werde ihn umbringen", {OTHERS}, id="de-ihn-umbringen"),
    pytest.param("ich bringe ihn um", {OTHERS}, id="de-bringe-ihn-um"),
    # Several categories at once
    pytest.param("I feel hopeless and I want to die", {CRISIS, SELF_HARM}, id="crisis-and-self-harm"),
    pytest.param("I'll kill them and then kill myself", {OTHERS, SELF_HARM}, id="others-and-self-harm"),
    # Variants: case, curly apostrophes, extra or unusual whitespace, punctuation around, Unicode forms
    pytest.param("I WANT TO KILL MYSELF", {SELF_HARM}, id="variant-upper-case"),
    pytest.param("I Want To Kill Myself", {SELF_HARM}, id="variant-title-case"),
    pytest.param("I can\u2019t go on", {SELF_HARM}, id="variant-curly-right-apostrophe"),
    pytest.param("I can\u2018t take it anymore", {CRISIS}, id="variant-curly-left-apostrophe"),
    pytest.param("I CAN\u2019T TAKE IT ANYMORE", {CRISIS}, id="variant-curly-apostrophe-upper"),
    pytest.param("i want to   kill     myself", {SELF_HARM}, id="variant-extra-spaces"),
    pytest.param("i want to kill\tmyself", {SELF_HARM}, id="variant-tab"),
    pytest.param("i want to kill\nmyself", {SELF_HARM}, id="variant-newline"),
    pytest.param("i want to kill\u00a0myself", {SELF_HARM}, id="variant-no-break-space"),
    pytest.param("kill myself.", {SELF_HARM}, id="variant-trailing-period"),
    pytest.param('"kill myself"', {SELF_HARM}, id="variant-quoted"),
    pytest.param("(suicide)", {SELF_HARM}, id="variant-parenthesised"),
    pytest.param("tengo ganas de hacerme dan\u0303o", {SELF_HARM}, id="variant-decomposed-n-tilde"),
    pytest.param("\uff53\uff55\uff49\uff43\uff49\uff44\uff45", {SELF_HARM}, id="variant-fullwidth-letters"),
    # A listed phrase fires even in an innocent sentence: the guard errs towards firing (the safe side).
    pytest.param("who is in the cast of Suicide Squad?", {SELF_HARM}, id="false-positive-kept-movie-title"),
]


@pytest.mark.parametrize(("text", "expected"), FIRES)
def test_shipped_lexicon_fires(lexicon: Lexicon, text: str, expected: set[str]) -> None:
    assert categories_in(text, lexicon) == frozenset(expected)


SILENT = [
    # Rudeness, disagreement and heated debate are not risk (rule 6).
    pytest.param("You are a useless bot and your answers are garbage", id="rudeness"),
    pytest.param("Shut up, you're wrong and that's a stupid argument", id="heated-disagreement"),
    pytest.param("I hate this stupid library so much", id="frustration"),
    # Figures of speech whose words are not a listed phrase.
    pytest.param("this movie kills me", id="movie-kills-me"),
    pytest.param("I could kill for a coffee", id="kill-for-a-coffee"),
    pytest.param("just kill the process with kill -9", id="kill-the-process"),
    pytest.param("I absolutely killed it at the gym", id="killed-it"),
    pytest.param("we're killing time before the meeting", id="killing-time"),
    # Whole words only: a listed phrase glued inside a longer word does not match.
    pytest.param("I need to skill myself up in Rust", id="whole-word-skill-myself"),
    pytest.param("I'll teach you a skill you will love", id="whole-word-skill-you"),
    pytest.param("I'm hopelessly in love with this framework", id="whole-word-hopelessly"),
    pytest.param("let's shoot upstairs for the photo", id="whole-word-shoot-upstairs"),
    pytest.param("I want to diet", id="whole-word-want-to-diet"),
    # Words of a phrase that are not adjacent do not match.
    pytest.param("kill the bug, then ask myself why", id="phrase-words-not-adjacent"),
    pytest.param("", id="empty-text"),
]


@pytest.mark.parametrize("text", SILENT)
def test_shipped_lexicon_stays_silent(lexicon: Lexicon, text: str) -> None:
    assert categories_in(text, lexicon) == frozenset()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("I\u2019M", "i'm", id="curly-right-and-case"),
        pytest.param("\u2018quoted\u2019", "'quoted'", id="curly-left-and-right"),
        pytest.param("STRASSE", "strasse", id="casefold"),
        pytest.param("Stra\u00dfe", "strasse", id="casefold-sharp-s"),
        pytest.param("\ufb01le", "file", id="nfkc-ligature"),
    ],
)
def test_normalize_folds_case_forms_and_apostrophes(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


# --------------------------------------------------------------------------------------------------------------
# The window: the guard reads the last `window` user messages, oldest first
# --------------------------------------------------------------------------------------------------------------

RISKY = "I want to kill myself"
BENIGN = "can you help me with my SQL query?"


def test_window_risky_message_just_outside_window_does_not_fire(shipped: tuple[Lexicon, int]) -> None:
    lexicon, window = shipped
    texts = [RISKY] + [BENIGN] * window  # the risky message is window + 1 messages ago
    result = assess(texts, lexicon, window=window)
    assert not result.fired
    assert result.categories == frozenset()
    assert result.current_message is False


def test_window_risky_message_at_oldest_position_in_window_fires(shipped: tuple[Lexicon, int]) -> None:
    lexicon, window = shipped
    texts = [BENIGN, RISKY] + [BENIGN] * (window - 1)  # exactly `window` messages ago
    result = assess(texts, lexicon, window=window)
    assert result.fired
    assert result.categories == frozenset({SELF_HARM})
    # The newest message is harmless: support resources are not offered again on this turn.
    assert result.current_message is False


def test_window_risky_newest_message_is_current(shipped: tuple[Lexicon, int]) -> None:
    lexicon, window = shipped
    result = assess([BENIGN] * 20 + [RISKY], lexicon, window=window)
    assert result.fired
    assert result.current_message is True


def test_window_categories_are_united_over_the_window(lexicon: Lexicon) -> None:
    texts = ["I'm going to kill him", BENIGN, "I feel hopeless"]
    result = assess(texts, lexicon, window=10)
    assert result.categories == frozenset({OTHERS, CRISIS})
    assert result.current_message is True


def test_window_current_message_means_the_last_one_matched_not_any(lexicon: Lexicon) -> None:
    result = assess([RISKY, RISKY, BENIGN], lexicon, window=10)
    assert result.fired
    assert result.current_message is False


@pytest.mark.parametrize(
    ("window", "fired"),
    [
        pytest.param(1, False, id="window1-sees-only-newest"),
        pytest.param(2, False, id="window2-too-short"),
        pytest.param(3, True, id="window3-reaches-risky"),
        pytest.param(50, True, id="window-longer-than-history"),
    ],
)
def test_window_size_is_respected(lexicon: Lexicon, window: int, fired: bool) -> None:
    result = assess([RISKY, BENIGN, BENIGN], lexicon, window=window)
    assert result.fired is fired


def test_window_no_messages_is_no_risk(lexicon: Lexicon) -> None:
    result = assess([], lexicon, window=10)
    assert not result.fired
    assert result.current_message is False


def test_window_only_benign_messages_is_no_risk(lexicon: Lexicon) -> None:
    result = assess([BENIGN] * 15, lexicon, window=10)
    assert not result.fired


# --------------------------------------------------------------------------------------------------------------
# compile_lexicon with an operator's own phrases
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phrases", "text", "fires"),
    [
        pytest.param(["red flag phrase"], "this is a RED  FLAG phrase!", True, id="custom-case-and-spaces"),
        pytest.param(["red flag phrase"], "red flagged phrase", False, id="custom-whole-words"),
        pytest.param(["red flag phrase"], "red phrase", False, id="custom-all-words-needed"),
        pytest.param(["a.b"], "see a.b now", True, id="custom-dot-literal"),
        pytest.param(["a.b"], "see axb now", False, id="custom-dot-not-a-wildcard"),
        pytest.param(["c++ rage"], "pure c++ rage here", True, id="custom-plus-literal"),
        pytest.param(["(help)"], "please (help) me", True, id="custom-parentheses-literal"),
        pytest.param(["I\u2019M DONE"], "i'm done with everything", True, id="custom-phrase-normalised-too"),
        pytest.param(["  padded   phrase  "], "a padded phrase", True, id="custom-phrase-whitespace-collapsed"),
        pytest.param(["one", "two words"], "we have two   words", True, id="custom-second-phrase-of-category"),
    ],
)
def test_compile_lexicon_custom_phrases(phrases: list[str], text: str, fires: bool) -> None:
    lexicon = compile_lexicon({"custom": phrases})
    assert (categories_in(text, lexicon) == frozenset({"custom"})) is fires


def test_compile_lexicon_skips_empty_categories_and_keeps_names() -> None:
    lexicon = compile_lexicon({"empty": [], "violence": ["smash it"], "worry": ("cannot cope",)})
    assert [category for category, _ in lexicon.patterns] == ["violence", "worry"]
    assert categories_in("I cannot cope, I'll smash it", lexicon) == frozenset({"violence", "worry"})


def test_compile_lexicon_empty_mapping_never_fires() -> None:
    lexicon = compile_lexicon({})
    assert assess([RISKY], lexicon, window=10) == assess([], lexicon, window=10)
    assert not assess([RISKY], lexicon, window=10).fired
