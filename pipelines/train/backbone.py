"""Where a training run starts from: the backbone a config names, resolved and checked in
the driver before any worker starts.

A config's ``backbone`` is a folder or hub id, ``packaged:all-MiniLM-L6-v2``, or
``tiny:<family>`` (a small decoder built on demand from a config, random weights); its
``init_from`` is a saved Quarry model by folder or run name. Tested by
``tests/pipelines/train/test_train_ray.py`` and ``tests/pipelines/cli/test_cli_errors.py``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from storage import Catalog, DataRoot, InputError, resolve_packaged
from storage.packaged import is_packaged
from storage.published import fetch_dir, is_published, publish_dir, saved_model
from trainers.config import TrainConfig

TINY_PREFIX = "tiny:"


@dataclass(frozen=True)
class Backbone:
    """Where the model starts from: a local folder (or hub id) for the driver, and, for a
    model kept on an object-store root, its path there, which every worker fetches."""

    local: str
    on_root: str | None = None


def resolve_backbone(cfg: TrainConfig, catalog: Catalog) -> Backbone:
    """The backbone: a stage-1 model (``init_from``), the packaged MiniLM, a tiny decoder
    built on demand, or the path / hub id as given."""
    root = catalog.root
    if cfg.init_from:
        if os.path.isdir(cfg.init_from):
            return Backbone(cfg.init_from)
        saved = saved_model(root, cfg.init_from)  # a validated run name, published on the root
        if saved is None:
            raise InputError(f"init_from: no saved model named {cfg.init_from} under "
                             f"{root.display(root.path('models'))} (nor a folder)")
        return Backbone(fetch_dir(root, saved), None if root.is_local else saved)
    if is_packaged(cfg.backbone):
        return Backbone(resolve_packaged(cfg.backbone))
    if cfg.backbone.startswith(TINY_PREFIX):
        return _tiny_backbone(cfg, root)
    return Backbone(cfg.backbone)


def _tiny_backbone(cfg: TrainConfig, root: DataRoot) -> Backbone:
    from pipelines.builders.sources import load_embedded_table
    from trainers.tiny import FAMILIES, build_tiny_decoder

    family = cfg.backbone[len(TINY_PREFIX):]
    if family not in FAMILIES:
        raise InputError(f"backbone {cfg.backbone}: tiny decoders are {', '.join(TINY_PREFIX + f for f in FAMILIES)}")
    texts = load_embedded_table("en", 400).column("extract").to_pylist()
    path = root.path("models", f"_tiny-{family}")
    if root.is_local:
        return Backbone(build_tiny_decoder(family, path, texts, seed=cfg.seed))
    if not is_published(root, path):  # built here once, then kept on the root like any model
        with tempfile.TemporaryDirectory(prefix="quarry-tiny-") as d:
            publish_dir(root, build_tiny_decoder(family, d, texts, seed=cfg.seed), path)
    return Backbone(fetch_dir(root, path), path)


def check_backbone(cfg: TrainConfig, backbone: Backbone) -> None:
    """What the config asks of the backbone, checked on its config alone (no weights): a bad
    backbone, an MNTP run on an encoder, a layer count or Matryoshka size it lacks, each in
    one line here rather than a worker's traceback."""
    from trainers.config import layers_to_keep
    from trainers.mntp_model import require_decoder
    from trainers.model import load_backbone_config

    config = load_backbone_config(backbone.local, cfg.trust_remote_code)
    if cfg.objective == "mntp":
        require_decoder(config, cfg.init_from or cfg.backbone)
    layers_to_keep(cfg.keep_layers, config.num_hidden_layers)
    cfg.matryoshka(config.hidden_size)
