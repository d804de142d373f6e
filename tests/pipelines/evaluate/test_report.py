"""The main job's verdict and report, from evaluation results built by hand."""

import json

from miners.cache import EmbedStats
from pipelines.evaluate.report import loss_curve_png, losses_by_task, moving_average, verdict, write_run_report
from pipelines.evaluate.results import EvalResult, ModelEval, Score


def _model(name, ndcg, acc):
    return ModelEval(name, "x", "fp", [Score("r", "retrieval", "ndcg_at_10", ndcg),
                                       Score("r", "retrieval", "recall_at_10", 0.5),
                                       Score("c", "classification", "accuracy", acc)], EmbedStats(1, 0, 1))


def test_verdict_says_plainly_who_won():
    result = EvalResult("vital", "v0001", "test", [_model("teacher", 0.60, 0.70), _model("trained", 0.65, 0.69)])
    v = verdict(result, result.models[0], result.models[1], ["r"])
    assert [(t.task, t.metric) for t in v.tasks] == [("r", "ndcg_at_10"), ("c", "accuracy")]
    text = v.text()
    assert "on the 1 task(s) it was trained on, the trained model BEAT the teacher (mean main-score change +0.0500)" in text
    assert "over all 2 task(s), it beat the teacher on 1 of 2." in text
    worse = EvalResult("vital", "v0001", "test", [_model("teacher", 0.60, 0.70), _model("trained", 0.55, 0.60)])
    assert "did NOT beat the teacher" in verdict(worse, *worse.models, ["r"]).text()
    both = EvalResult("vital", "v0001", "test", [_model("teacher", 0.60, 0.70), _model("trained", 0.65, 0.75)])
    assert "over all 2 task(s), it BEAT the teacher on every one." in verdict(both, *both.models, ["r"]).text()


def test_report_links_its_pngs_and_a_resumed_loss_curve_keeps_one_point_per_step(tmp_path):
    from storage import Catalog

    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    lines = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 2, "loss": 1.4}, {"step": 3, "loss": 1.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert loss_curve_png((run / "metrics.jsonl").read_text()).startswith(b"\x89PNG")
    result = EvalResult("vital", "v0001", "test", [_model("teacher", 0.60, 0.70), _model("trained", 0.65, 0.69)])
    v = verdict(result, *result.models, ["r"])
    path = write_run_report(Catalog(str(tmp_path)), str(run), v, result, ("vital", "v0001"), ["stage one done"])
    text = open(path).read()
    assert "![evaluation](eval.png)" in text and "![training loss](loss.png)" in text and "stage one done" in text
    assert (run / "eval.png").read_bytes().startswith(b"\x89PNG")
    assert "mining-scores.png" not in text  # no negatives version in this root


def test_each_task_is_its_own_loss_line_with_its_moving_average():
    rows = [{"step": 1, "loss": 0.3, "task": "easy"}, {"step": 2, "loss": 1.4, "task": "hard"},
            {"step": 3, "loss": 0.1, "task": "easy"}, {"step": 4, "loss": 1.2, "task": "hard"},
            {"step": 4, "loss": 1.0, "task": "hard"}]  # step 4 again after a restart: the last row wins
    by_task = losses_by_task("".join(json.dumps(r) + "\n" for r in rows))
    assert by_task == {"easy": [(1, 0.3), (3, 0.1)], "hard": [(2, 1.4), (4, 1.0)]}
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert losses_by_task('{"step": 1, "loss": 0.5}\n') == {"loss": [(1, 0.5)]}  # rows from before tasks were logged
