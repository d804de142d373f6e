"""benchmarks/llm2vec_report.py: a claim is marked held only where the scores order as it says,
and a claim whose models are not all scored says so instead of a verdict."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.llm2vec_chain import MODELS, UNSUPERVISED  # noqa: E402
from benchmarks.llm2vec_report import claim_verdict, latest_scores, report  # noqa: E402


def _row(model, a, b, split="test"):
    return {"part": "score", "model": model, "split": split, "steps": {}, "scores": {"t1": a, "t2": b}}


def test_a_claim_is_held_only_when_every_pair_orders_so_on_the_mean():
    scored = latest_scores([_row("causal-mean", 0.5, 0.5), _row("bi", 0.3, 0.6), _row("mntp", 0.6, 0.2)], "test")
    held = claim_verdict(scored, [("causal-mean", "bi")])
    assert held.startswith("held: ") and "+0.0500" in held and "higher on 1 of 2 tasks" in held
    assert claim_verdict(scored, [("mntp", "bi")]).startswith("not held: ")  # 0.40 against 0.45
    assert claim_verdict(scored, [("causal-mean", "bi"), ("mntp", "bi")]).startswith("not held: ")


def test_an_unscored_model_is_named_not_judged():
    scored = latest_scores([_row("bi", 0.3, 0.6), _row("mntp", 0.9, 0.9, split="dev")], "test")
    assert claim_verdict(scored, [("mntp", "bi")]) == "not measured (mntp not scored)"


def test_the_report_uses_the_latest_score_of_the_split():
    rows = [_row("bi", 0.1, 0.1), _row("bi", 0.3, 0.5), _row("causal-mean", 0.2, 0.2)]
    text = report(rows, "test", MODELS, UNSUPERVISED)
    assert "| bidirectional (Bi), mean pooling | 0.3000 | 0.5000 | 0.4000 | untrained | - |" in text
    assert "best unsupervised: bidirectional (Bi), mean pooling (0.4000)" in text
    assert report(rows, "dev", MODELS, UNSUPERVISED) == "no scores on the dev split yet"
