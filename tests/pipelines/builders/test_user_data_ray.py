"""Users' own data through the real CLI: a corpus with its own ids, queries whose positives name
those ids, text pairs with and without a corpus, and the bad inputs each can bring (one line,
exit 2, nothing committed)."""

import json
import os

import pyarrow.compute as pc
import pytest

from pipelines.cli import main
from storage import Catalog

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]

DOCS = [("d1", "Cats", "Cats are small domesticated carnivorous mammals."),
        ("d2", "Dogs", "Dogs are domesticated descendants of the wolf."),
        ("d3", "Paris", "Paris is the capital and largest city of France."),
        ("d4", "Rome", "Rome is the capital city of Italy.")]
QUERIES = [("q1", "which animal purrs", "d1"), ("q2", "man's best friend", "d2"), ("q3", "capital of France", "d3"),
           ("q4", "capital of Italy", "d4")]


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _spec(path, body: str) -> str:
    path.write_text(body)
    return str(path)


@pytest.fixture
def files(tmp_path):
    _jsonl(tmp_path / "corpus.jsonl", [{"id": i, "title": t, "text": x} for i, t, x in DOCS])
    _jsonl(tmp_path / "queries.jsonl", [{"_id": q, "text": t, "pos": p} for q, t, p in QUERIES])
    _spec(tmp_path / "qrels.yaml", "name: caps\ncorpus: caps\nsplits: {train: 1.0}\ntasks:\n"
          "  - {name: caps-q2d, type: retrieval, source: {path: queries.jsonl}, "
          "columns: {query: text, positive_ids: pos, id: _id}}\n")
    return tmp_path


def test_positives_named_by_the_users_ids_go_through_and_join_back(files, tmp_path):
    root = str(tmp_path / "root")
    assert main(["--root", root, "build", "wiki", "--name", "caps", "--source", "files", "--path",
                 str(files / "corpus.jsonl")]) == 0  # its "id" column is mapped without being asked
    assert main(["--root", root, "build", "tasks", "--spec", str(files / "qrels.yaml")]) == 0
    examples = Catalog(root).read_table("examples", "caps").to_pylist()
    assert sorted(e["source_id"] for e in examples) == ["q1", "q2", "q3", "q4"]
    assert main(["--root", root, "mine", "--examples", "caps", "--num-negatives", "2", "--strategy", "topk"]) == 0
    out = tmp_path / "joined.json"
    assert main(["--root", root, "query", "select n.query_source_id q, n.neg_source_id d, c.title from negatives n "
                 "join corpus c on c.source_id = n.neg_source_id order by q, d", "--out", str(out)]) == 0
    joined = [json.loads(line) for line in out.read_text().splitlines()]  # one object a line
    assert len(joined) == 8 and all(r["title"] == dict((i, t) for i, t, _ in DOCS)[r["d"]] for r in joined)
    assert all(r["d"] != dict((q, p) for q, _, p in QUERIES)[r["q"]] for r in joined)  # never the query's positive


def test_text_pairs_without_a_corpus_make_one_and_shared_queries_keep_every_positive(tmp_path):
    root = str(tmp_path / "root")
    pairs = [{"anchor": "capital of France", "positive": "Paris is the capital of France."},
             {"anchor": "capital of France", "positive": "The capital of France is Paris."},
             {"anchor": "largest ocean", "positive": "The Pacific is the largest ocean."},
             {"anchor": "a pair without a positive", "positive": ""},
             {"anchor": "tallest mountain", "positive": "Everest is the tallest mountain."},
             {"anchor": "largest ocean on earth", "positive": "The Pacific is the largest ocean."}]
    _jsonl(tmp_path / "pairs.jsonl", pairs)
    spec = _spec(tmp_path / "pairs.yaml", "name: pairs\nsplits: {train: 1.0}\ntasks:\n  - {name: p, type: retrieval, "
                 "source: {path: pairs.jsonl}, columns: {query: anchor, positive: positive}}\n")
    assert main(["--root", root, "build", "tasks", "--spec", spec]) == 0
    catalog = Catalog(root)
    corpus = catalog.read_table("corpus", "pairs").column("text").to_pylist()
    assert sorted(corpus) == sorted({p["positive"] for p in pairs if p["positive"]})  # de-duplicated by text
    examples = {e["query"]: e for e in catalog.read_table("examples", "pairs").to_pylist()}
    assert len(examples["capital of France"]["positive_ids"]) == 2
    stats = catalog.manifest("examples", "pairs").stats["tasks"]["p"]
    assert stats["skipped"] == {"empty_positive": 1, "same_query": 1} and stats["positives_added_to_corpus"] == 4
    assert main(["--root", root, "mine", "--examples", "pairs", "--num-negatives", "1", "--strategy", "topk"]) == 0
    negatives = catalog.read_table("negatives", "pairs").to_pylist()
    shared = [n for n in negatives if n["query"] == "capital of France"]
    assert shared and all("capital of France" not in n["neg_text"] for n in shared)  # neither positive comes back


def test_text_pairs_over_a_corpus_match_it_by_text_and_add_what_it_lacks(files, tmp_path):
    root = str(tmp_path / "root")
    assert main(["--root", root, "build", "wiki", "--name", "caps", "--source", "files", "--path",
                 str(files / "corpus.jsonl")]) == 0
    _jsonl(tmp_path / "pairs.jsonl", [{"a": "capital of Italy", "p": DOCS[3][2]}, {"a": "oceans", "p": "Seas are big."}])
    spec = _spec(tmp_path / "pairs.yaml", "name: caps-pairs\ncorpus: caps\nsplits: {train: 1.0}\ntasks:\n  - {name: p, "
                 "type: retrieval, source: {path: pairs.jsonl}, columns: {query: a, positive: p}}\n")
    assert main(["--root", root, "build", "tasks", "--spec", spec]) == 0
    catalog = Catalog(root)
    corpus = catalog.read_table("corpus", "caps")
    assert catalog.latest("corpus", "caps") == "v0002" and corpus.num_rows == 5
    rome = corpus.filter(pc.equal(corpus.column("source_id"), "d4")).column("doc_id")[0].as_py()
    examples = {e["query"]: e for e in catalog.read_table("examples", "caps-pairs").to_pylist()}
    assert examples["capital of Italy"]["positive_ids"] == [rome]  # matched to the user's document by its text
    assert catalog.manifest("examples", "caps-pairs").stats["tasks"]["p"]["positives_added_to_corpus"] == 1


def _beir_without_corpus(tmp_path) -> str:
    folder = tmp_path / "nocorpus"
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    return str(folder)


def _beir_with(tmp_path, queries: str, qrels: str) -> str:
    """A BEIR folder whose corpus is good and whose queries or qrels are not."""
    folder = tmp_path / "bad-beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "title": "Cats", "text": "Cats purr."}\n')
    (folder / "queries.jsonl").write_text(queries)
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return str(folder)


BAD = [
    (lambda t: ["build", "wiki", "--source", "files", "--path", _write(t / "empty.jsonl", "")],
     "error: {t}/empty.jsonl: the file is empty"),
    (lambda t: ["build", "wiki", "--source", "files", "--path",
                _write(t / "twice.jsonl", '{"id": "d1", "title": "A", "text": "a"}\n{"id": "d1", "title": "B", '
                                          '"text": "b"}\n')],
     "error: duplicate source id 'd1': two rows have it (titled 'A' and 'B'); each document needs an id of its own"),
    (lambda t: ["build", "beir", _beir_without_corpus(t), "--name", "x"],
     "error: {t}/nocorpus: not a BEIR folder: it has no corpus.jsonl"),
    # the corpus is good: the bad qrels or queries line must stop the build before it is committed
    (lambda t: ["build", "beir", _beir_with(t, '{"_id": "q1", "text": "purr"}\n', "query-id\tcorpus-id\tscore\nq1\td1\n"),
                "--name", "b"],
     "error: {t}/bad-beir/qrels/test.tsv:2: expected 3 tab-separated fields (query-id, corpus-id, score), got 2"),
    (lambda t: ["build", "beir", _beir_with(t, '{"_id": "q1", "text": 5}\n', "q1\td1\t1\n"), "--name", "b"],
     "error: {t}/bad-beir/queries.jsonl:1: field 'text' must be a string, got int"),
    (lambda t: ["build", "tasks", "--spec", _qrels_spec(t, "q1\td1\n")],
     "error: {t}/qrels.tsv:1: expected 3 tab-separated fields (query-id, corpus-id, score), got 2"),
    (lambda t: ["build", "tasks", "--spec", _qrels_spec(t, "query-id\tcorpus-id\tscore\nq1\td1\tvery\n")],
     "error: {t}/qrels.tsv:2: score 'very' is not a number"),
    (lambda t: ["build", "tasks", "--spec", _qrels_spec(t, "q9\td1\t1\nq1\td9\t1\n")],
     "error: task judged produced no usable examples (skipped: not_in_qrels 3, positive_not_in_corpus 1)"),
]


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _qrels_spec(tmp_path, qrels: str) -> str:
    _write(tmp_path / "qrels.tsv", qrels)
    _jsonl(tmp_path / "q.jsonl", [{"_id": q, "text": t} for q, t, _ in QUERIES])
    return _spec(tmp_path / "judged.yaml", "name: judged\ncorpus: caps\ntasks:\n  - {name: judged, type: retrieval, "
                 "source: {path: q.jsonl, qrels: qrels.tsv}, columns: {query: text, id: _id}}\n")


@pytest.mark.parametrize("argv, expected", BAD, ids=["empty file", "duplicate source id", "beir without corpus",
                                                     "beir qrels line of 2 fields", "beir query not a string",
                                                     "qrels line of 2 fields", "non-numeric score",
                                                     "qrels naming no query or document"])
def test_bad_user_data_is_one_line_and_commits_nothing(files, capsys, argv, expected):
    root = files / "root"
    assert main(["--root", str(root), "build", "wiki", "--name", "caps", "--source", "files", "--path",
                 str(files / "corpus.jsonl")]) == 0
    before = sorted(Catalog(str(root)).iter_datasets())
    capsys.readouterr()
    assert main(["--root", str(root), *argv(files)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == expected.replace("{t}", str(files)), err
    assert sorted(Catalog(str(root)).iter_datasets()) == before and Catalog(str(root)).latest("corpus", "caps") == "v0001"
    assert not os.path.exists(os.path.join(root, "examples"))
