"""The real CLI end to end on a few hundred embedded articles, through real Ray."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from storage import Catalog
from tests.pipelines.roots import vital_root

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return vital_root(tmp_path_factory, "e2e")


def test_build_then_query_counts(root, capsys):
    assert main(["--root", root, "query", "select task, count(*) as n from examples group by task order by task",
                 "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    counts = {line.split(",")[0].strip('"'): int(line.split(",")[1]) for line in lines[1:]}
    assert set(counts) == {"vital-desc2article", "vital-title2article", "vital-topic-classification",
                           "vital-topic-clustering"}
    assert counts["vital-title2article"] == 300
    catalog = Catalog(root)
    stats = catalog.manifest("examples", "vital").stats["tasks"]
    uncategorized = stats["vital-topic-classification"]["skipped"]["excluded_label"]
    assert uncategorized > 0 and counts["vital-topic-classification"] <= 300 - uncategorized
    assert stats["vital-desc2article"]["skipped"].get("empty_query", 0) + counts["vital-desc2article"] == 300


def test_examples_follow_the_nv_embed_rules(root):
    catalog = Catalog(root)
    ex = catalog.read_table("examples", "vital").to_pylist()
    corpus_ids = set(catalog.read_table("corpus", "vital", columns=["doc_id"]).column("doc_id").to_pylist())
    by_id = {r["example_id"]: r for r in ex}
    for r in ex:
        if r["task_type"] == "retrieval":
            assert r["instruction"].startswith("Instruct: ") and r["instruction"].endswith("\nQuery: ")
            assert set(r["positive_ids"]) <= corpus_ids
        else:
            (partner,) = r["positive_ids"]
            assert partner != r["example_id"]
            assert by_id[partner]["label"] == r["label"] and by_id[partner]["split"] == r["split"]
            assert r["positive"] == by_id[partner]["query"] and r["positive"] != r["label"]
            assert r["label"] != "Uncategorized"
    manifest = catalog.manifest("examples", "vital")
    assert [(i.kind, i.name) for i in manifest.inputs] == [("corpus", "vital")]
    assert manifest.config["spec"]["seed"] == 0


def test_rebuild_of_same_input_is_unchanged(root, capsys):
    assert main(["--root", root, "build", "tasks", "--limit", "300"]) == 0
    assert "unchanged, still v0001" in capsys.readouterr().out
    assert Catalog(root).versions("examples", "vital") == ["v0001"]


def test_exports_and_listing(root, tmp_path, capsys):
    out = tmp_path / "counts.parquet"
    assert main(["--root", root, "query", "select task, count(*) n from examples group by task", "--out", str(out)]) == 0
    assert pq.read_table(out).num_rows == 4
    assert main(["--root", root, "query", "select doc_id, title from corpus order by doc_id limit 2",
                 "--format", "json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 2 and set(rows[0]) == {"doc_id", "title"}
    assert main(["--root", root, "datasets"]) == 0
    listing = capsys.readouterr().out
    assert "corpus" in listing and "examples" in listing and "300" in listing


def test_bad_task_input_fails_cleanly_and_commits_nothing(root, tmp_path, capsys):
    data = tmp_path / "cls.jsonl"
    data.write_text('{"t": "fine text", "y": "a"}\n{"t": 42, "y": "b"}\n')
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: broken\ntasks:\n  - name: c\n    type: classification\n"
                    "    source: {path: cls.jsonl}\n    columns: {text: t, label: y}\n")
    assert main(["--root", root, "build", "tasks", "--spec", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: cls.jsonl:2: field 't' must be a string, got int".replace("cls.jsonl", str(data))
    assert not Catalog(root).exists("examples", "broken")
    assert not os.path.exists(os.path.join(root, "examples", "broken", "_staging"))


def test_console_script_query_is_read_only(root):
    exe = os.path.join(os.path.dirname(sys.executable), "quarry")
    proc = subprocess.run([exe, "--root", root, "query", "delete from corpus"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: quarry query is read-only: DELETE statements are refused "
                                   "(use SELECT, WITH ... SELECT, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN)")
    proc = subprocess.run([exe, "--root", root, "mine", "--examples", "nope"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no examples dataset named 'nope'")
