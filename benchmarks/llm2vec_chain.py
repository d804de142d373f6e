"""LLM2Vec and NV-Embed on a real decoder: SmolLM2-135M from causal LM to supervised encoder.

    python benchmarks/llm2vec_chain.py prepare [--root R]          # corpus, tasks, mined negatives, shards
    python benchmarks/llm2vec_chain.py train [--models m1,m2] [--mntp-steps N] [--simcse-steps N] [--steps N]
    python benchmarks/llm2vec_chain.py score [--models m1,m2] [--split dev|test]
    python benchmarks/llm2vec_chain.py report [--split test] [--markdown OUT.md]

Every model is a row of ``MODELS``: the untrained decoder scored as it is (causal with
last-token or mean pooling; bidirectional with mean or last-token pooling), LLM2Vec's
unsupervised stages (bidirectional -> MNTP -> SimCSE, each through ``quarry train`` with
``init_from``), and supervised contrastive training on the demo's mined stage-1 negatives
from each of them; NV-Embed's latent attention against mean pooling at equal steps; and
the CPU demo's MiniLM student on the same shards at the same steps, for comparison.

The stages' settings come from configs/train/smollm2-{mntp,simcse,supervised}.yaml; the
flags set only their steps. ``prepare`` runs ``quarry run``'s data stages with their
defaults (the MiniLM teacher, the default selection) into the root.

Resumable in parts: a finished run is not trained again, an interrupted one resumes from
its checkpoint, a scored (model, split) is not scored again. Train and score wall times,
scores and the machine go to <root>/llm2vec/results.jsonl; ``report`` builds the table and
marks LLM2Vec's claims held or not held from it. Steps are chosen on ``--split dev`` and
reported on test. A benchmark, not a test: figures and the machine go in docs/llm2vec.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # results_log, beside this script

from pipelines.builders import SourceConfig, WikiBuildConfig, build_tasks, build_wiki, load_task_set  # noqa: E402
from pipelines.evaluate import EvalConfig, evaluate  # noqa: E402
from pipelines.mine import MineConfig, mine  # noqa: E402
from pipelines.run import DEFAULT_TASK_SPEC, DEFAULT_TRAIN_CONFIG  # noqa: E402
from pipelines.train.backbone import resolve_backbone  # noqa: E402
from pipelines.train.export import ExportConfig, export_shards  # noqa: E402
from pipelines.train.launch import load_train_config, train  # noqa: E402
from pipelines.train.run_state import discard_uncheckpointed_run, run_state  # noqa: E402
import results_log  # noqa: E402
from storage import Catalog  # noqa: E402

CONFIGS = {"mntp": "configs/train/smollm2-mntp.yaml", "simcse": "configs/train/smollm2-simcse.yaml",
           "supervised": "configs/train/smollm2-supervised.yaml", "minilm": DEFAULT_TRAIN_CONFIG}
SHARDS = "vital-stage1"
ENCODE_MAX_LENGTH = 128  # what every model here is scored at (the demo student's encode_max_length)
PREFIX = "l2v-"


@dataclass(frozen=True)
class Model:
    key: str
    label: str
    stage: str | None = None  # CONFIGS key; None: the untrained backbone, saved as it is
    parent: str | None = None  # a Model key whose saved model this one starts from (init_from)
    bidirectional: bool = True
    pooling: str = "mean"
    steps_flag: str = "steps"  # which --*-steps flag sets its steps

    @property
    def run(self) -> str:
        return PREFIX + self.key


MODELS = {m.key: m for m in (
    Model("causal-last", "causal, last-token pooling", bidirectional=False, pooling="last_token"),
    Model("causal-mean", "causal, mean pooling", bidirectional=False),
    Model("bi", "bidirectional (Bi), mean pooling"),
    Model("bi-last", "bidirectional (Bi), last-token pooling", pooling="last_token"),
    Model("mntp", "Bi + MNTP", stage="mntp", steps_flag="mntp_steps"),
    Model("simcse", "Bi + MNTP + SimCSE", stage="simcse", parent="mntp", steps_flag="simcse_steps"),
    Model("sup-causal", "causal, last-token + supervised", stage="supervised", bidirectional=False,
          pooling="last_token"),
    Model("sup-bi", "Bi + supervised", stage="supervised"),
    Model("sup-mntp", "Bi + MNTP + supervised", stage="supervised", parent="mntp"),
    Model("sup-simcse", "Bi + MNTP + SimCSE + supervised", stage="supervised", parent="simcse"),
    Model("sup-bi-latent", "Bi + supervised, latent attention (512 latents, 8 heads)", stage="supervised",
          pooling="latent_attention"),
    Model("minilm", "the demo's MiniLM student (an encoder), supervised", stage="minilm"),
)}
UNSUPERVISED = ["causal-last", "causal-mean", "bi", "bi-last", "mntp", "simcse"]


def prepare(args, catalog: Catalog) -> None:
    """``quarry run``'s data stages with their defaults: corpus, tasks, negatives, shards."""
    spec = load_task_set(DEFAULT_TASK_SPEC)
    print(build_wiki(WikiBuildConfig(name=spec.corpus or spec.name, source=SourceConfig()), catalog).summary())
    print(build_tasks(spec, catalog).summary())
    print(mine(MineConfig(examples=spec.name), catalog).summary())
    base = load_train_config(CONFIGS["supervised"])
    print(export_shards(ExportConfig(name=SHARDS, examples=spec.name, training_stage=1, workers=base.num_workers,
                                     global_batch=base.global_batch), catalog).summary())


def save_untrained(model: Model, catalog: Catalog) -> bool:
    """The backbone as it is, with ``model``'s attention and pooling, as a saved Quarry
    model; False when it is saved already."""
    from trainers import EmbeddingModel
    from trainers.model import CONFIG_NAME

    out = catalog.root.path("models", model.run)
    if os.path.isfile(os.path.join(out, CONFIG_NAME)):
        return False
    backbone = resolve_backbone(load_train_config(CONFIGS["supervised"]), catalog)
    encoder = EmbeddingModel.from_pretrained(backbone.local, pooling=model.pooling, bidirectional=model.bidirectional,
                                             max_length=ENCODE_MAX_LENGTH)
    partial = out + ".partial"
    encoder.save_pretrained(partial)
    os.replace(partial, out)
    return True


def train_config(model: Model, args):
    cfg = load_train_config(CONFIGS[model.stage])
    changes = {"run_name": model.run, "max_steps": getattr(args, model.steps_flag)}
    if model.stage in ("supervised", "minilm"):
        changes["shards"] = SHARDS
    if model.stage == "supervised":
        changes.update(bidirectional=model.bidirectional, pooling=replace(cfg.pooling, mode=model.pooling))
    if model.parent:
        changes["init_from"] = MODELS[model.parent].run
    return replace(cfg, **changes)


def train_model(model: Model, args, catalog: Catalog) -> None:
    if model.stage is None:
        started = time.perf_counter()
        if save_untrained(model, catalog):
            record(catalog, {"part": "save", "model": model.key, "wall_s": round(time.perf_counter() - started, 1)})
        return
    if model.parent:
        train_model(MODELS[model.parent], args, catalog)
    cfg = train_config(model, args)
    state = run_state(cfg, catalog)
    if state.finished:
        return
    if state.done is None:
        discard_uncheckpointed_run(cfg, catalog)
    started = time.perf_counter()
    result = train(cfg, catalog, resume=state.done is not None)
    record(catalog, {"part": "train", "model": model.key, "steps": cfg.max_steps,
                     "wall_s": round(time.perf_counter() - started, 1), "loss": result.metrics.get("loss")})


def score(args, catalog: Catalog) -> None:
    spec = load_task_set(DEFAULT_TASK_SPEC)
    done = {(r["model"], r["split"], tuple(sorted(r["steps"].items()))) for r in results(catalog)
            if r["part"] == "score"}
    for key in keys(args):
        model = MODELS[key]
        train_model(model, args, catalog)
        steps = steps_of(model, args)
        if (key, args.split, tuple(sorted(steps.items()))) in done:
            continue
        started = time.perf_counter()
        result = evaluate(EvalConfig(models=[model.run], examples=spec.name, split=args.split,
                                     max_length=ENCODE_MAX_LENGTH), catalog)
        scores = {task: result.models[0].value(task, metric) for task, metric in result.main_scores()}
        record(catalog, {"part": "score", "model": key, "split": args.split, "steps": steps, "scores": scores,
                         "wall_s": round(time.perf_counter() - started, 1)})
        print(f"{model.run} on {args.split}: {scores}", flush=True)


def steps_of(model: Model, args) -> dict[str, int]:
    """The steps of every trained stage behind ``model``: what its score depends on."""
    out, at = {}, model
    while at is not None:
        if at.stage is not None:
            out[at.key] = getattr(args, at.steps_flag)
        at = MODELS[at.parent] if at.parent else None
    return out


def keys(args) -> list[str]:
    wanted = args.models.split(",") if args.models else list(MODELS)
    unknown = [k for k in wanted if k not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
    return wanted


def record(catalog: Catalog, row: dict) -> None:
    results_log.record(catalog, "llm2vec", row)


def results(catalog: Catalog) -> list[dict]:
    return results_log.results(catalog, "llm2vec")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("prepare", "train", "score", "report"))
    p.add_argument("--root", default=os.environ.get("QUARRY_HOME", "quarry-data"), help="data root")
    p.add_argument("--models", help=f"comma-separated, of: {', '.join(MODELS)} (default: all)")
    p.add_argument("--mntp-steps", type=int, default=200)
    p.add_argument("--simcse-steps", type=int, default=200)
    p.add_argument("--steps", type=int, default=32, help="supervised steps (every supervised model, MiniLM's too)")
    p.add_argument("--split", default="test", choices=("dev", "test"))
    p.add_argument("--markdown", help="report: also write the table here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="quarry: %(message)s", stream=sys.stderr)
    from pipelines.cli.console import quiet_libraries

    os.environ.setdefault("QUARRY_QUIET_RAY_DATA", "1")
    quiet_libraries()
    catalog = Catalog(args.root)
    if args.part == "report":
        from llm2vec_report import report  # beside this script

        text = report(results(catalog), args.split, MODELS, UNSUPERVISED)
        print(text)
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    elif args.part == "prepare":
        prepare(args, catalog)
    elif args.part == "train":
        for key in keys(args):
            train_model(MODELS[key], args, catalog)
    else:
        score(args, catalog)


if __name__ == "__main__":
    main()
