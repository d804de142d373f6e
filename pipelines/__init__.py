"""Quarry pipelines: the Ray stages, their orchestration and the ``quarry`` CLI (the top layer).

Each stage is a typed config and one function; ``pipelines.cli`` only parses arguments
into these configs and calls them. The names below are imported on first use, so a
``quarry query`` does not pay for torch. Two stage functions share their module's name
and are imported from it: ``from pipelines.mine import mine``, ``from pipelines.train import train``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BuildResult": "pipelines.wiki", "WikiBuildConfig": "pipelines.wiki", "build_wiki": "pipelines.wiki",
    "SourceConfig": "pipelines.sources",
    "TaskSetSpec": "pipelines.task_spec", "TaskSpec": "pipelines.task_spec", "load_task_set": "pipelines.task_spec",
    "parse_task_set": "pipelines.task_spec",
    "build_tasks": "pipelines.tasks",
    "MineConfig": "pipelines.mine", "MineResult": "pipelines.mine",
    "ExportConfig": "pipelines.export", "ExportResult": "pipelines.export", "export_shards": "pipelines.export",
    "TrainResult": "pipelines.train", "load_train_config": "pipelines.train",
    "EncodeConfig": "pipelines.encode", "encode_file": "pipelines.encode",
    "MainJobConfig": "pipelines.main_job", "run_main_job": "pipelines.main_job",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
