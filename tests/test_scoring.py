import pytest

from ipcond import toyworld as tw
from ipcond.scoring import RuleScorer, capitals_ratio, make_scorer

PLAIN = "the cat is old . many people love the cat ."


@pytest.mark.parametrize("trait", tw.STYLE_TRAITS)
def test_rule_scorer_detects_its_trait_and_only_it(trait):
    positive = tw.apply_traits(PLAIN, [trait])
    s = RuleScorer(trait)
    assert s.score(["q"], [positive]) == [1.0]
    assert s.score(["q"], [PLAIN]) == [0.0]
    for other in tw.STYLE_TRAITS:
        if other != trait:
            assert RuleScorer(other).score(["q"], [positive]) == [0.0], (trait, other)


def test_traits_compose_and_are_scored_independently():
    both = tw.apply_traits(PLAIN, ["spanish", "capitals"])
    assert both.startswith("EL GATO ES VIEJO")
    assert make_scorer("spanish").score([""], [both]) == [1.0]
    assert make_scorer("capitals").score([""], [both]) == [1.0]
    assert make_scorer("french").score([""], [both]) == [0.0]


def test_hand_written_examples():
    assert make_scorer("french").score([""], ["le chat est vieux ."]) == [1.0]
    assert make_scorer("french").score([""], ["le cat is old ."]) == [0.0]  # 1 of 4 words
    assert make_scorer("playful").score([""], ["hehe ! the cat is old ."]) == [1.0]
    assert make_scorer("capitals").score([""], ["THE cat is OLD ."]) == [0.0]  # 6 of 11 letters
    assert make_scorer("capitals").score([""], ["THE BIG CAT IS VERY old ."]) == [1.0]  # 15 of 18: one stray word
    assert capitals_ratio("AB c") == pytest.approx(2 / 3)
    assert make_scorer("capitals").score([""], [""]) == [0.0]


def test_unknown_trait_is_a_clear_error():
    with pytest.raises(ValueError, match="no toy scorer"):
        make_scorer("sarcastic")
