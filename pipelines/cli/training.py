"""The training commands: ``export``, ``train``, ``sweep-layers`` and ``lineage``. Tested
through the real CLI by ``tests/pipelines/cli/test_cli_errors.py``."""

from __future__ import annotations

from pipelines.cli.options import Command, build, comma_list
from pipelines.train.export import ExportConfig
from pipelines.train.formats import FORMATS, LAYOUTS
from pipelines.train.layer_sweep import SweepConfig
from storage import Catalog


def cmd_export(args, catalog: Catalog) -> None:
    from pipelines.train.export import export

    cfg = build(ExportConfig, name=args.name, examples=args.examples, negatives=args.negatives,
                training_stage=args.stage, global_batch=args.global_batch, workers=args.workers,
                num_negatives=args.num_negatives, seed=args.seed, tasks=comma_list(args.tasks), split=args.split,
                format=args.format, layout=args.layout, with_scores=args.with_scores)
    print(export(cfg, catalog).summary())


def cmd_train(args, catalog: Catalog) -> None:
    from pipelines.train.launch import load_train_config, train

    cfg = load_train_config(args.config, {"max_steps": args.max_steps, "shards": args.shards, "corpus": args.corpus,
                                          "run_name": args.run_name, "init_from": args.init_from})
    print(train(cfg, catalog, resume=args.resume, stop_after=args.stop_after).summary())


def cmd_sweep_layers(args, catalog: Catalog) -> None:
    from pipelines.train.launch import load_train_config
    from pipelines.train.layer_sweep import sweep_layers

    cfg = load_train_config(args.config, {"shards": args.shards, "init_from": args.init_from})
    print(sweep_layers(cfg, build(SweepConfig, batches=args.batches), catalog).summary())


def cmd_lineage(args, catalog: Catalog) -> None:
    from trainers.lineage import chain, format_chain

    print(format_chain(args.model, chain(catalog.root, args.model)))


def add_commands(sub) -> None:
    ex = Command(sub.add_parser("export", help="examples + negatives as training data: Quarry's packed shards, or "
                                               "sentence-transformers' or FlagEmbedding's format"), cmd_export)
    ex.option("--format", "format", cls=ExportConfig, choices=FORMATS,
              help="quarry: packed shards for quarry train; sentence-transformers: a datasets folder, Parquet and "
                   "prompts; flagembedding: JSONL per task (default %(default)s)")
    ex.option("--layout", "layout", cls=ExportConfig, choices=LAYOUTS,
              help="sentence-transformers layout (default %(default)s)")
    ex.option("--with-scores", "with_scores", action="store_true", help="the teacher's scores beside the texts "
                                                                        "(sentence-transformers, flagembedding)")
    ex.option("--split", "split", cls=ExportConfig, help="the examples' split to export (default %(default)s)")
    ex.option("--name", "name", help="dataset name (default <examples>-stage<N> for shards, <examples>-<format> "
                                     "for the others)")
    ex.option("--examples", "examples", cls=ExportConfig, help="examples dataset (default %(default)s)")
    ex.option("--negatives", "negatives", help="negatives dataset (default: the examples name)")
    ex.option("--stage", "training_stage", cls=ExportConfig, choices=[1, 2],
              help="NV-Embed training stage: 1 retrieval tasks only; 2 every task, in-batch negatives off for class "
                   "tasks (default %(default)s)")
    ex.option("--global-batch", "global_batch", cls=ExportConfig, help="queries per global batch (default %(default)s)")
    ex.option("--workers", "workers", cls=ExportConfig, help="training workers the batches are cut for (default "
                                                             "%(default)s)")
    ex.option("--num-negatives", "num_negatives", cls=ExportConfig,
              help="hard negatives per query; 0: in-batch negatives only, no mining needed (default %(default)s)")
    ex.option("--seed", "seed", cls=ExportConfig, help="shuffling seed (default %(default)s)")
    ex.option("--tasks", "tasks", help="comma-separated tasks (default: every task the stage takes)")
    tr = Command(sub.add_parser("train", help="training on Ray Train: contrastive, or LLM2Vec's mntp and simcse"),
                 cmd_train)
    tr.option("--config", required=True, help="configs/train/<name>.yaml")
    tr.option("--resume", action="store_true", help="continue the run from its last checkpoint")
    tr.option("--max-steps", "max_steps", type=int, help="override max_steps (the schedule's length)")
    tr.option("--stop-after", type=int, help="end after N steps with a checkpoint (resume with --resume)")
    tr.option("--shards", "shards", help="override the shards dataset (objective contrastive)")
    tr.option("--corpus", "corpus", help="override the corpus dataset (objectives mntp and simcse)")
    tr.option("--run-name", "run_name", help="override run_name")
    tr.option("--init-from", "init_from", help="start from a saved model: a run name under <root>/models, or a "
                                               "folder (its backbone and pooling head, and a fresh LoRA if LoRA is "
                                               "configured)")
    sw = Command(sub.add_parser("sweep-layers", help="the untrained model's contrastive loss per layer: how many "
                                                     "layers to keep (L3Prune)"), cmd_sweep_layers)
    sw.option("--config", required=True, help="configs/train/<name>.yaml: its backbone (or init_from) and shards")
    sw.option("--batches", "batches", cls=SweepConfig,
              help="global batches of the shards to average over (default %(default)s)")
    sw.option("--shards", "shards", help="override the shards dataset")
    sw.option("--init-from", "init_from", help="sweep a saved model instead of the config's backbone")
    li = Command(sub.add_parser("lineage", help="the chain of models and datasets a trained model came from"),
                 cmd_lineage)
    li.option("model", help="a run name under <root>/models, or a model folder")
