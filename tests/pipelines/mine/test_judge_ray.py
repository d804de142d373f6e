"""quarry mine --judge on a small corpus through real Ray: the rules read the judge's scores,
both scores are written, a bi-encoder judge is cached, a cross-encoder judge reads pairs."""

import shutil

import numpy as np
import pyarrow.compute as pc
import pytest

from pipelines.builders.sources import load_embedded_table
from pipelines.cli import main
from storage import PACKAGED_MINILM, Catalog, resolve_packaged
from tests.pipelines.small_source import SMALL_COLUMNS, SMALL_SPEC, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]
# the threshold on every query, so that every row shows the judge deciding it
MINE = ["mine", "--examples", "small", "--tasks", "desc", "--depth", "20", "--confident-within", "0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("judge")
    root = str(base / "data")
    write_jsonl(base / "docs.jsonl", load_embedded_table("en", 80))
    (base / "spec.yaml").write_text(SMALL_SPEC)
    assert main(["--root", root, "build", "wiki", "--name", "small", "--source", "files", "--path",
                 str(base / "docs.jsonl"), "--columns", SMALL_COLUMNS]) == 0
    assert main(["--root", root, "build", "tasks", "--spec", str(base / "spec.yaml")]) == 0
    assert main(["--root", root, *MINE, "--name", "plain"]) == 0
    return {"root": root, "base": base}


def _rows(root, name):
    return Catalog(root).read_table("negatives", name).sort_by([("example_id", "ascending"), ("neg_rank", "ascending")])


def test_the_teacher_as_its_own_judge_changes_nothing_but_the_columns(setup, capsys):
    root = setup["root"]
    assert main(["--root", root, *MINE, "--name", "self", "--judge", PACKAGED_MINILM]) == 0
    plain, judged = _rows(root, "plain"), _rows(root, "self")
    assert judged.column("neg_id").to_pylist() == plain.column("neg_id").to_pylist()
    assert np.allclose(judged.column("neg_judge_score").to_numpy(), judged.column("neg_score").to_numpy(), atol=1e-5)
    assert np.allclose(judged.column("positive_judge_score").to_numpy(),
                       judged.column("positive_score").to_numpy(), atol=1e-5)
    assert set(judged.column("judge").to_pylist()) == set(plain.column("teacher").to_pylist())  # the same model
    assert plain.column("neg_judge_score").null_count == plain.num_rows and plain.column("judge").null_count == \
        plain.num_rows
    capsys.readouterr()
    assert main(["--root", root, *MINE, "--name", "self-again", "--judge", PACKAGED_MINILM]) == 0
    out = capsys.readouterr().out
    assert "judge: embedded 0 new texts" in out  # its vectors came from its cache


def test_a_different_judge_decides_the_threshold(setup, perturb_in_place):
    root, base = setup["root"], setup["base"]
    judge = base / "judge"
    shutil.copytree(resolve_packaged(PACKAGED_MINILM), judge)
    perturb_in_place(str(judge / "model.safetensors"), delta=0.002)
    assert main(["--root", root, *MINE, "--name", "other", "--judge", str(judge)]) == 0
    rows = _rows(root, "other")
    judge_scores, teacher_scores = rows.column("neg_judge_score").to_numpy(), rows.column("neg_score").to_numpy()
    assert np.abs(judge_scores - teacher_scores).max() > 1e-3  # another model's scores
    threshold = rows.column("threshold").to_numpy()
    assert np.allclose(threshold, 0.95 * rows.column("positive_judge_score").to_numpy(), atol=1e-5)
    assert (judge_scores <= threshold + 1e-6).all()
    rejected = Catalog(root).read_table("rejections", "other")
    above = rejected.filter(pc.equal(rejected.column("reason"), "above_threshold"))
    assert above.num_rows and (above.column("cand_judge_score").to_numpy() > above.column("threshold").to_numpy()).all()


def test_the_margin_listing_of_a_judged_run_reads_the_judges_scores(setup, capsys):
    """At the run's own margin (0.95) the listing rejects exactly what the mine rejected
    above the threshold among the naive top-k: on the judge's scores, not the teacher's."""
    root = setup["root"]
    capsys.readouterr()
    assert main(["--root", root, "margins", "--negatives", "other", "--from", "0.95", "--to", "0.95"]) == 0
    out = capsys.readouterr().out
    assert "on the scores of the judge" in out
    negatives = Catalog(root).read_table("negatives", "other")
    rejected = Catalog(root).read_table("rejections", "other")
    above = rejected.filter(pc.equal(rejected.column("reason"), "above_threshold")).to_pylist()
    rows = [(r["example_id"], r["cand_rank"], True) for r in above] + [
        (r["example_id"], r["neg_rank"], False) for r in negatives.to_pylist()]
    naive = {}
    for eid, rank, was_rejected in sorted(rows):
        naive.setdefault(eid, []).append(was_rejected)
    expected = sum(sum(flags[:7]) for flags in naive.values())
    line = next(x for x in out.splitlines() if x.startswith("0.95 "))
    assert line.split()[1] == str(expected)


def test_a_cross_encoder_judge_reads_query_and_passage_together(setup):
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    root, folder = setup["root"], setup["base"] / "cross"
    tokenizer = AutoTokenizer.from_pretrained(resolve_packaged(PACKAGED_MINILM))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # An untrained head scores every pair near 0.5: margin 1 keeps what scores below the positive.
    assert main(["--root", root, *MINE, "--name", "crossed", "--judge", str(folder), "--judge-kind",
                 "cross-encoder", "--margin", "1"]) == 0
    rows = _rows(root, "crossed")
    first = rows.slice(0, 1).to_pylist()[0]
    direct = CrossEncoder(str(folder), device="cpu").predict([(first["query"], first["neg_text"])])
    assert first["neg_judge_score"] == pytest.approx(float(np.ravel(direct)[0]), abs=1e-5)
    assert set(rows.column("judge").to_pylist()) == {f"{folder} (cross-encoder)"}
    assert np.allclose(rows.column("threshold").to_numpy(), rows.column("positive_judge_score").to_numpy(), atol=1e-6)
    assert (rows.column("neg_judge_score").to_numpy() <= rows.column("threshold").to_numpy()).all()


def test_a_missing_judge_fails_before_any_encoding(setup, capsys):
    assert main(["--root", setup["root"], *MINE, "--name", "x", "--judge", "/no/such/judge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --judge '/no/such/judge': no such folder"]
