"""The published data contracts: the columns of every dataset kind a user reads, and the
kinds of instruction task.

Every layer reads these names from here: the stage that writes a kind, the stage that reads
it, ``quarry query``'s users through the docs, and the tests. Kept in the bottom layer so
that no layer spells out another's columns. The training shards are the one exception:
their reader is the trainer, so their schema lives with it (``trainers.shards``).
"""

from __future__ import annotations

import pyarrow as pa

# -- task types ---------------------------------------------------------------------------
RETRIEVAL = "retrieval"
CLASSIFICATION = "classification"
CLUSTERING = "clustering"
STS = "sts"
PAIR = "pair"
TASK_TYPES = (RETRIEVAL, CLASSIFICATION, CLUSTERING, STS, PAIR)

# Labelled tasks: an example's positive is another example of its class (NV-Embed-v2), and
# a candidate of the query's own class is a false negative.
CLASS_TYPES = (CLASSIFICATION, CLUSTERING)
# Hard negatives are mined for these; STS and pair tasks bring their own pairs.
MINABLE_TYPES = (RETRIEVAL, *CLASS_TYPES)
# NV-Embed's two training stages: retrieval alone, then retrieval blended with the class
# tasks (whose global batches turn in-batch negatives off).
TRAINING_STAGE_TYPES = {1: (RETRIEVAL,), 2: (RETRIEVAL, *CLASS_TYPES)}


def allows_in_batch_negatives(task_type: str) -> bool:
    """Other queries' documents are negatives only in retrieval batches: with few-class
    labels, another example of the batch is often of the query's own class."""
    return task_type == RETRIEVAL


# -- corpus/<name> --------------------------------------------------------------------------
def corpus_schema(metadata_columns: tuple[str, ...] = (), passages: bool = False) -> pa.Schema:
    """``corpus/<name>``: one row per document (or passage, when texts were split).
    ``source_id`` is the document's id in the user's own collection (null without one)."""
    fields = [("doc_id", pa.string()), ("source_id", pa.string()), ("title", pa.string()), ("text", pa.string()),
              ("lang", pa.string()), ("source", pa.string()), ("content_hash", pa.string())]
    if passages:
        fields += [("parent_id", pa.string()), ("passage_index", pa.int32())]
    fields += [(c, pa.string()) for c in metadata_columns]
    return pa.schema(fields)


# -- examples/<name> ------------------------------------------------------------------------
# ``source_id``: the query's id in the user's data (null without one); ``positive_grades``:
# the relevance grade of each of ``positive_ids`` where qrels gave one (null: all relevant).
EXAMPLES_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()), ("source_id", pa.string()),
    ("split", pa.string()), ("instruction", pa.string()), ("query", pa.string()),
    ("query_hash", pa.string()), ("positive_ids", pa.list_(pa.string())), ("positive_grades", pa.list_(pa.int64())),
    ("positive", pa.string()), ("label", pa.string()), ("score", pa.float64()),
])

# -- negatives/<name>, rejections/<name>, searched/<name> (quarry mine) ----------------------
# ``query_source_id``, ``neg_source_id``, ``cand_source_id``: the user's own ids of the query
# and the candidate (null where the data had none), to join mined rows back to their collection.
# ``*_judge_score`` and ``judge``: a judge's scores where one rescored the candidates (null
# otherwise); the threshold is then on the judge's scale.
NEGATIVE_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()),
    ("query_source_id", pa.string()), ("query", pa.string()),
    ("positive_id", pa.string()), ("positive_score", pa.float32()), ("neg_id", pa.string()),
    ("neg_source_id", pa.string()), ("neg_text", pa.string()), ("neg_score", pa.float32()), ("neg_rank", pa.int32()),
    ("label", pa.string()),
    ("neg_label", pa.string()), ("strategy", pa.string()), ("threshold", pa.float32()), ("teacher", pa.string()),
    ("run_id", pa.string()), ("positive_judge_score", pa.float32()), ("neg_judge_score", pa.float32()),
    ("judge", pa.string()),
])
REJECTION_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()),
    ("query_source_id", pa.string()), ("query", pa.string()),
    ("positive_id", pa.string()), ("positive_score", pa.float32()), ("cand_id", pa.string()),
    ("cand_source_id", pa.string()), ("cand_text", pa.string()), ("cand_score", pa.float32()),
    ("cand_rank", pa.int32()), ("label", pa.string()),
    ("cand_label", pa.string()), ("reason", pa.string()), ("strategy", pa.string()), ("threshold", pa.float32()),
    ("teacher", pa.string()), ("run_id", pa.string()), ("positive_judge_score", pa.float32()),
    ("cand_judge_score", pa.float32()), ("judge", pa.string()),
])
# One row per mined query: the depth it was searched at and its k-th score, beside the anchor
# positive score and threshold selection applied (what a re-mine needs to reuse the search).
SEARCHED_SCHEMA = pa.schema([("task", pa.string()), ("example_id", pa.string()), ("depth", pa.int32()),
                             ("kth_score", pa.float32()), ("positive_score", pa.float64()),
                             ("threshold", pa.float64())])

# -- drift/<name>: how a re-mine moved each query's negatives --------------------------------
DRIFT_SCHEMA = pa.schema([
    ("task", pa.string()), ("example_id", pa.string()), ("change", pa.string()), ("jaccard", pa.float64()),
    ("previous_negatives", pa.int32()), ("negatives", pa.int32()), ("previous_version", pa.string()),
    ("version", pa.string()),
])

# -- embeddings/<model-key>: the embedding cache ---------------------------------------------
def embeddings_schema(dim: int) -> pa.Schema:
    """``key`` is the hash of the exact string encoded, ``embedding`` its vector."""
    return pa.schema([("key", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])


# -- evals/<examples>: every score quarry eval recorded ---------------------------------------
EVALS_SCHEMA = pa.schema([
    ("model", pa.string()), ("model_kind", pa.string()), ("model_fingerprint", pa.string()), ("task", pa.string()),
    ("task_type", pa.string()), ("split", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("examples", pa.string()), ("examples_version", pa.string()),
])
