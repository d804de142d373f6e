"""``quarry refresh`` and re-mining on an edited files source, through real Ray.

The source: 60 embedded articles as JSONL. The edit: 3 articles' texts changed, 2 added,
1 deleted. Everything below is checked against a reference computed here from the
datasets themselves (ids, texts, the teacher's cached vectors), not against fixed numbers.
"""

import contextlib
import io
import json

import numpy as np
import pyarrow as pa
import pytest

from miners.cache import EmbeddingCache
from miners.teacher import TeacherSpec, cache_key, resolve_teacher
from pipelines.builders.documents import clean_text
from pipelines.builders.sources import load_embedded_table
from pipelines.cli import main
from storage import Catalog
from tests.pipelines.small_source import SMALL_COLUMNS, SMALL_SPEC, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]
DEPTH, NEGATIVES = 8, 3
MINE = ["mine", "--examples", "small", "--depth", str(DEPTH), "--num-negatives", str(NEGATIVES)]
EDIT = " This sentence was added by this week's edit."


def _versions(root, kind, name):
    return Catalog(root).versions(kind, name)


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    """Build, mine, refresh unchanged, edit the source, refresh, mine again: every output kept."""
    base = tmp_path_factory.mktemp("refresh")
    root = str(base / "data")
    rows = load_embedded_table("en", 64).to_pylist()
    source, extra = rows[:60], rows[60:62]
    write_jsonl(base / "docs.jsonl", pa.Table.from_pylist(source))
    (base / "spec.yaml").write_text(SMALL_SPEC)
    out = {"root": root, "base": base}
    assert main(["--root", root, "build", "wiki", "--name", "small", "--source", "files", "--path",
                 str(base / "docs.jsonl"), "--columns", SMALL_COLUMNS]) == 0
    assert main(["--root", root, "build", "tasks", "--spec", str(base / "spec.yaml")]) == 0
    assert main(["--root", root, *MINE]) == 0
    out["before"] = {k: _versions(root, k, "small") for k in ("corpus", "examples", "negatives")}
    return out, source, extra


@pytest.fixture(scope="module")
def after(edited, tmp_path_factory):
    out, source, extra = edited
    root, base = out["root"], out["base"]
    edited_rows = [dict(r) for r in source]
    changed = [3, 10, 20]
    for i in changed:
        edited_rows[i]["extract"] += EDIT
    # The deleted article has a description and a real topic: it leaves both tasks.
    gone = next(i for i in range(30, 60) if source[i]["description"] and source[i]["topic"] != "Uncategorized")
    deleted = edited_rows.pop(gone)
    edited_rows += extra
    write_jsonl(base / "docs.jsonl", pa.Table.from_pylist(edited_rows))
    catalog = Catalog(root)
    snapshot = {
        "corpus": catalog.read_table("corpus", "small"), "examples": catalog.read_table("examples", "small"),
        "negatives": catalog.read_table("negatives", "small"),
        "cache": set(catalog.read_table("embeddings", resolve_teacher(TeacherSpec()).cache_name,
                                        columns=["key"]).column("key").to_pylist()),
    }
    return {**out, "snapshot": snapshot, "changed_titles": {source[i]["title"] for i in changed},
            "deleted_title": deleted["title"], "added_titles": {r["title"] for r in extra},
            "changed_texts": [clean_text(source[i]["extract"] + EDIT) for i in changed]}


@pytest.fixture(scope="module")
def refreshed(after):
    root = after["root"]
    printed = {}
    # The re-mine reuses what the change cannot reach; "full" searches every query again.
    for step, argv in (("refresh_out", ["refresh"]), ("mine_out", MINE), ("full_out", [*MINE, "--name", "full"])):
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            assert main(["--root", root, *argv]) == 0
        printed[step] = buf.getvalue()
    return {**after, **printed}


def test_refreshing_an_unchanged_source_creates_no_version(edited, capsys):
    out, _, _ = edited
    root = out["root"]
    assert main(["--root", root, "refresh"]) == 0
    printed = capsys.readouterr().out
    assert "corpus/small: unchanged, still v0001" in printed and "examples/small: unchanged, still v0001" in printed
    assert {k: _versions(root, k, "small") for k in ("corpus", "examples", "negatives")} == out["before"]


def test_the_change_summary_counts_exactly_the_edit(refreshed, capsys):
    root = refreshed["root"]
    catalog = Catalog(root)
    corpus = catalog.manifest("corpus", "small")
    assert corpus.version == "v0002"
    changes = corpus.stats["changes"]
    assert (changes["added"], changes["removed"], changes["modified"], changes["previous_version"]) == (2, 1, 3, "v0001")
    assert "corpus/small: committed v0002: 61 rows" in refreshed["refresh_out"]
    assert "vs v0001: 2 added, 1 removed, 3 modified, 56 unchanged" in refreshed["refresh_out"]

    # The examples' summary against one computed here from the two versions' rows.
    old = {r["example_id"]: r for r in refreshed["snapshot"]["examples"].to_pylist()}
    new = {r["example_id"]: r for r in catalog.read_table("examples", "small").to_pylist()}
    fields = ("query", "positive_ids", "positive", "label", "score")
    for task in ("desc", "topic"):
        o = {k: v for k, v in old.items() if v["task"] == task}
        n = {k: v for k, v in new.items() if v["task"] == task}
        expected = {"added": len(n.keys() - o.keys()), "removed": len(o.keys() - n.keys()),
                    "modified": sum(any(o[k][f] != n[k][f] for f in fields) for k in o.keys() & n.keys())}
        got = catalog.manifest("examples", "small").stats["changes"]["groups"][task]
        assert {k: got[k] for k in expected} == expected, task
    # The retrieval task: 2 new descriptions, 1 gone, none edited (only article texts were).
    assert catalog.manifest("examples", "small").stats["changes"]["groups"]["desc"]["added"] == 2
    assert catalog.manifest("examples", "small").stats["changes"]["groups"]["desc"]["removed"] == 1
    assert catalog.manifest("examples", "small").stats["changes"]["groups"]["desc"]["modified"] == 0

    assert main(["--root", root, "query", "select kind, version, task, added, removed, modified from changes "
                 "where version = 'v0002' order by kind, task", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert rows[0] == '"corpus","v0002",,2,1,3'


def test_a_refresh_never_moves_an_example_to_another_split(refreshed):
    old = {r["example_id"]: r["split"] for r in refreshed["snapshot"]["examples"].to_pylist()}
    new = {r["example_id"]: r["split"] for r in Catalog(refreshed["root"]).read_table("examples", "small").to_pylist()}
    shared = old.keys() & new.keys()
    assert len(shared) > 90
    assert {k: new[k] for k in shared} == {k: old[k] for k in shared}


def test_re_mining_embeds_exactly_the_new_and_changed_texts(refreshed):
    catalog = Catalog(refreshed["root"])
    cache = resolve_teacher(TeacherSpec()).cache_name
    keys_now = set(catalog.read_table("embeddings", cache, columns=["key"]).column("key").to_pylist())
    corpus = {r["title"]: r["text"] for r in catalog.read_table("corpus", "small").to_pylist()}
    examples = catalog.read_table("examples", "small").to_pylist()
    new_desc = [r["query"] for r in examples if r["task"] == "desc"
                and corpus_title(r, catalog) in refreshed["added_titles"]]
    expected = {cache_key(corpus[t]) for t in refreshed["added_titles"]} | {
        cache_key(t) for t in refreshed["changed_texts"]} | {cache_key(q) for q in new_desc}
    assert len(new_desc) == 2
    # Class-task queries are article texts: the same strings as the corpus's, embedded once.
    assert keys_now - refreshed["snapshot"]["cache"] == expected
    assert f"embedded {len(expected)} new texts" in refreshed["mine_out"]


def corpus_title(example, catalog, _cache={}):
    if "ids" not in _cache:
        _cache["ids"] = {r["doc_id"]: r["title"] for r in catalog.read_table("corpus", "small").to_pylist()}
    return _cache["ids"].get(example["positive_ids"][0])


def _sets(table):
    out = {}
    for r in table.to_pylist():
        out.setdefault((r["task"], r["example_id"]), set()).add(r["neg_id"])
    return out


def test_the_drift_report_counts_the_change(refreshed, capsys):
    root = refreshed["root"]
    catalog = Catalog(root)
    before, now = _sets(refreshed["snapshot"]["negatives"]), _sets(catalog.read_table("negatives", "small"))
    drift = {(r["task"], r["example_id"]): r for r in catalog.read_table("drift", "small").to_pylist()}
    examples_changes = catalog.manifest("examples", "small").stats["changes"]["groups"]
    summary = catalog.manifest("drift", "small").stats["tasks"]
    for task in ("desc", "topic"):
        rows = {k: r for k, r in drift.items() if k[0] == task}
        counts = {c: sum(r["change"] == c for r in rows.values()) for c in ("same", "changed", "added", "removed")}
        assert {c: summary[task][c] for c in counts} == counts
        assert counts["added"] == examples_changes[task]["added"]
        assert counts["removed"] == examples_changes[task]["removed"]
        for key, r in rows.items():
            assert (r["previous_version"], r["version"]) == ("v0001", "v0002")
            if r["change"] in ("same", "changed"):
                b, n = before.get(key, set()), now.get(key, set())  # a query may have had no negative
                assert r["jaccard"] == pytest.approx(len(b & n) / len(b | n) if b | n else 1.0)
                assert (r["change"] == "same") == (b == n)
    assert summary["desc"]["added"] == 2 and summary["desc"]["removed"] == 1
    # Negatives lost to the deleted and the edited articles, counted from the two runs' rows.
    ids = {r["title"]: r["doc_id"] for r in refreshed["snapshot"]["corpus"].to_pylist()}
    deleted_id = ids[refreshed["deleted_title"]]
    changed_ids = {ids[t] for t in refreshed["changed_titles"]}
    lost_deleted = sum(deleted_id in negs for key, negs in before.items() if key[0] == "desc" and key in now)
    lost_changed = sum(len((negs & changed_ids) - now.get(key, set())) for key, negs in before.items()
                       if key[0] == "desc" and key in now)
    assert (summary["desc"]["lost_to_deleted"], summary["desc"]["lost_to_changed"]) == (lost_deleted, lost_changed)
    assert "drift of the negatives, v0001 -> v0002" in refreshed["mine_out"]
    assert catalog.manifest("drift", "small").attachments == ["drift.png"]
    assert main(["--root", root, "query", "select change, count(*) as n from drift group by all order by 1",
                 "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[0] == '"change","n"'


def test_queries_the_change_cannot_reach_keep_identical_negatives(refreshed):
    """A retrieval query is out of reach of the edit when its text and positive are as they
    were, no deleted or edited article was in its previous top-depth, and no new or edited
    article scores at least its previous depth-th candidate (the teacher's cached vectors,
    exact search here). Such queries must keep exactly their negatives."""
    catalog = Catalog(refreshed["root"])
    cache = EmbeddingCache(catalog, resolve_teacher(TeacherSpec()).cache_name, dim=None, config={})
    old_corpus, new_corpus = refreshed["snapshot"]["corpus"].to_pylist(), catalog.read_table("corpus", "small").to_pylist()
    old_ex = {r["example_id"]: r for r in refreshed["snapshot"]["examples"].to_pylist() if r["task"] == "desc"}
    new_ex = {r["example_id"]: r for r in catalog.read_table("examples", "small").to_pylist() if r["task"] == "desc"}
    old_text = {r["doc_id"]: r["text"] for r in old_corpus}
    new_text = {r["doc_id"]: r["text"] for r in new_corpus}
    gone_or_edited = {d for d in old_text if new_text.get(d) != old_text[d]}
    arrivals = [d for d in new_text if old_text.get(d) != new_text[d]]
    old_ids = list(old_text)
    doc_vecs = cache.load([cache_key(old_text[d]) for d in old_ids])
    arrival_vecs = cache.load([cache_key(new_text[d]) for d in arrivals])
    before, now = _sets(refreshed["snapshot"]["negatives"]), _sets(catalog.read_table("negatives", "small"))
    untouched = 0
    for eid in old_ex.keys() & new_ex.keys():
        o, n = old_ex[eid], new_ex[eid]
        if (o["query"], o["positive_ids"]) != (n["query"], n["positive_ids"]) or set(o["positive_ids"]) & gone_or_edited:
            continue
        q = cache.load([cache_key(o["query"])])[0]
        scores = doc_vecs @ q
        top = np.argsort(-scores, kind="stable")[:DEPTH]
        if {old_ids[i] for i in top} & gone_or_edited or (arrival_vecs @ q).max() >= scores[top[-1]] - 1e-6:
            continue
        untouched += 1
        assert now.get(("desc", eid)) == before.get(("desc", eid)), eid
    assert untouched >= 5  # the check above ran on real queries


def test_refresh_only_narrows_and_a_second_refresh_changes_nothing(refreshed, capsys):
    root = refreshed["root"]
    versions = {k: _versions(root, k, "small") for k in ("corpus", "examples")}
    assert main(["--root", root, "refresh", "--only", "examples/small"]) == 0
    printed = capsys.readouterr().out
    assert "examples/small: unchanged, still v0002" in printed and "corpus/small" not in printed
    assert main(["--root", root, "refresh"]) == 0
    assert {k: _versions(root, k, "small") for k in ("corpus", "examples")} == versions


@pytest.mark.parametrize("only, message", [
    ("corpus/nope", "--only corpus/nope: no such dataset"),
    ("negatives/small", "expected corpus/NAME or examples/NAME"),
    ("corpus/../x", "invalid"),
])
def test_bad_refresh_input_is_one_line(refreshed, capsys, only, message):
    assert main(["--root", refreshed["root"], "refresh", "--only", only]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_a_spec_recorded_in_a_manifest_gives_the_same_splits():
    """Manifests are written with sorted keys; the order of the splits must survive that."""
    from pipelines.builders.task_rows import assign_split
    from pipelines.builders.task_spec import parse_task_set, spec_from_dict
    from pipelines.builders.tasks import spec_dict

    raw = {"name": "s", "splits": {"train": 0.8, "test": 0.1, "dev": 0.1},
           "tasks": [{"name": "t", "type": "retrieval", "source": {"corpus": "c"},
                      "columns": {"query": "q", "positive_ids": "id"}}]}
    spec = parse_task_set(raw)
    recorded = json.loads(json.dumps(spec_dict(spec, "/"), sort_keys=True))
    again = spec_from_dict(recorded)
    ids = [f"t:{i}" for i in range(2000)]
    assert [assign_split(i, again.seed, again.splits) for i in ids] == [assign_split(i, spec.seed, spec.splits)
                                                                         for i in ids]


def test_a_dataset_no_quarry_builder_made_is_left_alone(catalog, capsys):
    from pipelines.builders.refresh import RefreshConfig, plan_refresh

    catalog.write_table("corpus", "handmade", pa.table({"doc_id": ["a"], "text": ["x"]}))
    plan = plan_refresh(catalog, RefreshConfig())
    assert not plan.corpora and plan.left_alone == [
        "corpus/handmade v0001: not built by `quarry build wiki`, no source to rebuild it from"]
    assert main(["--root", catalog.root.uri, "refresh"]) == 2
    assert "nothing to refresh" in capsys.readouterr().err


def _rows(catalog, kind, name):
    """Sorted rows without run_id; scores rounded to 1e-5 (FAISS's rounding depends on which
    queries share a batch, and only the re-mine's searched queries share one)."""
    table = catalog.read_table(kind, name)
    cols = [c for c in table.column_names if c != "run_id"]
    return sorted(tuple(round(v, 5) if isinstance(v, float) else v for v in (r[c] for c in cols))
                  for r in table.select(cols).to_pylist())


def test_reusing_unreachable_queries_gives_what_a_full_search_gives(refreshed):
    """The incremental re-mine carried most queries over and searched the rest; a full mine
    of the same data (another name, so nothing to reuse) gives the same rows."""
    catalog = Catalog(refreshed["root"])
    reuse = catalog.manifest("negatives", "small").stats["reuse"]
    assert reuse["previous_version"] == "v0001" and reuse["carried_queries"] > 20 and reuse["searched_queries"] > 0
    assert catalog.manifest("negatives", "full").stats["reuse"] is None
    assert f"searched {reuse['searched_queries']} queries again" in refreshed["mine_out"]
    for kind in ("negatives", "rejections"):
        assert _rows(catalog, kind, "small") == _rows(catalog, kind, "full"), kind
    assert _rows(catalog, "searched", "small") == _rows(catalog, "searched", "full")
