"""Training: shards for the trainer, and the trainer on Ray Train.

    quarry export --stage 1             # export.export_shards: examples + negatives -> shards
    quarry train --config FILE.yaml     # launch.train: Ray Train workers (trainers.train_loop)
    quarry sweep-layers --config FILE   # layer_sweep.sweep_layers: loss per layer (L3Prune)

Reading order: ``export`` (packing, with ``trainers.shards``) -> ``launch`` (config file,
checks, the Ray Train run) with ``backbone`` (what the run starts from), ``run_state``
(checkpoints, resume), ``progress`` (the driver's console while workers train) and
``rendezvous`` (the workers' process group, bound to one address).
"""

from pipelines.train.export import ExportConfig, ExportResult, export_shards
from pipelines.train.launch import TrainResult, load_train_config, train

__all__ = ["ExportConfig", "ExportResult", "TrainResult", "export_shards", "load_train_config", "train"]
