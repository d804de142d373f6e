"""Quarry pipelines: the Ray stages, their orchestration and the ``quarry`` CLI (the top layer).

One package per stage, each a typed config and one function:

- ``build``: corpora and instruction-task examples (``build wiki``, ``build tasks``, ``refresh``);
- ``mine``: hard negatives (``quarry mine``);
- ``train``: shards and training on Ray Train (``export``, ``train``, ``sweep-layers``);
- ``evaluate``: mteb scores, embeddings, the run report (``eval``, ``encode``);
- ``runtime``: what they all run on (Ray, ordered writes, the encoding service, jobs);
- ``cli``: the ``quarry`` command, parsing into the configs above;

and two modules: ``run`` (``quarry run``, every stage in a row) and ``inputs`` (which
tasks of an examples dataset a stage takes). The names below are imported on first use
(the stage functions are imported from their packages: ``from pipelines.mine import mine``),
so ``quarry query`` does not pay for torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BuildResult": "pipelines.builders", "WikiBuildConfig": "pipelines.builders", "build_wiki": "pipelines.builders",
    "SourceConfig": "pipelines.builders", "TaskSetSpec": "pipelines.builders", "TaskSpec": "pipelines.builders",
    "load_task_set": "pipelines.builders", "parse_task_set": "pipelines.builders", "build_tasks": "pipelines.builders",
    "MineConfig": "pipelines.mine", "MineResult": "pipelines.mine",
    "ExportConfig": "pipelines.train", "ExportResult": "pipelines.train", "export_shards": "pipelines.train",
    "TrainResult": "pipelines.train", "load_train_config": "pipelines.train",
    "EvalConfig": "pipelines.evaluate", "EvalResult": "pipelines.evaluate",
    "EncodeConfig": "pipelines.evaluate.encode", "encode_file": "pipelines.evaluate.encode",
    "MainJobConfig": "pipelines.run", "run_main_job": "pipelines.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
