"""Quarry's examples as mteb tasks: mteb's own task classes, fed from Parquet through
``load_data`` (mteb's documented way to evaluate local data), so the metrics are mteb's.

| task type      | mteb class              | eval data                                         | main score   |
|----------------|-------------------------|---------------------------------------------------|--------------|
| retrieval      | AbsTaskRetrieval        | split's queries vs the task's *whole* corpus       | ndcg_at_10   |
| classification | AbsTaskClassification   | logistic regression fit on train, scored on split | accuracy     |
| clustering     | AbsTaskClustering       | mini-batch k-means over the split, every document | v_measure    |
| sts            | AbsTaskSTS              | split's pairs                                      | cosine_spearman |

Which texts get an instruction is the encoder's business (``evaluation.encoder``): mteb
only says whether it asks for queries, documents, or neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.schemas import CLASSIFICATION, CLUSTERING, RETRIEVAL, STS

MAIN_SCORE = {RETRIEVAL: "ndcg_at_10", CLASSIFICATION: "accuracy", CLUSTERING: "v_measure", STS: "cosine_spearman"}
# What Quarry reports per task type, named as mteb names them.
METRICS = {RETRIEVAL: ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"),
           CLASSIFICATION: ("accuracy",), CLUSTERING: ("v_measure",), STS: ("cosine_spearman",)}
EVALUABLE_TYPES = tuple(METRICS)
_MTEB_TYPE = {RETRIEVAL: "Retrieval", CLASSIFICATION: "Classification", CLUSTERING: "Clustering", STS: "STS"}
SUBSET = "default"


@dataclass
class TaskData:
    """One task's evaluation data, as plain lists (built by ``pipelines.evaluate``)."""

    name: str
    task_type: str
    split: str  # the split scored
    instruction: str  # the task's instruction, as in training
    # retrieval
    queries: dict[str, str] = field(default_factory=dict)  # query id -> text
    corpus: dict[str, str] = field(default_factory=dict)  # doc id -> text
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)  # query id -> {doc id: 1}
    # classification (train fits), clustering (texts/labels only), sts (pairs)
    train_texts: list[str] = field(default_factory=list)
    train_labels: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def query_texts(self) -> list[str]:
        """Texts encoded on the query side (they get the instruction)."""
        if self.task_type == RETRIEVAL:
            return list(self.queries.values())
        if self.task_type == STS:
            return [t for pair in self.pairs for t in pair]
        return self.train_texts + self.texts

    def document_texts(self) -> list[str]:
        return list(self.corpus.values()) if self.task_type == RETRIEVAL else []


def _metadata(data: TaskData, version: str):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=data.name, description=f"Quarry examples task {data.name} ({data.task_type})",
        dataset={"path": f"quarry/{data.name}", "revision": version}, type=_MTEB_TYPE[data.task_type],
        category="t2t", modalities=["text"], eval_splits=[data.split], eval_langs=["eng-Latn"],
        main_score=MAIN_SCORE[data.task_type], date=None, domains=None, task_subtypes=None, license=None,
        annotations_creators=None, dialect=None, sample_creation=None, bibtex_citation=None, reference=None)


def mteb_task(data: TaskData, version: str = "local"):
    """An mteb task instance holding ``data``, ready for ``mteb.evaluate``."""
    from datasets import Dataset
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.clustering import AbsTaskClustering
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    split = data.split
    if data.task_type == RETRIEVAL:
        def load(self, **kwargs):
            self.dataset = {SUBSET: {split: {
                "corpus": Dataset.from_dict({"id": list(data.corpus), "text": list(data.corpus.values())}),
                "queries": Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())}),
                "relevant_docs": data.qrels, "top_ranked": None}}}
            self.data_loaded = True
        base, attrs = AbsTaskRetrieval, {}
    elif data.task_type == CLASSIFICATION:
        # mteb's protocol: logistic regression (max_iter 100) on embeddings, fit on an
        # undersample of the train split (samples_per_label per class), n_experiments times.
        # Classes of the scored split first: mteb takes a split with two classes for a binary
        # task whose positive label is 1, so those two must be 0 and 1.
        scored = set(data.labels)
        labels = sorted(set(data.train_labels) | scored, key=lambda x: (x not in scored, x))
        index = {label: i for i, label in enumerate(labels)}

        def load(self, **kwargs):
            self.dataset = {SUBSET: {
                "train": Dataset.from_dict({"text": data.train_texts, "label": [index[x] for x in data.train_labels]}),
                split: Dataset.from_dict({"text": data.texts, "label": [index[x] for x in data.labels]})}}
            self.data_loaded = True
        base, attrs = AbsTaskClassification, {}
    elif data.task_type == CLUSTERING:
        def load(self, **kwargs):
            self.dataset = {SUBSET: {split: Dataset.from_dict({"sentences": data.texts, "labels": data.labels})}}
            self.data_loaded = True
        # Every document of the split is clustered (mteb's default embeds a 4% sample).
        base, attrs = AbsTaskClustering, {"max_fraction_of_documents_to_embed": None}
    elif data.task_type == STS:
        def load(self, **kwargs):
            self.dataset = {SUBSET: {split: Dataset.from_dict({
                "sentence1": [a for a, _ in data.pairs], "sentence2": [b for _, b in data.pairs],
                "score": data.scores})}}
            self.data_loaded = True
        lo, hi = (min(data.scores), max(data.scores)) if data.scores else (0.0, 1.0)
        base, attrs = AbsTaskSTS, {"min_score": lo, "max_score": hi}
    else:
        raise ValueError(f"no evaluator for task type {data.task_type!r}")
    if data.task_type == CLASSIFICATION and split == "train":
        raise ValueError("classification fits on the train split: evaluate another split")
    cls = type(f"Quarry_{data.task_type}", (base,), {"metadata": _metadata(data, version), "load_data": load,
                                                    **attrs})
    return cls()
