"""Quarry pipelines: Ray Data stages, orchestration and the ``quarry`` CLI (the top layer)."""

from pipelines.sources import SourceConfig
from pipelines.task_spec import TaskSetSpec, TaskSpec, load_task_set, parse_task_set
from pipelines.tasks import build_tasks
from pipelines.wiki import BuildResult, WikiBuildConfig, build_wiki

__all__ = ["BuildResult", "SourceConfig", "TaskSetSpec", "TaskSpec", "WikiBuildConfig", "build_tasks",
           "build_wiki", "load_task_set", "parse_task_set"]
