"""``quarry run``: the main job on the embedded default, as six stages in a row.

    quarry run [--limit N] [--spec configs/tasks/vital.yaml] [--train-config configs/train/cpu-minilm.yaml]

1. corpus from the embedded Wikipedia vital articles (``build_wiki``);
2. instruction tasks from the spec (``build_tasks``);
3. hard negatives for every minable task (``mine``), with ``MineConfig``'s defaults;
4. stage-1 training shards cut for the training config's workers and global batch;
5. contrastive training: resumed if an earlier run has a checkpoint, skipped if finished;
6. ``quarry eval`` of the teacher and the trained model on the test split, a verdict, and
   ``runs/<run>/report.md``.

Every stage recognises unchanged inputs, so a second run costs little. Each stage's result
is printed as it finishes; the benchmarks and later stages call ``run_main_job`` too.

Tested by tests/pipelines/test_s3_root.py (the whole job on an object store).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

from pipelines.builders import SourceConfig, WikiBuildConfig, build_tasks, build_wiki, load_task_set
from pipelines.evaluate import EvalConfig, evaluate
from pipelines.evaluate.report import verdict, write_run_report
from pipelines.mine import MineConfig, mine
from pipelines.train import ExportConfig, export_shards, load_train_config, train
from pipelines.train.run_state import discard_uncheckpointed_run, run_state
from storage import Catalog, ConfigError, print_query

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
            raise ConfigError("limit", f"must be positive, got {self.limit}")


def run_main_job(cfg: MainJobConfig, catalog: Catalog, show: Callable[[str], None] = print) -> None:
    """Run the six stages; ``show`` receives each stage's result as text."""
    spec = load_task_set(cfg.spec)
    train_cfg = load_train_config(cfg.train_config, {"shards": f"{spec.name}-stage1"})
    corpus = spec.corpus or spec.name
    summaries: list[str] = []

    def stage_done(text: str) -> None:
        summaries.append(text)
        show(text)

    log.info("quarry run: 1/6 corpus/%s from the embedded Wikipedia vital articles", corpus)
    stage_done(build_wiki(WikiBuildConfig(name=corpus, source=SourceConfig(limit=cfg.limit)), catalog).summary())

    log.info("quarry run: 2/6 instruction tasks from %s", os.path.relpath(cfg.spec))
    stage_done(build_tasks(spec, catalog).summary())

    mine_cfg = MineConfig(examples=spec.name)
    sel = mine_cfg.selection
    log.info("quarry run: 3/6 hard negatives (teacher %s; %s, margin %s, %d per query)", mine_cfg.teacher.teacher,
             sel.strategy, sel.effective_margin, sel.num_negatives)
    mined = mine(mine_cfg, catalog)
    stage_done(mined.summary())

    # The shards are cut for the training run: its workers, and its global batch if it names one.
    export_cfg = ExportConfig(name=train_cfg.shards, examples=spec.name, training_stage=1,
                              workers=train_cfg.num_workers,
                              **({"global_batch": train_cfg.global_batch} if train_cfg.global_batch else {}))
    log.info("quarry run: 4/6 stage-1 training shards, global batches of %d over %d workers",
             export_cfg.global_batch, export_cfg.workers)
    shards = export_shards(export_cfg, catalog)
    stage_done(shards.summary())

    state = run_state(train_cfg, catalog)
    model_dir = catalog.root.display(catalog.root.path("models", train_cfg.run_name))
    if state.finished:
        stage_done(f"train: run {train_cfg.run_name} already finished ({state.done} steps); model in {model_dir} "
                   f"(delete runs/{train_cfg.run_name} to train again)")
    else:
        if state.done is None:
            discard_uncheckpointed_run(train_cfg, catalog)
        log.info("quarry run: 5/6 contrastive training, %s", os.path.relpath(cfg.train_config))
        stage_done(train(train_cfg, catalog, resume=state.done is not None).summary())
    print_query(catalog, EXAMPLE_COUNTS_SQL)

    # 6: the teacher against the model it taught, on the test split: what the data was worth.
    teacher = mine_cfg.teacher.teacher
    log.info("quarry run: 6/6 evaluation on the test split: teacher %s vs %s", teacher, train_cfg.run_name)
    # The run name resolves to <root>/models/<run>, and names the model in the table.
    result = evaluate(EvalConfig(models=[teacher, train_cfg.run_name], examples=spec.name, split="test"), catalog)
    show(result.summary())
    judged = verdict(result, result.models[0], result.models[1], shards.trained_tasks)
    show(judged.text())
    run_dir = catalog.root.path("runs", train_cfg.run_name)
    report = write_run_report(catalog, run_dir, judged, result, (mined.negatives.name, mined.negatives.version),
                              summaries)
    show(f"report: {report}")
