"""Re-mining by updating stored candidate lists gives what searching everything gives, row
for row: random sequences of edits on small pools (texts changed, documents deleted and
added, queries changed, duplicate texts with their own ids, so that scores tie), each
refresh mined both ways, through real Ray."""

import json
import logging
import re

import numpy as np
import pyarrow as pa
import pytest

from pipelines.builders.sources import load_embedded_table
from pipelines.cli import main
from storage import Catalog
from tests.pipelines.small_source import SMALL_SPEC

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]
COLUMNS = "id=key,title=title,text=extract,description=description,topic=topic"
MINE = ["mine", "--examples", "small", "--depth", "10", "--num-negatives", "3"]
IGNORED = {"run_id"}  # what a run computed is the same; which run computed it is not


def _write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _edit(rows, reserve, rng, round_):
    """About 4% of texts changed, 2% deleted, 2% added, 2% of queries changed, and one
    duplicate text added under its own id."""
    out = []
    for r in rows:
        roll = rng.random()
        if roll < 0.02:
            continue
        r = dict(r)
        if roll < 0.06:
            r["extract"] += f" Edited in round {round_}."
        elif roll < 0.08 and r["description"]:
            r["description"] = f"{r['description']} (revised {round_})"
        out.append(r)
    for _ in range(max(1, len(rows) // 50)):
        if reserve:
            out.append(reserve.pop())
    twin = dict(out[int(rng.integers(0, len(out)))])
    twin["key"] = f"{twin['key']}-twin{round_}"
    out.append(twin)
    return out


def _rows(root, kind, name):
    table = Catalog(root).read_table(kind, name)
    rank = "neg_rank" if kind == "negatives" else "cand_rank"
    table = table.sort_by([("task", "ascending"), ("example_id", "ascending"), (rank, "ascending")])
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in table.to_pylist()]


def _refreshes(base, seed, rounds, caplog):
    rng = np.random.default_rng(seed)
    embedded = load_embedded_table("en", 200).to_pylist()
    for i, r in enumerate(embedded):
        r["key"] = f"doc{i}"
    rows, reserve = embedded[:150], embedded[150:]
    root = str(base / "data")
    (base / "spec.yaml").write_text(SMALL_SPEC)
    build = ["--root", root, "build", "wiki", "--name", "small", "--source", "files", "--path",
             str(base / "docs.jsonl"), "--columns", COLUMNS]
    updated = 0
    for round_ in range(rounds + 1):
        if round_:
            rows = _edit(rows, reserve, rng, round_)
        _write(base / "docs.jsonl", rows)
        assert main(build) == 0
        assert main(["--root", root, "build", "tasks", "--spec", str(base / "spec.yaml")]) == 0
        with caplog.at_level(logging.INFO, logger="quarry"):
            caplog.clear()
            assert main(["--root", root, *MINE, "--name", "incremental"]) == 0
            found = [re.search(r"(\d+) queries updated from their stored lists", m) for m in caplog.messages]
            updated += sum(int(f.group(1)) for f in found if f)
        assert main(["--root", root, *MINE, "--name", "reference", "--no-reuse"]) == 0
        yield root, round_
    assert updated > 0, "no query took the incremental path: the test proves nothing"


@pytest.mark.parametrize("seed", [0, 1])
def test_updated_lists_mine_what_a_full_search_mines(tmp_path, seed, caplog):
    for root, round_ in _refreshes(tmp_path, seed, 4, caplog):
        for kind in ("negatives", "rejections"):
            assert _rows(root, kind, "incremental") == _rows(root, kind, "reference"), (kind, round_)


def test_a_wrong_merge_is_caught(tmp_path, caplog, monkeypatch):
    """The comparison above can fail: a merge that ignores the documents that joined or
    changed mines other negatives than a full search."""
    import pipelines.mine.lists as lists

    monkeypatch.setattr(lists, "merge", lambda kept, joined, id_rank, width: lists._widened(kept, width))
    differs = False
    for root, round_ in _refreshes(tmp_path, 0, 3, caplog):
        differs |= _rows(root, "negatives", "incremental") != _rows(root, "negatives", "reference")
    assert differs
