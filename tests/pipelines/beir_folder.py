"""A small BEIR folder made from the embedded Wikipedia, for the tests that read one."""

import json
import os

from pipelines.builders.sources import load_embedded_table

SPLIT_OF = {0: "test", 1: "dev"}  # by index mod 5; the rest: train
GRADED = 2  # this query (in train) judges its own article 2 and the next one 1


def write_beir(folder, articles: int = 60) -> dict:
    """``corpus.jsonl`` (``doc-<i>``: title, extract), ``queries.jsonl`` (``q-<i>``: the
    article's description) and ``qrels/{train,dev,test}.tsv``; query 0 also judges article 1
    (grade 1, its own article grade 2), and each file ends with a line naming a query that
    is not in ``queries.jsonl``. Returns what was written."""
    table = load_embedded_table("en", articles * 2).to_pylist()
    rows = [r for r in table if r["description"]][:articles]
    os.makedirs(os.path.join(folder, "qrels"), exist_ok=True)
    corpus = {f"doc-{i}": {"_id": f"doc-{i}", "title": r["title"], "text": r["extract"]} for i, r in enumerate(rows)}
    queries = {f"q-{i}": {"_id": f"q-{i}", "text": r["description"]} for i, r in enumerate(rows)}
    qrels = {"train": [], "dev": [], "test": []}
    for i in range(len(rows)):
        split = SPLIT_OF.get(i % 5, "train")
        qrels[split].append((f"q-{i}", f"doc-{i}", 2 if i == GRADED else 1))
        if i == GRADED:
            qrels[split].append((f"q-{i}", f"doc-{i + 1}", 1))
    for split in qrels:
        qrels[split].append((f"q-nowhere-{split}", "doc-0", 1))
    _jsonl(os.path.join(folder, "corpus.jsonl"), corpus.values())
    _jsonl(os.path.join(folder, "queries.jsonl"), queries.values())
    for split, lines in qrels.items():
        with open(os.path.join(folder, "qrels", f"{split}.tsv"), "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{d}\t{s}\n" for q, d, s in lines)
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def _jsonl(path, rows) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
