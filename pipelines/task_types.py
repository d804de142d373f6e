"""The kinds of instruction task Quarry builds, and what each stage does with them.

Read by the task-spec parser, the task builder, the miner and the export, so none of them
reaches into another for these names.
"""

from __future__ import annotations

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
