"""``select_batch`` against its plain reference, ``select_for_query``, query by query."""

import itertools
import zlib

import numpy as np
import pytest

from miners.select import REASONS, QueryFacts, SelectionConfig, select_for_query
from miners.select_batch import KEPT, PADDING, CandidateBatch, PoolCodes, Ragged, select_batch

POOL_SIZE, QUERIES, DEPTH = 60, 80, 14
LABELS = ["a", "b", "c"]


def _random_task(seed: int, class_task: bool):
    """A pool whose texts repeat (duplicates of positives), labels with gaps, and queries with
    1-3 positives (some among their candidates), cross positives, padded candidate lists and
    scores rounded so that ties, and scores equal to a threshold, occur."""
    rng = np.random.default_rng(seed)
    hashes = [f"h{rng.integers(0, POOL_SIZE // 2)}" for _ in range(POOL_SIZE)]
    labels = [None if rng.random() < 0.1 else LABELS[rng.integers(0, 3)] for _ in range(POOL_SIZE)]
    queries = []
    for q in range(QUERIES):
        cands = rng.permutation(POOL_SIZE)[:DEPTH].astype(np.int64)
        positives = [int(x) for x in rng.choice(POOL_SIZE, size=rng.integers(1, 4), replace=False)]
        if rng.random() < 0.6:  # the positive is among the candidates, as it usually is
            cands[rng.integers(0, 3)] = positives[0]
            cands = np.array(list(dict.fromkeys(cands.tolist())), dtype=np.int64)  # once each
        scores = np.sort(np.round(rng.uniform(-0.3, 1.0, len(cands)), 2))[::-1].astype(np.float32)
        pad = rng.integers(0, 4) if rng.random() < 0.2 else 0
        cands = np.concatenate([cands[:len(cands) - pad], np.full(pad, -1)]).astype(np.int64)
        scores = np.concatenate([scores[:len(scores) - pad], np.full(pad, -np.inf, np.float32)]).astype(np.float32)
        pos_scores = np.round(rng.uniform(-0.2, 1.0, len(positives)), 2).astype(np.float32)
        if rng.random() < 0.2 and len(positives) > 1:
            pos_scores[-1] = pos_scores[0]  # two positives tie for the lowest score
        cross = sorted({int(x) for x in rng.choice(POOL_SIZE, size=rng.integers(0, 3), replace=False)} - set(positives))
        queries.append(QueryFacts(example_id=f"t:q{q}", positive_positions=positives,
                                  positive_scores=pos_scores.tolist(),
                                  self_position=int(rng.integers(0, POOL_SIZE)) if class_task else None,
                                  label=(labels[rng.integers(0, POOL_SIZE)] or "a") if class_task else None,
                                  cross_positive_positions=frozenset(cross)))
        # carried beside the facts, for the reference; similarities rounded so ties with the cut occur
        queries[-1].cands, queries[-1].scores = cands, scores
        queries[-1].sims = np.round(rng.uniform(0.0, 1.0, len(cands)), 1).astype(np.float32)
    return hashes, labels if class_task else None, queries


def _batch(hashes, labels, queries):
    hash_code = {h: i for i, h in enumerate(dict.fromkeys(hashes))}
    label_code = {lab: i for i, lab in enumerate(LABELS)}
    codes = PoolCodes(hashes=np.array([hash_code[h] for h in hashes], np.int64),
                      labels=None if labels is None else np.array([label_code.get(x, -1) for x in labels], np.int64))
    width = max(len(q.cands) for q in queries)
    batch = CandidateBatch(
        positions=np.array([np.pad(q.cands, (0, width - len(q.cands)), constant_values=-1) for q in queries]),
        scores=np.array([np.pad(q.scores, (0, width - len(q.scores))) for q in queries], np.float32),
        positives=Ragged.from_lists([q.positive_positions for q in queries], np.int64),
        positive_scores=Ragged.from_lists([q.positive_scores for q in queries], np.float32),
        self_positions=np.array([-1 if q.self_position is None else q.self_position for q in queries], np.int64),
        labels=np.array([label_code.get(q.label, -1) for q in queries], np.int64),
        cross_positives=Ragged.from_lists([sorted(q.cross_positive_positions) for q in queries], np.int64),
        example_ids=[q.example_id for q in queries],
        positive_sims=np.array([np.pad(q.sims, (0, width - len(q.sims))) for q in queries], np.float32))
    return codes, batch


CONFIGS = [SelectionConfig(strategy=s, num_negatives=n, sampling=sampling, sample_window=window,
                           drop_cross_positives=cross)
           for s, (n, sampling, window), cross in itertools.product(
               ("topk", "topk_shift", "topk_abs", "topk_margin_pos", "topk_perc_pos"),
               ((3, "top", None), (7, "top", None), (3, "random", None), (2, "random", 5)), (True, False))]
CONFIGS += [SelectionConfig(strategy="topk_abs", margin=0.35), SelectionConfig(strategy="topk_shift", shift=0),
            SelectionConfig(strategy="topk_margin_pos", margin=0.0), SelectionConfig(strategy="topk_perc_pos", margin=1)]
# The rules that decide by what the candidate is: alone, together, and with sampling.
CONFIGS += [SelectionConfig(strategy=s, max_positive_similarity=sim, confident_within=within, sampling=sampling)
            for s, sim, within, sampling in (("topk", 0.6, None, "top"), ("topk_perc_pos", 0.5, None, "random"),
                                             ("topk_perc_pos", None, 1, "top"), ("topk_perc_pos", None, 2, "top"),
                                             ("topk_perc_pos", None, None, "top"),
                                             ("topk_margin_pos", 0.8, 3, "top"), ("topk_abs", 0.3, 2, "random"))]


@pytest.mark.parametrize("class_task", [False, True], ids=["retrieval", "class"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.strategy}-{c.sampling}{c.num_negatives}-{c.sample_window}"
                                                       f"-{c.margin}-{int(c.drop_cross_positives)}"
                                                       f"-{c.max_positive_similarity}-{c.confident_within}")
def test_batch_selection_equals_the_reference_query_by_query(cfg, class_task):
    hashes, labels, queries = _random_task(seed=zlib.crc32(f"{cfg}{class_task}".encode()),
                                           class_task=class_task)
    codes, batch = _batch(hashes, labels, queries)
    got = select_batch(batch, codes, cfg)
    for q, facts in enumerate(queries):
        ref = select_for_query(facts.cands, facts.scores, facts, hashes, labels, cfg, facts.sims)
        chosen = [(int(batch.positions[q, k]), float(batch.scores[q, k]), int(k)) for k in np.flatnonzero(got.chosen[q])]
        rejected = [(int(batch.positions[q, k]), float(batch.scores[q, k]), int(k), REASONS[got.reasons[q, k] - 1])
                    for k in np.flatnonzero(got.rejected()[q])]
        assert chosen == ref.chosen, facts.example_id
        assert rejected == ref.rejected, facts.example_id
        assert got.thresholds[q] == ref.threshold
        assert bool(got.short[q]) == ref.short
        anchor = int(np.argmin(facts.positive_scores))  # what the stage reports: the first lowest positive
        assert got.anchors[q] == batch.positives.offsets[q] + anchor
    # Every kind of outcome occurred, so the comparison covered them.
    assert (got.reasons == PADDING).any() and (got.reasons == KEPT).any() and got.chosen.any()


def test_every_reason_occurs_in_the_random_batches():
    seen = set()
    for cfg, class_task in ((SelectionConfig(strategy="topk_shift", shift=2, max_positive_similarity=0.8), True),
                            (SelectionConfig(strategy="topk_perc_pos"), True)):
        hashes, labels, queries = _random_task(seed=3, class_task=class_task)
        codes, batch = _batch(hashes, labels, queries)
        got = select_batch(batch, codes, cfg)
        seen |= {REASONS[c - 1] for c in np.unique(got.reasons[got.rejected()])}
    assert seen == set(REASONS)


def test_a_query_without_positives_has_no_threshold_and_an_empty_batch_works():
    cfg = SelectionConfig(strategy="topk_abs")
    codes = PoolCodes(hashes=np.arange(4), labels=None)
    batch = CandidateBatch(positions=np.array([[0, 1, 2]]), scores=np.array([[0.9, 0.8, 0.1]], np.float32),
                           positives=Ragged.from_lists([[]], np.int64), positive_scores=Ragged.from_lists([[]], np.float32),
                           self_positions=np.array([-1]), labels=np.array([-1]),
                           cross_positives=Ragged.from_lists([[]], np.int64), example_ids=["q"])
    got = select_batch(batch, codes, cfg)
    assert got.thresholds.tolist() == [np.inf] and got.anchors.tolist() == [-1]
    assert got.chosen.tolist() == [[True, True, True]]  # no positive, no threshold: as select_for_query
    empty = CandidateBatch(positions=np.zeros((0, 3), np.int64), scores=np.zeros((0, 3), np.float32),
                           positives=Ragged.from_lists([], np.int64), positive_scores=Ragged.from_lists([], np.float32),
                           self_positions=np.zeros(0, np.int64), labels=np.zeros(0, np.int64),
                           cross_positives=Ragged.from_lists([], np.int64), example_ids=[])
    out = select_batch(empty, codes, cfg)
    assert out.chosen.shape == (0, 3) and out.short.shape == (0,)


def test_an_unsure_teacher_gets_no_threshold_and_a_near_copy_of_the_positive_is_dropped():
    """Hand-made: query 0's positive is the teacher's first candidate (sure), query 1's
    is ranked third (unsure), query 2's is not among the candidates at all."""
    cfg = SelectionConfig(strategy="topk_perc_pos", num_negatives=2, confident_within=2, max_positive_similarity=0.9)
    codes = PoolCodes(hashes=np.arange(8), labels=None)
    batch = CandidateBatch(
        positions=np.array([[0, 1, 2, 3], [4, 5, 0, 6], [1, 2, 3, 4]]),
        scores=np.array([[0.9, 0.89, 0.5, 0.4], [0.8, 0.75, 0.7, 0.6], [0.8, 0.7, 0.6, 0.5]], np.float32),
        positives=Ragged.from_lists([[0], [0], [7]], np.int64),
        positive_scores=Ragged.from_lists([[0.9], [0.7], [0.4]], np.float32),
        self_positions=np.array([-1, -1, -1]), labels=np.array([-1, -1, -1]),
        cross_positives=Ragged.from_lists([[], [], []], np.int64), example_ids=["q0", "q1", "q2"],
        positive_sims=np.array([[1.0, 0.2, 0.95, 0.1], [0.3, 0.3, 1.0, 0.3], [0.1, 0.1, 0.1, 0.1]], np.float32))
    got = select_batch(batch, codes, cfg)
    assert np.isfinite(got.thresholds[0]) and np.isinf(got.thresholds[1:]).all()
    assert [REASONS[c - 1] if c > 0 else c for c in got.reasons[0]] == [
        "is_positive", "above_threshold", "similar_to_positive", 0]  # 0.89 > 0.95 * 0.9; 0.95 > 0.9
    assert got.chosen[1].tolist() == [True, True, False, False]  # 0.8 and 0.75 kept above the positive's 0.7
    assert got.chosen[2].tolist() == [True, True, False, False]
    for q in range(3):
        facts = QueryFacts(example_id=f"q{q}", positive_positions=[[0], [0], [7]][q],
                           positive_scores=[[0.9], [0.7], [0.4]][q])
        ref = select_for_query(batch.positions[q], batch.scores[q], facts, list(range(8)), None, cfg,
                               batch.positive_sims[q])
        assert ref.threshold == pytest.approx(got.thresholds[q])


def test_the_new_rules_are_checked_where_the_config_is_built():
    from storage import ConfigError

    # the default conditions the threshold; a strategy without one has nothing to condition
    assert SelectionConfig().conditioned_on_confidence
    assert not SelectionConfig(strategy="topk", confident_within=3).conditioned_on_confidence
    assert not SelectionConfig(confident_within=None).conditioned_on_confidence
    with pytest.raises(ConfigError, match=r"max_positive_similarity must be a cosine in \(-1, 1\], got 1.5"):
        SelectionConfig(max_positive_similarity=1.5)
    with pytest.raises(ConfigError, match=r"confident_within must be at least 1 \(or none: every query\), got 0"):
        SelectionConfig(confident_within=0)
