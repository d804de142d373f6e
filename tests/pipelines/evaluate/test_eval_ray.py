"""``quarry eval`` end to end through real Ray, on a few hundred embedded articles."""

import json
import os

import pytest

from pipelines.cli import main
from storage import PACKAGED_MINILM, Catalog, resolve_packaged
from tests.pipelines.roots import vital_root

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]
TEACHER = "packaged:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return vital_root(tmp_path_factory, "eval")


@pytest.fixture(scope="module")
def quarry_model(root):
    """An untrained Quarry model (MiniLM, mean pooling) saved with the tasks' prompts."""
    from trainers import EmbeddingModel

    examples = Catalog(root).read_table("examples", "vital", columns=["task", "task_type", "instruction"]).to_pylist()
    model = EmbeddingModel.from_pretrained(resolve_packaged(PACKAGED_MINILM), pooling="mean", max_length=64)
    model.config.prompts = {(r["task"] + "-query" if r["task_type"] == "retrieval" else r["task"]): r["instruction"]
                            for r in examples}
    path = os.path.join(root, "models", "untrained-mean")
    model.save_pretrained(path)
    return path


def test_eval_scores_every_task_and_records_them(root, quarry_model, capsys):
    assert main(["--root", root, "eval", "--model", quarry_model, "--model", TEACHER]) == 0
    out = capsys.readouterr().out
    for task in ("vital-desc2article", "vital-title2article", "vital-topic-classification", "vital-topic-clustering"):
        assert task in out
    assert "diff (last - first)" in out
    saved = json.load(open(os.path.join(quarry_model, "eval.json")))["evaluations"]
    assert [e["split"] for e in saved] == ["test"]
    tasks = saved[0]["tasks"]
    assert set(tasks["vital-desc2article"]) == {"task_type", "ndcg_at_10", "recall_at_10", "recall_at_100",
                                                "mrr_at_10"}
    assert 0 < tasks["vital-title2article"]["ndcg_at_10"] <= 1
    assert set(tasks["vital-topic-classification"]) == {"task_type", "accuracy"}
    assert set(tasks["vital-topic-clustering"]) == {"task_type", "v_measure"}

    assert main(["--root", root, "query", "select model_kind, count(*) as n, count(distinct task) as tasks "
                 "from evals group by all order by 1", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert rows == ['"quarry",10,4', '"sentence-transformers",10,4']

    # the same model again: every vector comes from its cache, and the scores are the same
    assert main(["--root", root, "eval", "--model", quarry_model, "--no-write"]) == 0
    again = capsys.readouterr().out
    assert "embedded 0 new texts" in again
    ndcg = f"{tasks['vital-desc2article']['ndcg_at_10']:.4f}"
    assert any("vital-desc2article" in line and "ndcg_at_10" in line and ndcg in line for line in again.splitlines())


def test_mteb_through_sentence_transformers_gets_the_same_scores(root, quarry_model):
    """mteb scoring the saved folder through SentenceTransformer agrees with quarry eval.

    mteb keeps only prompt names it knows (its registered task names, task types, prompt
    types), so a local task's instruction is given as the "query" prompt (retrieval: queries
    only) or as the task type's prompt (classification: every text)."""
    import mteb
    from sentence_transformers import SentenceTransformer

    from evaluation.mteb_tasks import mteb_task
    from pipelines.evaluate.task_data import load_task_data

    catalog = Catalog(root)
    saved = json.load(open(os.path.join(quarry_model, "eval.json")))["evaluations"][0]["tasks"]
    st = SentenceTransformer(quarry_model, device="cpu", trust_remote_code=True)
    prompts = dict(st.prompts)  # as saved in config_sentence_transformers.json
    for task, prompt_key, metric in [("vital-desc2article", "query", "ndcg_at_10"),
                                     ("vital-topic-classification", "Classification", "accuracy")]:
        (data,), version = load_task_data(catalog, "vital", None, "test", [task])
        st.prompts = {prompt_key: prompts[f"{task}-query" if prompt_key == "query" else task]}
        result = mteb.evaluate(st, tasks=[mteb_task(data, version)], cache=None, show_progress_bar=False)
        direct = result.task_results[0].scores["test"][0]["main_score"]
        assert direct == pytest.approx(saved[task][metric], abs=1e-4), task


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/model"], "--model '/no/such/model': no such folder"),
    (["--model", "no-such-run"], "--model 'no-such-run' is neither a local folder nor a model the hub provides"),
    (["--model", "no-such-run"], "(nor a saved model under "),
    (["--model", TEACHER, "--split", "validation"], "--split must be one of train, dev, test"),
    (["--model", TEACHER, "--tasks", "nope"], "has no task 'nope'"),
    (["--model", TEACHER, "--examples", "missing"], "no examples dataset named 'missing'"),
    (["--model", TEACHER, "--split", "train", "--tasks", "vital-topic-classification"], "use --split dev or test"),
    ([], "--model must name at least one model to evaluate"),
    (["--model", TEACHER, "--with-parent"], "has no parent in its lineage"),
    (["--model", TEACHER, "--dims", "64,x"], "--dims: expected comma-separated integers, got 'x'"),
    (["--model", TEACHER, "--dims", "64,64"], "--dims must be distinct positive sizes"),
    (["--model", TEACHER, "--dims", "512", "--tasks", "vital-title2article", "--no-write"],
     "--dims 512: packaged:all-MiniLM-L6-v2 makes 384-dimension vectors"),
])
def test_bad_eval_input_is_one_line(root, capsys, argv, message):
    assert main(["--root", root, "eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_matryoshka_prefixes_are_scored_from_the_same_vectors(root, quarry_model, capsys):
    """--dims scores renormalised prefixes of the vectors embedded once: one column per prefix."""
    argv = ["--root", root, "eval", "--model", quarry_model, "--tasks", "vital-title2article", "--no-write"]
    assert main(argv + ["--dims", "32,128"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("task"))
    assert "untrained-mean@32" in header and "untrained-mean@128" in header and "diff" not in header
    row = next(line for line in out.splitlines() if "vital-title2article" in line and "ndcg_at_10" in line)
    full, at32, at128 = (float(v) for v in row.split()[-3:])
    assert at32 < at128 <= full + 0.02 and at32 > 0  # 32 of 384 dimensions still retrieve, less well


def test_a_folder_that_is_no_model_says_so(root, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model")
    assert main(["--root", root, "eval", "--model", str(tmp_path)]) == 2
    assert "neither a saved Quarry model" in capsys.readouterr().err


def test_a_retrained_model_is_scored_beside_its_parent(root, quarry_model, capsys, perturb_in_place):
    """--with-parent reads the parent from lineage.json and scores both on the same split."""
    import shutil

    from trainers.lineage import LINEAGE_FILE, Lineage

    child = os.path.join(root, "models", "child")
    shutil.copytree(quarry_model, child)
    perturb_in_place(os.path.join(child, "model.safetensors"), delta=0.002)
    record = Lineage(model="child", backbone="all-MiniLM-L6-v2", parent=quarry_model, parent_fingerprint=None,
                     shards="shards/x v0001")
    with open(os.path.join(child, LINEAGE_FILE), "w") as f:
        f.write(record.to_json())
    assert main(["--root", root, "eval", "--model", child, "--with-parent", "--tasks", "vital-title2article",
                 "--no-write"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "diff (last - first)" in line)
    assert "child" in header and "untrained-mean" in header, out
