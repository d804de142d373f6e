"""The margin listing's core against counting by hand."""

import numpy as np

from miners.margins import Candidates, margin_table, naive_top_k


def test_naive_top_k_takes_each_querys_first_ranks_whatever_the_row_order():
    query = np.array([1, 0, 1, 0, 1, 0, 1])
    rank = np.array([9, 4, 2, 0, 5, 7, 3])
    top = naive_top_k(query, rank, 2)
    assert sorted(zip(query[top].tolist(), rank[top].tolist())) == [(0, 0), (0, 4), (1, 2), (1, 3)]


def test_each_margin_counts_what_its_threshold_rejects_and_samples_what_it_decides():
    # Two queries, positive scores 0.8 and 0.5; perc_pos thresholds m * s.
    cands = Candidates(query=np.array([0, 0, 0, 1, 1]), score=np.array([0.79, 0.75, 0.5, 0.49, 0.3]),
                       positive_score=np.array([0.8, 0.8, 0.8, 0.5, 0.5]),
                       label=["q0 -> a", "q0 -> b", "q0 -> c", "q1 -> d", "q1 -> e"])
    cuts = margin_table(cands, [1.0, 0.9, 0.95], samples=1)
    assert [c.margin for c in cuts] == [1.0, 0.9, 0.95]  # in the order asked
    by = {c.margin: c for c in cuts}
    # 0.9: thresholds 0.72 and 0.45 -> a, b (0.79, 0.75 > 0.72) and d (0.49 > 0.45)
    assert (by[0.9].rejected, by[0.9].queries_touched) == (3, 2)
    # 0.95: 0.76 and 0.475 -> a and d; 1.0: 0.8 and 0.5 -> none
    assert (by[0.95].rejected, by[1.0].rejected) == (2, 0)
    # 0.9 decides b (rejected at 0.9, kept at 0.95): its sample, with b's score over the positive's
    assert by[0.9].samples == [(0.75 / 0.8, "q0 -> b")]
    # 0.95 decides a and d (both kept at 1.0); the closest call first: a at 0.9875, then d at 0.98
    assert by[0.95].samples == [(0.79 / 0.8, "q0 -> a")]
    assert by[1.0].samples == []


def test_a_negative_positive_score_keeps_the_threshold_below_the_positive():
    # perc_pos as selection computes it: s - |s| (1 - m) = -0.22, below the positive's -0.2
    cands = Candidates(query=np.array([0, 0]), score=np.array([-0.21, -0.23]), positive_score=np.array([-0.2, -0.2]),
                       label=["x", "y"])
    (cut,) = margin_table(cands, [0.9])
    assert cut.rejected == 1 and cut.samples[0][1] == "x"
