"""``quarry export --format sentence-transformers|flagembedding``: mined data for other trainers.

    quarry export --format sentence-transformers [--layout n-tuple] [--with-scores]
    quarry export --format flagembedding [--with-scores]

Each example of the split (``train`` by default) with at least ``--num-negatives`` mined
negatives becomes one row (``pipelines.train.formats`` says what each layout holds); the
best ``--num-negatives`` by teacher rank are kept. The result is a catalog dataset,
``exports/<name>``, whose version folder holds:

- ``part-NNNNN.parquet``: one file per task, in the layout, in the order of the manifest's
  ``config.tasks`` (``datasets.load_dataset("parquet", data_files=...)`` reads them);
- sentence-transformers: ``hf/``, a ``datasets.DatasetDict`` with one dataset per task
  (``datasets.load_from_disk``), and ``prompts.json``, the task instructions keyed as
  ``SentenceTransformerTrainingArguments(prompts=...)`` takes them (dataset, then column);
- flagembedding: ``<task>.jsonl``, one JSON object per query, with its ``prompt``.

The manifest records the examples, negatives and corpus versions read, as every dataset's
does. Tested by ``tests/pipelines/test_beir_round_trip.py``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.inputs import choose_tasks, examples_corpus, tasks_in
from pipelines.train.formats import MinedExample, dataset_name, flagembedding_line, sentence_transformers_table
from storage import Catalog, InputError, InputRef, Manifest
from storage.schemas import MINABLE_TYPES, RETRIEVAL

log = logging.getLogger("quarry")

KIND = "exports"
PROMPTS = "prompts.json"
HF_DIR = "hf"


@dataclass
class FormatExportResult:
    manifest: Manifest
    folder: str  # the version folder, as a user names it
    examples: dict[str, int]  # task -> examples exported
    short_of_negatives: dict[str, int]  # task -> examples left out for want of negatives

    def summary(self) -> str:
        m = self.manifest
        lines = [f"  {task}: {n} examples, {self.short_of_negatives[task]} short of negatives"
                 for task, n in self.examples.items()]
        how = ("datasets.load_from_disk(FOLDER/hf); prompts in FOLDER/prompts.json" if m.config["format"] ==
               "sentence-transformers" else "FOLDER/<task>.jsonl")
        layout = m.config["format"] + (f" {m.config['layout']}" if m.config["format"] == "sentence-transformers" else "")
        return "\n".join(lines + [f"exports/{m.name}: committed {m.version}: {m.num_rows} rows, {layout}; "
                                  f"FOLDER = {self.folder} ({how})"])


def export_for_trainers(cfg, catalog: Catalog) -> FormatExportResult:
    """``cfg``: an ``ExportConfig`` with another trainer's format."""
    inputs: list[InputRef] = []
    examples = _examples_by_task(catalog, cfg, inputs)
    written: dict[str, int] = {}
    short: dict[str, int] = {}
    tables: dict[str, pa.Table] = {}
    lines: dict[str, list[dict]] = {}
    for task, mined in examples.items():
        kept = [e for e in mined if len(e.negatives) >= cfg.num_negatives]
        short[task], written[task] = len(mined) - len(kept), len(kept)
        if kept:
            tables[task] = sentence_transformers_table(kept, cfg.layout, cfg.with_scores)
            lines[task] = [flagembedding_line(e, cfg.with_scores) for e in kept]
    if not tables:
        raise InputError(f"no example of the {cfg.split} split has {cfg.num_negatives} mined negatives: mine first, "
                         "or lower --num-negatives")
    instructions = {task: examples[task][0].instruction for task in tables}
    manifest = _commit(cfg, catalog, tables, lines, instructions, inputs, written, short)
    folder = catalog.root.display(catalog.root.path(KIND, cfg.name, manifest.version))
    return FormatExportResult(manifest, folder, written, short)


def _examples_by_task(catalog: Catalog, cfg, inputs: list[InputRef]) -> dict[str, list[MinedExample]]:
    """Every example of the split with its positives' texts and its negatives, best first."""
    ex_m = catalog.manifest("examples", cfg.examples)
    inputs.append(ex_m.input_ref())
    examples = catalog.read_table("examples", cfg.examples, ex_m.version,
                                  columns=["task", "task_type", "example_id", "split", "instruction", "query",
                                           "positive_ids", "positive"])
    examples = examples.filter(pc.equal(examples.column("split"), cfg.split))
    types = choose_tasks(tasks_in(examples), cfg.tasks, MINABLE_TYPES, f"examples/{cfg.examples} (split {cfg.split})",
                         f"the {cfg.format} export takes")
    doc_text: dict[str, str] = {}
    if RETRIEVAL in types.values():
        corpus_m = examples_corpus(catalog, ex_m)
        corpus = catalog.read_table("corpus", corpus_m.name, corpus_m.version, columns=["doc_id", "text"])
        doc_text = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("text").to_pylist()))
        inputs.append(corpus_m.input_ref())
    negatives = _negatives(catalog, cfg, inputs)
    out: dict[str, list[MinedExample]] = defaultdict(list)
    for r in examples.to_pylist():
        if r["task"] not in types:
            continue
        mined = sorted(negatives.get(r["example_id"], []))[:cfg.num_negatives]
        positives = [doc_text[p] for p in r["positive_ids"]] if r["task_type"] == RETRIEVAL else [r["positive"]]
        anchor_id, anchor_score = (mined[0][3], mined[0][4]) if mined else (None, None)
        anchor = doc_text.get(anchor_id, positives[0]) if r["task_type"] == RETRIEVAL else positives[0]
        out[r["task"]].append(MinedExample(
            task=r["task"], instruction=r["instruction"] or "", query=r["query"], positive=anchor,
            positive_score=anchor_score, positives=tuple([anchor] + [p for p in positives if p != anchor]),
            negatives=tuple(m[1] for m in mined), negative_scores=tuple(m[2] for m in mined)))
    return out


def _negatives(catalog: Catalog, cfg, inputs: list[InputRef]) -> dict[str, list[tuple]]:
    """example id -> (rank, text, score, anchor positive id, anchor positive score) per negative."""
    name = cfg.negatives or cfg.examples
    m = catalog.manifest("negatives", name)
    inputs.append(m.input_ref())
    table = catalog.read_table("negatives", name, m.version, columns=["example_id", "neg_rank", "neg_text", "neg_score",
                                                                      "positive_id", "positive_score"])
    out: dict[str, list[tuple]] = defaultdict(list)
    for eid, *rest in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        out[eid].append(tuple(rest))
    return out


def _commit(cfg, catalog: Catalog, tables: dict[str, pa.Table], lines: dict[str, list[dict]],
            instructions: dict[str, str], inputs: list[InputRef], written: dict[str, int],
            short: dict[str, int]) -> Manifest:
    tasks = list(tables)
    config = {"built_by": "quarry export", **asdict(cfg), "tasks": tasks,
              "datasets": {task: dataset_name(task) for task in tasks}}
    with catalog.writer(KIND, cfg.name) as writer:
        for table in tables.values():  # one part per task, in the order of config["tasks"]
            writer.write_table(table, max_rows_per_file=max(1, table.num_rows))
        if cfg.format == "flagembedding":
            for task in tasks:
                writer.attach(f"{task}.jsonl", "".join(json.dumps(line, ensure_ascii=False) + "\n"
                                                       for line in lines[task]).encode("utf-8"))
        else:
            prompts = {dataset_name(t): {"anchor": instructions[t]} for t in tasks if instructions[t]}
            writer.attach(PROMPTS, json.dumps(prompts, indent=2, ensure_ascii=False).encode("utf-8"))
            _attach_dataset_dict(writer, tables)
        return writer.commit(config=config, inputs=inputs,
                             stats={task: {"examples": written[task], "short_of_negatives": short[task]}
                                    for task in written})


def _attach_dataset_dict(writer, tables: dict[str, pa.Table]) -> None:
    """The tables as one ``datasets.DatasetDict`` saved with ``save_to_disk``, in ``hf/``."""
    import datasets

    dd = datasets.DatasetDict({dataset_name(task): datasets.Dataset(table) for task, table in tables.items()})
    with tempfile.TemporaryDirectory(prefix="quarry-export-") as tmp:
        dd.save_to_disk(tmp)
        writer.attach_dir(HF_DIR, tmp)
