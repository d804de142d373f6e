"""Building datasets: corpora and instruction-task examples, and rebuilding them.

    quarry build wiki [--source embedded|hf|files]   # corpus.build_wiki
    quarry build tasks --spec FILE.yaml              # tasks.build_tasks
    quarry refresh                                   # refresh.refresh

Reading order: ``sources`` (raw rows from the embedded set, Hugging Face or files) ->
``documents`` (cleaning, ids, passages) -> ``corpus`` (the Ray stage, de-duplication);
``task_spec`` (the YAML) -> ``task_rows`` (rows per task) -> ``task_plan`` (what survives,
class pairing) -> ``tasks`` (the Ray stage); ``refresh`` runs both again from what their
manifests recorded. ``result`` is what each build hands back.
"""

from pipelines.builders.corpus import WikiBuildConfig, build_wiki
from pipelines.builders.refresh import RefreshConfig, refresh
from pipelines.builders.result import BuildResult
from pipelines.builders.sources import SourceConfig
from pipelines.builders.task_spec import TaskSetSpec, TaskSpec, load_task_set, parse_task_set
from pipelines.builders.tasks import build_tasks

__all__ = ["BuildResult", "RefreshConfig", "SourceConfig", "TaskSetSpec", "TaskSpec", "WikiBuildConfig", "build_tasks",
           "build_wiki", "load_task_set", "parse_task_set", "refresh"]
