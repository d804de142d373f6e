import numpy as np
import pytest

from miners.select import (ABOVE_THRESHOLD, DUPLICATE_OF_POSITIVE, IS_POSITIVE, OTHER_QUERY_POSITIVE, SAME_CLASS,
                           SHIFTED, QueryFacts, SelectionConfig, normalized_query_key, select_for_query)
from storage import ConfigError

# A pool of 10 candidates; candidate i has hash "h{i}". Teacher order below: 0 (the positive), then 1..9.
HASHES = [f"h{i}" for i in range(10)]
POSITIONS = np.arange(10)
SCORES = np.array([0.90, 0.88, 0.86, 0.80, 0.70, 0.60, 0.50, 0.40, 0.30, 0.20], dtype=np.float32)


def _facts(**kw):
    base = dict(example_id="q1", positive_positions=[0], positive_scores=[0.90])
    base.update(kw)
    return QueryFacts(**base)


def _chosen(sel):
    return [p for p, _, _ in sel.chosen]


def _run(cfg, facts=None, labels=None, hashes=HASHES):
    return select_for_query(POSITIONS, SCORES, facts or _facts(), hashes, labels, cfg)


def test_topk_takes_the_best_non_positives():
    sel = _run(SelectionConfig(strategy="topk", num_negatives=3))
    assert _chosen(sel) == [1, 2, 3]
    assert sel.rejected == [(0, pytest.approx(0.9), 0, IS_POSITIVE)]
    assert [r for _, _, r in sel.chosen] == [1, 2, 3]  # teacher ranks before filtering


def test_topk_shift_skips_the_first_eligible_ranks():
    sel = _run(SelectionConfig(strategy="topk_shift", shift=2, num_negatives=3))
    assert _chosen(sel) == [3, 4, 5]
    assert [(p, why) for p, _, _, why in sel.rejected] == [(0, IS_POSITIVE), (1, SHIFTED), (2, SHIFTED)]


def test_topk_abs_drops_above_an_absolute_score():
    sel = _run(SelectionConfig(strategy="topk_abs", margin=0.7, num_negatives=3))
    assert _chosen(sel) == [4, 5, 6]  # 0.70 is not above 0.70
    assert {p for p, _, _, why in sel.rejected if why == ABOVE_THRESHOLD} == {1, 2, 3}


def test_topk_margin_pos_drops_above_positive_minus_margin():
    sel = _run(SelectionConfig(strategy="topk_margin_pos", margin=0.05, num_negatives=3))
    assert sel.threshold == pytest.approx(0.85)
    assert _chosen(sel) == [3, 4, 5]


def test_topk_perc_pos_drops_above_a_fraction_of_the_positive_score():
    sel = _run(SelectionConfig(strategy="topk_perc_pos", num_negatives=3))  # default margin 0.95
    assert sel.threshold == pytest.approx(0.855)
    assert _chosen(sel) == [3, 4, 5]


def test_several_positives_threshold_against_the_lowest():
    facts = _facts(positive_positions=[0, 4], positive_scores=[0.90, 0.70])
    sel = _run(SelectionConfig(strategy="topk_perc_pos", num_negatives=2), facts)
    assert sel.threshold == pytest.approx(0.665)
    assert _chosen(sel) == [5, 6]
    assert {p for p, _, _, why in sel.rejected if why == IS_POSITIVE} == {0, 4}


def test_same_class_filter_never_returns_the_query_label():
    labels = ["a", "a", "b", "a", "c", "b", "a", "c", "a", "b"]
    facts = _facts(label="a", self_position=8, positive_positions=[3], positive_scores=[0.8])
    sel = _run(SelectionConfig(strategy="topk", num_negatives=4), facts, labels)
    assert _chosen(sel) == [2, 4, 5, 7]
    assert all(labels[p] != "a" for p in _chosen(sel))
    reasons = {p: why for p, _, _, why in sel.rejected}
    assert reasons[3] == IS_POSITIVE and reasons[8] == IS_POSITIVE  # its positive, and itself
    assert reasons[0] == SAME_CLASS and reasons[1] == SAME_CLASS


def test_cross_query_positives_and_duplicate_texts_are_false_negatives():
    hashes = list(HASHES)
    hashes[2] = "h0"  # candidate 2 has the positive's exact text
    facts = _facts(cross_positive_positions=frozenset({1}))
    sel = _run(SelectionConfig(strategy="topk", num_negatives=2), facts, hashes=hashes)
    assert _chosen(sel) == [3, 4]
    reasons = {p: why for p, _, _, why in sel.rejected}
    assert reasons == {0: IS_POSITIVE, 1: OTHER_QUERY_POSITIVE, 2: DUPLICATE_OF_POSITIVE}
    kept = _run(SelectionConfig(strategy="topk", num_negatives=2, drop_cross_positives=False), facts, hashes=hashes)
    assert _chosen(kept) == [1, 3]


def test_random_sampling_is_deterministic_per_example_and_stays_in_the_window():
    cfg = SelectionConfig(strategy="topk", num_negatives=3, sampling="random", sample_window=5, seed=7)
    first = _chosen(_run(cfg))
    assert first == _chosen(_run(cfg))
    assert set(first) <= {1, 2, 3, 4, 5} and len(first) == 3 and first == sorted(first)
    others = {tuple(_chosen(_run(cfg, _facts(example_id=f"q{i}")))) for i in range(20)}
    assert len(others) > 1  # the draw depends on the example id


def test_short_queries_are_reported_not_padded():
    sel = _run(SelectionConfig(strategy="topk_abs", margin=0.35, num_negatives=5))
    assert _chosen(sel) == [8, 9] and sel.short


def test_a_negative_is_never_a_positive():
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = 30
        positives = list(rng.choice(n, size=rng.integers(1, 4), replace=False))
        order = rng.permutation(n)
        scores = np.sort(rng.random(n).astype(np.float32))[::-1]
        facts = QueryFacts(example_id=f"e{trial}", positive_positions=positives,
                           positive_scores=[float(rng.random()) for _ in positives])
        for strategy in ("topk", "topk_shift", "topk_abs", "topk_margin_pos", "topk_perc_pos"):
            sel = select_for_query(order, scores, facts, [f"h{i}" for i in range(n)], None,
                                   SelectionConfig(strategy=strategy, num_negatives=5))
            assert not set(_chosen(sel)) & set(positives)


def test_bad_selection_options_are_refused():
    for kwargs, field, message in [({"strategy": "best"}, "strategy", "must be one of topk,"),
                                   ({"sampling": "all"}, "sampling", "must be top or random"),
                                   ({"num_negatives": 0}, "num_negatives", "must be at least 1"),
                                   ({"strategy": "topk_perc_pos", "margin": 1.5}, "margin", "fraction"),
                                   ({"strategy": "topk", "margin": 0.5}, "margin", "not taken by strategy topk")]:
        with pytest.raises(ConfigError, match=message) as caught:
            SelectionConfig(**kwargs)
        assert caught.value.field == field  # the CLI says it by the flag that set this field


def test_near_duplicate_query_key_ignores_case_and_punctuation():
    assert normalized_query_key("Family of birds") == normalized_query_key("family of  birds.")
    assert normalized_query_key("Family of birds") != normalized_query_key("Family of fish")


def test_perc_pos_threshold_stays_below_a_negative_positive_score():
    cfg = SelectionConfig(strategy="topk_perc_pos", margin=0.95)
    assert cfg.threshold(0.8) == pytest.approx(0.76)
    assert cfg.threshold(-0.2) == pytest.approx(-0.21)  # not 0.95 * -0.2 = -0.19, which is above the positive
