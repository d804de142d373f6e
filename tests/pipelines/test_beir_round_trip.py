"""A BEIR folder through the real CLI: ``build beir`` -> ``mine`` -> ``export`` (sentence-transformers,
FlagEmbedding) -> ``eval``; the mined negatives join back to the folder by the user's own ids,
sentence-transformers trains on the export, and ``quarry eval`` agrees with mteb's own
evaluation of the same files."""

import json
import os

import pyarrow.compute as pc
import pytest

from pipelines.builders.documents import clean_text
from pipelines.cli import main
from storage import Catalog, resolve_packaged
from tests.pipelines.beir_folder import GRADED, write_beir

pytestmark = pytest.mark.integration  # starts Ray
TEACHER = "packaged:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def beir(tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("beir")
    written = write_beir(str(base / "tiny"))
    root = str(base / "root")
    assert main(["--root", root, "build", "beir", str(base / "tiny"), "--name", "tiny"]) == 0
    assert main(["--root", root, "mine", "--examples", "tiny", "--num-negatives", "3", "--strategy", "topk", "--teacher-precision",
                 "fp32"]) == 0
    return {"folder": str(base / "tiny"), "root": root, **written}


def test_the_folder_becomes_a_corpus_and_a_task_with_beirs_own_splits_and_grades(beir):
    catalog = Catalog(beir["root"])
    corpus = catalog.read_table("corpus", "tiny")
    assert sorted(corpus.column("source_id").to_pylist()) == sorted(beir["corpus"])
    first = beir["corpus"]["doc-0"]
    assert corpus.filter(pc.equal(corpus.column("source_id"), "doc-0")).column("text")[0].as_py() == clean_text(
        f"{first['title']} {first['text']}")  # the title in the text, as mteb encodes a BEIR document
    examples = catalog.read_table("examples", "tiny").to_pylist()
    split_of = {q: split for split, lines in beir["qrels"].items() for q, _, _ in lines}
    assert {e["source_id"]: e["split"] for e in examples} == {q: s for q, s in split_of.items() if "nowhere" not in q}
    graded = next(e for e in examples if e["source_id"] == f"q-{GRADED}")
    assert len(graded["positive_ids"]) == 2 and graded["positive_grades"] == [2, 1]
    stats = catalog.manifest("examples", "tiny").stats["tasks"]["tiny"]
    assert stats["qrels_naming_no_query"] == 3  # one line per qrels file names a query the folder lacks


def test_a_mined_negative_joins_back_to_the_users_corpus_by_its_own_id(beir, tmp_path):
    out = tmp_path / "joined.json"
    assert main(["--root", beir["root"], "query", "select query_source_id, neg_source_id, neg_text from negatives",
                 "--format", "json", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # one object a line
    assert rows and all(r["query_source_id"] in beir["queries"] for r in rows)
    for r in rows:
        doc = beir["corpus"][r["neg_source_id"]]
        assert r["neg_text"] == clean_text(f"{doc['title']} {doc['text']}")


def test_sentence_transformers_trains_on_the_n_tuple_export(beir):
    import datasets
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    assert main(["--root", beir["root"], "export", "--examples", "tiny", "--format", "sentence-transformers",
                 "--num-negatives", "3", "--with-scores"]) == 0
    catalog = Catalog(beir["root"])
    m = catalog.manifest("exports", "tiny-sentence-transformers")
    folder = catalog.root.path("exports", m.name, m.version)
    assert {i.kind for i in m.inputs} == {"examples", "corpus", "negatives"}
    dd = datasets.load_from_disk(os.path.join(folder, "hf"))
    train = dd["tiny"]
    assert train.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "scores"]
    parquet = datasets.load_dataset("parquet", data_files=catalog.files("exports", m.name, m.version), split="train")
    assert parquet.num_rows == train.num_rows and parquet[0] == train[0]
    prompts = json.load(open(os.path.join(folder, "prompts.json")))
    assert prompts == {"tiny": {"anchor": "Instruct: Given a query, retrieve the documents relevant to it\nQuery: "}}
    model = SentenceTransformer(resolve_packaged(TEACHER), device="cpu")
    args = SentenceTransformerTrainingArguments(output_dir=str(folder) + "-st", max_steps=2, per_device_train_batch_size=4,
                                                prompts=prompts, report_to=[], save_strategy="no", use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dd.remove_columns("scores"),
                                         loss=MultipleNegativesRankingLoss(model))
    assert trainer.train().global_step == 2


def test_the_flagembedding_export_has_its_documented_fields(beir):
    assert main(["--root", beir["root"], "export", "--examples", "tiny", "--format", "flagembedding",
                 "--num-negatives", "2"]) == 0
    catalog = Catalog(beir["root"])
    m = catalog.manifest("exports", "tiny-flagembedding")
    lines = [json.loads(x) for x in open(os.path.join(catalog.root.path("exports", m.name, m.version), "tiny.jsonl"))]
    assert lines and all(set(line) == {"query", "pos", "neg", "prompt"} for line in lines)
    assert all(isinstance(line["query"], str) and line["pos"] and len(line["neg"]) == 2 for line in lines)
    graded = next(line for line in lines if line["query"] == beir["queries"][f"q-{GRADED}"]["text"])
    assert len(graded["pos"]) == 2  # every positive of the query


def test_quarry_eval_scores_the_test_split_as_mteb_does_on_the_same_files(beir, capsys):
    assert main(["--root", beir["root"], "eval", "--model", TEACHER, "--examples", "tiny", "--precision", "fp32",
                 "--no-write"]) == 0
    out = capsys.readouterr().out
    line = next((x for x in out.splitlines() if x.split()[:2] == ["tiny", "ndcg_at_10"]), out)
    ours = float(line.split()[2])
    assert ours == pytest.approx(mteb_on_the_folder(beir["folder"], "test"), abs=1e-4)


def mteb_on_the_folder(folder: str, split: str) -> float:
    """mteb's nDCG@10 of the packaged MiniLM on a BEIR folder, read straight from its files."""
    import mteb
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
    from sentence_transformers import SentenceTransformer

    corpus = [json.loads(x) for x in open(os.path.join(folder, "corpus.jsonl"))]
    queries = [json.loads(x) for x in open(os.path.join(folder, "queries.jsonl"))]
    qrels: dict[str, dict[str, int]] = {}
    for line in list(open(os.path.join(folder, "qrels", f"{split}.tsv")))[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    judged = [q for q in queries if q["_id"] in qrels]

    def load(self, **kwargs):
        self.dataset = {"default": {split: {
            "corpus": Dataset.from_dict({"id": [d["_id"] for d in corpus], "title": [d["title"] for d in corpus],
                                         "text": [d["text"] for d in corpus]}),
            "queries": Dataset.from_dict({"id": [q["_id"] for q in judged], "text": [q["text"] for q in judged]}),
            "relevant_docs": {q: d for q, d in qrels.items() if any(x["_id"] == q for x in judged)},
            "top_ranked": None}}}
        self.data_loaded = True

    metadata = TaskMetadata(
        name="BeirFolder", description="a BEIR folder read directly", dataset={"path": "local/beir", "revision": "1"},
        type="Retrieval", category="t2t", modalities=["text"], eval_splits=[split], eval_langs=["eng-Latn"],
        main_score="ndcg_at_10", date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None,
        dialect=None, sample_creation=None, bibtex_citation=None, reference=None)
    task = type("BeirFolder", (AbsTaskRetrieval,), {"metadata": metadata, "load_data": load})()
    model = SentenceTransformer(resolve_packaged(TEACHER), device="cpu")
    result = mteb.evaluate(model, tasks=[task], cache=None, show_progress_bar=False)
    return result.task_results[0].scores[split][0]["ndcg_at_10"]
