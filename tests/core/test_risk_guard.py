"""The risk guard with the shipped phrases (config/risk_phrases.yaml): which texts fire, which do not, the window.

Only what the shipped lexicon really implies is asserted: the guard is a transparent phrase matcher, so a
phrase inside an innocent sentence still fires (the safe side) and anything not listed does not.
"""

from __future__ import annotations

import pytest

from core.risk_guard import Lexicon, PhraseError, assess, categories_in, compile_lexicon, normalize
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


# --------------------------------------------------------------------------------------------------------------
# Issue 9: leetspeak, algospeak, indirect phrasing, acts in progress, any object, every language claimed
# --------------------------------------------------------------------------------------------------------------

# Each text fires (at least) its category; ids are language-category-number (s self_harm, o harm_to_others,
# c crisis).
TRIPWIRE_FIRES = [
    pytest.param("I want to k1ll myself", SELF_HARM, id="en-s1"),
    pytest.param("thinking about $uicide", SELF_HARM, id="en-s2"),
    pytest.param("5uicide is on my mind", SELF_HARM, id="en-s3"),
    pytest.param("su*cide", SELF_HARM, id="en-s4"),
    pytest.param("honestly kms", SELF_HARM, id="en-s5"),
    pytest.param("im unaliving myself tonight", SELF_HARM, id="en-s6"),
    pytest.param("sewerslide seems like the only option", SELF_HARM, id="en-s7"),
    pytest.param("I want to self-delete", SELF_HARM, id="en-s8"),
    pytest.param("I'm going to end it all tonight", SELF_HARM, id="en-s9"),
    pytest.param("nobody would miss me", SELF_HARM, id="en-s10"),
    pytest.param("No one would care if I was gone", SELF_HARM, id="en-s11"),
    pytest.param("I've been giving my stuff away", SELF_HARM, id="en-s12"),
    pytest.param("I took all my pills twenty minutes ago", SELF_HARM, id="en-s13"),
    pytest.param("the car is running in the closed garage", SELF_HARM, id="en-s14"),
    pytest.param("I wrote my note", SELF_HARM, id="en-s15"),
    pytest.param("I'm such a burden to everyone", SELF_HARM, id="en-s16"),
    pytest.param("I don't want to be alive", SELF_HARM, id="en-s17"),
    pytest.param("I want to hang myself", SELF_HARM, id="en-s18"),
    pytest.param("I'm planning to take my life this weekend", SELF_HARM, id="en-s19"),
    pytest.param("i swallowed a bottle of sleeping pills", SELF_HARM, id="en-s20"),
    pytest.param("I'm going to kill my neighbour", OTHERS, id="en-o1"),
    pytest.param("I'll stab him if he comes near me", OTHERS, id="en-o2"),
    pytest.param("shoot him", OTHERS, id="en-o3"),
    pytest.param("stab her", OTHERS, id="en-o4"),
    pytest.param("i'm going to hurt them", OTHERS, id="en-o5"),
    pytest.param("beat him to death", OTHERS, id="en-o6"),
    pytest.param("gonna murder my stepdad", OTHERS, id="en-o7"),
    pytest.param("kys", OTHERS, id="en-o8"),
    pytest.param("I'm bringing a knife to class", OTHERS, id="en-o9"),
    pytest.param("I'm having a panic attack", CRISIS, id="en-c1"),
    pytest.param("my boyfriend hits me", CRISIS, id="en-c2"),
    pytest.param("quiero morirme", SELF_HARM, id="es-s1"),
    pytest.param("me voy a matar", SELF_HARM, id="es-s2"),
    pytest.param("estarían mejor sin mí", SELF_HARM, id="es-s3"),
    pytest.param("me tomé todas las pastillas", SELF_HARM, id="es-s4"),
    pytest.param("lo voy a matar", OTHERS, id="es-o1"),
    pytest.param("voy a matar a mi jefe", OTHERS, id="es-o2"),
    pytest.param("te mato", OTHERS, id="es-o3"),
    pytest.param("je vais me tuer", SELF_HARM, id="fr-s1"),
    pytest.param("j'ai envie d'en finir, je veux en finir", SELF_HARM, id="fr-s2"),
    pytest.param("personne ne me regretterait", SELF_HARM, id="fr-s3"),
    pytest.param("je vais le tuer", OTHERS, id="fr-o1"),
    pytest.param("je vais te buter", OTHERS, id="fr-o2"),
    pytest.param("ich will mich umbringen", SELF_HARM, id="de-s1"),
    pytest.param("niemand würde mich vermissen", SELF_HARM, id="de-s2"),
    pytest.param("ich habe alle Tabletten genommen", SELF_HARM, id="de-s3"),
    pytest.param("ich bringe ihn um", OTHERS, id="de-o1"),
    pytest.param("ich werde meinen Nachbarn umbringen", OTHERS, id="de-o2"),
    pytest.param("voglio morire", SELF_HARM, id="it-s1"),
    pytest.param("mi ammazzo", SELF_HARM, id="it-s2"),
    pytest.param("voglio farla finita", SELF_HARM, id="it-s3"),
    pytest.param("lo ammazzo", OTHERS, id="it-o1"),
    pytest.param("ti uccido", OTHERS, id="it-o2"),
    pytest.param("vou me matar", SELF_HARM, id="pt-s1"),
    pytest.param("quero morrer", SELF_HARM, id="pt-s2"),
    pytest.param("ninguém sentiria minha falta", SELF_HARM, id="pt-s3"),
    pytest.param("vou te matar", OTHERS, id="pt-o1"),
    pytest.param("vou matá-lo", OTHERS, id="pt-o2"),
    pytest.param("ik wil dood", SELF_HARM, id="nl-s1"),
    pytest.param("ik wil mezelf van kant maken", SELF_HARM, id="nl-s2"),
    pytest.param("niemand zou me missen", SELF_HARM, id="nl-s3"),
    pytest.param("ik vermoord je", OTHERS, id="nl-o1"),
    pytest.param("ik ga mijn buurman vermoorden", OTHERS, id="nl-o2"),
    pytest.param("chcę się zabić", SELF_HARM, id="pl-s1"),
    pytest.param("nie chcę żyć", SELF_HARM, id="pl-s2"),
    pytest.param("wziąłem wszystkie tabletki", SELF_HARM, id="pl-s3"),
    pytest.param("zabiję go", OTHERS, id="pl-o1"),
    pytest.param("zastrzelę cię", OTHERS, id="pl-o2"),
    pytest.param("もう死にたい", SELF_HARM, id="ja-s1"),
    pytest.param("消えたいと毎日思う", SELF_HARM, id="ja-s2"),
    pytest.param("薬を全部飲んだ", SELF_HARM, id="ja-s3"),
    pytest.param("遺書を書いた", SELF_HARM, id="ja-s4"),
    pytest.param("あいつを殺してやる", OTHERS, id="ja-o1"),
    pytest.param("我想死", SELF_HARM, id="zh-s1"),
    pytest.param("我不想活了", SELF_HARM, id="zh-s2"),
    pytest.param("我吃了所有的药", SELF_HARM, id="zh-s3"),
    pytest.param("没有人会想我", SELF_HARM, id="zh-s4"),
    pytest.param("我要杀了他", OTHERS, id="zh-o1"),
    pytest.param("我要弄死你", OTHERS, id="zh-o2"),
    pytest.param("أريد أن أموت", SELF_HARM, id="ar-s1"),
    pytest.param("سأنتحر الليلة", SELF_HARM, id="ar-s2"),
    pytest.param("لن يفتقدني أحد", SELF_HARM, id="ar-s3"),
    pytest.param("بلعت كل الحبوب", SELF_HARM, id="ar-s4"),
    pytest.param("سأقتلك", OTHERS, id="ar-o1"),
    pytest.param("راح اقتله", OTHERS, id="ar-o2"),
]


TRIPWIRE_FIRES += [
    pytest.param("il me frappe quand il boit", CRISIS, id="fr-c1"),
    pytest.param("他昨天又打我了", CRISIS, id="zh-c1"),
    pytest.param("زوجي يضربني كل يوم", CRISIS, id="ar-c1"),
    pytest.param("je suis un fardeau pour eux", SELF_HARM, id="fr-s-burden"),
    pytest.param("sono solo un peso per tutti voi", SELF_HARM, id="it-s-burden"),
]


@pytest.mark.parametrize(("text", "category"), TRIPWIRE_FIRES)
def test_tripwire_fires_in_every_language(lexicon: Lexicon, text: str, category: str) -> None:
    assert category in categories_in(text, lexicon)


# Heated but harmless, idioms, insults at the bot, gaming, units: none of these is risk.
TRIPWIRE_SILENT = [
    pytest.param("this bug is killing me", id="en-n1"),
    pytest.param("kill the process", id="en-n2"),
    pytest.param("I could kill for a coffee", id="en-n3"),
    pytest.param("shoot me an email", id="en-n4"),
    pytest.param("I'll shoot you an email tomorrow", id="en-n5"),
    pytest.param("you're a useless bot", id="en-n6"),
    pytest.param("killer feature", id="en-n7"),
    pytest.param("I'm dead tired", id="en-n8"),
    pytest.param("that joke killed", id="en-n9"),
    pytest.param("I killed the boss on the first try", id="en-n10"),
    pytest.param("my feet are killing me", id="en-n11"),
    pytest.param("it won't kill you to write tests", id="en-n12"),
    pytest.param("we shoot the family portraits on Sunday", id="en-n13"),
    pytest.param("it is 5 kms from here", id="en-n14"),
    pytest.param("I would rather die than write PHP", id="en-n15"),
    pytest.param("the new skills module", id="en-n16"),
    pytest.param("make them pay for shipping", id="en-n17"),
    pytest.param("I'm going to die of boredom in this meeting", id="en-n18"),
    pytest.param("you are the worst assistant ever, shut up", id="en-n19"),
    pytest.param("este bug me está matando", id="es-n1"),
    pytest.param("me muero de risa", id="es-n2"),
    pytest.param("eres un bot inútil", id="es-n3"),
    pytest.param("ce bug me tue", id="fr-n1"),
    pytest.param("on va tuer le temps", id="fr-n2"),
    pytest.param("t'es un bot nul", id="fr-n3"),
    pytest.param("dieser Bug bringt mich um den Verstand", id="de-n1"),
    pytest.param("ich lache mich tot", id="de-n2"),
    pytest.param("ich kann nicht mehr warten", id="de-n3"),
    pytest.param("mi ammazzo dalle risate", id="it-n1"),
    pytest.param("questo bug mi uccide", id="it-n2"),
    pytest.param("esse bug vai me matar", id="pt-n1"),
    pytest.param("morri de rir", id="pt-n2"),
    pytest.param("deze bug maakt me gek", id="nl-n1"),
    pytest.param("ik kan niet meer inloggen", id="nl-n2"),
    pytest.param("ten bug mnie zabija", id="pl-n1"),
    pytest.param("umieram ze śmiechu", id="pl-n2"),
    pytest.param("恥ずかしくて死にたい", id="ja-n1"),
    pytest.param("お腹すいて死にそう", id="ja-n2"),
    pytest.param("死ぬほど疲れた", id="ja-n3"),
    pytest.param("このバグに殺される", id="ja-n4"),
    pytest.param("我想死你了", id="zh-n1"),
    pytest.param("笑死我了", id="zh-n2"),
    pytest.param("累死了", id="zh-n3"),
    pytest.param("杀毒软件", id="zh-n4"),
    pytest.param("هذا الخطأ يقتلني", id="ar-n1"),
    pytest.param("انت بوت غبي", id="ar-n2"),
    pytest.param("ماتت من الضحك", id="ar-n3"),
]


# Innocent words and idioms next to algospeak and self-harm phrases.
TRIPWIRE_SILENT += [
    pytest.param("where did I leave my keys", id="en-keys-not-kys"),
    pytest.param("we ran 10kms this morning", id="en-kms-distance-glued"),
    pytest.param("only 2.5 kms left", id="en-kms-distance"),
    pytest.param("CTB is the cost centre code", id="en-ctb-alone"),
    pytest.param("I shot myself in the foot with that refactor", id="en-shot-myself-in-the-foot"),
    pytest.param("you'll shoot yourself in the foot", id="en-shoot-yourself-in-the-foot"),
    pytest.param("cut yourself some slack, and I'll cut myself some slack too", id="en-cut-some-slack"),
    pytest.param("I'm going to burn myself out at this rate", id="en-burn-out"),
    pytest.param("don't kill yourself over this ticket", id="en-dont-kill-yourself-over"),
    pytest.param("the suicide rates in the report look off", id="en-statistics"),
    pytest.param("ce qui me frappe, c'est la vitesse du build", id="fr-ce-qui-me-frappe"),
]


@pytest.mark.parametrize("text", TRIPWIRE_SILENT)
def test_tripwire_stays_silent_on_heated_but_harmless_text(lexicon: Lexicon, text: str) -> None:
    assert categories_in(text, lexicon) == frozenset()


def test_a_self_harm_phrase_is_not_also_harm_to_others(lexicon: Lexicon) -> None:
    # "me voy a matar" contains "voy a matar", "ich will mich umbringen" matches "ich will _ umbringen":
    # exceptions keep them in one category.
    for text in ("me voy a matar", "voy a matarme", "Ich will mich umbringen", "سأقتل نفسي", "Je vais me tuer"):
        assert categories_in(text, lexicon) == {SELF_HARM}, text


# --------------------------------------------------------------------------------------------------------------
# The phrase syntax (documented at the top of config/risk_phrases.yaml)
# --------------------------------------------------------------------------------------------------------------

SYNTAX = [
    pytest.param(["kill*"], "she kills", True, id="star-any-ending"),
    pytest.param(["kill*"], "skill", False, id="star-still-whole-word-start"),
    pytest.param(["stab/shoot him"], "I'll shoot him", True, id="slash-one-of"),
    pytest.param(["stab/shoot him"], "I'll punch him", False, id="slash-only-those"),
    pytest.param(["i really? want out"], "i want out", True, id="optional-word-missing"),
    pytest.param(["i really? want out"], "i really want out", True, id="optional-word-present"),
    pytest.param(["i really? want out"], "i truly want out", False, id="optional-word-is-that-word"),
    pytest.param(["hurt _ cat"], "hurt the cat", True, id="underscore-one-word"),
    pytest.param(["hurt _ cat"], "hurt cat", False, id="underscore-needs-a-word"),
    pytest.param(["hurt _? cat"], "hurt cat", True, id="underscore-optional"),
    pytest.param(["can't cope"], "i cant cope", True, id="apostrophe-optional"),
    pytest.param(["self-harm"], "selfharm", True, id="hyphen-nothing"),
    pytest.param(["self-harm"], "self harm", True, id="hyphen-space"),
    pytest.param(["self-harm"], "self\u2014harm", True, id="hyphen-em-dash"),
    pytest.param(["kill myself"], "k1ll mys3lf", True, id="leet-digits"),
    pytest.param(["kill myself"], "k!ll my$elf", True, id="leet-symbols"),
    pytest.param(["suicide"], "su*cide", True, id="self-censoring-star"),
    pytest.param(["hacerme daño"], "hacerme dano", True, id="accent-typed-without"),
    pytest.param(["zabić się"], "zabic sie", True, id="polish-without-diacritics"),
    pytest.param(["zabic sie"], "chcę się zabić", False, id="polish-word-order-matters"),
    pytest.param(["أريد أن أموت"], "اريد ان اموت", True, id="arabic-hamza-folded"),
    pytest.param(["مُوت"], "موت", True, id="arabic-vowel-marks-folded"),
    pytest.param(["死にたい"], "もう死にたいよ", True, id="japanese-inside-a-sentence"),
    pytest.param(["想死"], "我真的想死", True, id="chinese-inside-a-sentence"),
    pytest.param(["杀了 他/她"], "我要杀了她", True, id="chinese-two-words-without-space"),
    pytest.param(["*انتحار*"], "بالانتحار", True, id="star-any-beginning"),
    pytest.param(["kms", "except <number> kms"], "5 kms", False, id="number-slot-exception"),
    pytest.param(["kms", "except <number> kms"], "honestly kms", True, id="number-slot-exception-only-there"),
    pytest.param(["shoot him", "except shoot him an email"], "shoot him an email", False, id="exception-same-start"),
    pytest.param(
        ["want to die", "except die on this hill"], "I want to die on this hill", False, id="exception-overlap"
    ),
    pytest.param(
        ["shoot him", "except shoot him an email"], "shoot him an email, then shoot him", True, id="exception-once"
    ),
]


@pytest.mark.parametrize(("phrases", "text", "fires"), SYNTAX)
def test_phrase_syntax(phrases: list[str], text: str, fires: bool) -> None:
    lexicon = compile_lexicon({"custom": phrases})
    assert (categories_in(text, lexicon) == frozenset({"custom"})) is fires


def test_slots_stand_for_their_phrases_and_are_not_categories() -> None:
    lexicon = compile_lexicon(
        {"<pet>": ["cat", "gold fish", "<small> dog"], "<small>": ["tiny/little"], "cruelty": ["kick the <pet>"]}
    )
    assert [category for category, _ in lexicon.patterns] == ["cruelty"]
    assert categories_in("I will kick the gold fish", lexicon) == {"cruelty"}
    assert categories_in("kick the tiny dog", lexicon) == {"cruelty"}
    assert categories_in("kick the dog", lexicon) == frozenset()


@pytest.mark.parametrize(
    ("lexicon", "reason"),
    [
        pytest.param({"x": ["kill <ghost>"]}, "unknown slot <ghost>", id="unknown-slot"),
        pytest.param({"x": ["a <loop>"], "<loop>": ["b <loop>"]}, "refers to itself", id="recursive-slot"),
        pytest.param({"x": ["a <hollow>"], "<hollow>": []}, "no phrases", id="empty-slot"),
        pytest.param({"x": ["maybe?"]}, "only optional", id="only-optional"),
        pytest.param({"x": ["kill /him"]}, "empty alternative", id="empty-alternative"),
    ],
)
def test_a_phrase_the_syntax_cannot_read_is_refused(lexicon: dict[str, list[str]], reason: str) -> None:
    with pytest.raises(PhraseError, match=reason):
        compile_lexicon(lexicon)


def test_a_category_of_only_exceptions_never_fires() -> None:
    lexicon = compile_lexicon({"x": ["except kill time"], "y": ["kill time"]})
    assert [category for category, _ in lexicon.patterns] == ["y"]
