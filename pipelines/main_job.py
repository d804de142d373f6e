"""``quarry run``: the main job on the embedded default, as five stages in a row.

    quarry run [--limit N] [--spec configs/tasks/vital.yaml] [--train-config configs/train/cpu-minilm.yaml]

1. corpus from the embedded Wikipedia vital articles (``build_wiki``);
2. instruction tasks from the spec (``build_tasks``);
3. hard negatives for every minable task (``mine``), with ``MineConfig``'s defaults;
4. stage-1 training shards cut for the training config's workers and global batch;
5. contrastive training: resumed if an earlier run has a checkpoint, skipped if finished.

Every stage recognises unchanged inputs, so a second run costs little. Each stage's result
is printed as it finishes; the benchmarks and later stages call ``run_main_job`` too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from pipelines.export import ExportConfig, export_shards
from pipelines.mine import MineConfig, mine
from pipelines.sources import SourceConfig
from pipelines.task_spec import load_task_set
from pipelines.tasks import build_tasks
from pipelines.train import discard_uncheckpointed_run, load_train_config, run_state, train
from pipelines.wiki import WikiBuildConfig, build_wiki
from storage import Catalog, InputError, print_query

log = logging.getLogger("quarry")

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_TASK_SPEC = os.path.join(_CONFIGS, "tasks", "vital.yaml")
DEFAULT_TRAIN_CONFIG = os.path.join(_CONFIGS, "train", "cpu-minilm.yaml")
EXAMPLE_COUNTS_SQL = "select task, task_type, count(*) as examples from examples group by all order by task"


@dataclass
class MainJobConfig:
    spec: str = DEFAULT_TASK_SPEC  # task spec (configs/tasks/*.yaml)
    train_config: str = DEFAULT_TRAIN_CONFIG  # training config (configs/train/*.yaml)
    limit: int | None = None  # first N embedded articles only (quick trials)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be positive, got {self.limit}")


def run_main_job(cfg: MainJobConfig, catalog: Catalog, show: Callable[[str], None] = print) -> None:
    """Run the five stages; ``show`` receives each stage's result as text."""
    spec = load_task_set(cfg.spec)
    train_cfg = load_train_config(cfg.train_config, {"shards": f"{spec.name}-stage1"})
    corpus = spec.corpus or spec.name

    log.info("quarry run: 1/5 corpus/%s from the embedded Wikipedia vital articles", corpus)
    show(build_wiki(WikiBuildConfig(name=corpus, source=SourceConfig(limit=cfg.limit)), catalog).summary())

    log.info("quarry run: 2/5 instruction tasks from %s", os.path.relpath(cfg.spec))
    show(build_tasks(spec, catalog).summary())

    mine_cfg = MineConfig(examples=spec.name)
    sel = mine_cfg.selection
    log.info("quarry run: 3/5 hard negatives (teacher %s; %s, margin %s, %d per query)", mine_cfg.teacher.teacher,
             sel.strategy, sel.effective_margin, sel.num_negatives)
    show(mine(mine_cfg, catalog).summary())

    # The shards are cut for the training run: its workers, and its global batch if it names one.
    export_cfg = ExportConfig(name=train_cfg.shards, examples=spec.name, training_stage=1,
                              workers=train_cfg.num_workers,
                              **({"global_batch": train_cfg.global_batch} if train_cfg.global_batch else {}))
    log.info("quarry run: 4/5 stage-1 training shards, global batches of %d over %d workers",
             export_cfg.global_batch, export_cfg.workers)
    show(export_shards(export_cfg, catalog).summary())

    state = run_state(train_cfg, catalog)
    if state.finished:
        show(f"train: run {train_cfg.run_name} already finished ({state.done} steps); model in "
             f"{catalog.root.path('models', train_cfg.run_name)} (delete runs/{train_cfg.run_name} to train again)")
    else:
        if state.done is None:
            discard_uncheckpointed_run(train_cfg, catalog)
        log.info("quarry run: 5/5 contrastive training, %s", os.path.relpath(cfg.train_config))
        show(train(train_cfg, catalog, resume=state.done is not None).summary())
    print_query(catalog, EXAMPLE_COUNTS_SQL)
