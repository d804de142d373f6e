"""Which data made which model: ``lineage.json`` beside every model ``quarry train`` saves.

A record names the model's parent (``init_from``: the saved model it started from, with
that model's content fingerprint), or, for a model trained from a backbone, that backbone;
and the exact dataset versions it trained on: the shards, and the examples and negatives
the shards were packed from. ``quarry lineage NAME`` follows the parents back to the base
backbone (``chain``). The file is written into the model folder before it is published,
so it appears with the model, and it is not part of the model's fingerprint.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import asdict, dataclass, field

from storage import DataRoot, InputError
from storage.published import saved_model

LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class Lineage:
    model: str  # the run name
    backbone: str  # as configured (the base, when there is no parent)
    parent: str | None  # init_from as given: a run name under <root>/models, or a folder
    parent_fingerprint: str | None  # what the parent was when this model started from it
    shards: str  # the data: "shards/<name> <version>", or "corpus/<name> <version>" for mntp and simcse
    inputs: tuple[str, ...] = field(default_factory=tuple)  # "examples/<name> <version>", "negatives/..."
    steps: int = 0
    trained_at: str = ""
    objective: str = "contrastive"  # TrainConfig.objective: contrastive, mntp or simcse

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "inputs": list(self.inputs), "format": 1}, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str) -> "Lineage":
        try:
            raw = json.loads(text)
            raw.pop("format", None)
            raw["inputs"] = tuple(raw.get("inputs", ()))
            return cls(**raw)
        except (ValueError, TypeError) as e:
            raise InputError(f"{where}: not a lineage record ({e})") from None

    def describe(self) -> str:
        data = f"{self.shards}" + (f" ({', '.join(self.inputs)})" if self.inputs else "")
        start = f"from {self.parent}" if self.parent else f"from the backbone {self.backbone}"
        what = "" if self.objective == "contrastive" else f" of {self.objective}"
        return f"{self.model}: {self.steps} steps{what} on {data}, {start}"


def read_lineage(root: DataRoot, model: str) -> Lineage | None:
    """The record of a model given as a run name on ``root`` or a local folder; None when
    the model has none (a backbone, or a model saved before lineage was recorded)."""
    if os.path.isdir(model):
        path = os.path.join(model, LINEAGE_FILE)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return Lineage.from_json(f.read(), path)
    folder = saved_model(root, model)
    path = posixpath.join(folder, LINEAGE_FILE) if folder else None
    if path is None or not root.exists(path):
        return None
    return Lineage.from_json(root.read_bytes(path).decode("utf-8"), root.display(path))


def chain(root: DataRoot, model: str, limit: int = 100) -> list[Lineage]:
    """The model's record, then its parent's, and so on back to a model trained from a
    backbone. A parent with no record (deleted, or a plain folder) ends the chain."""
    if not _model_exists(root, model):
        raise InputError(f"no saved model named {model} under {root.display(root.path('models'))} (nor a folder)")
    out: list[Lineage] = []
    seen: set[str] = set()
    current: str | None = model
    while current and current not in seen and len(out) < limit:
        seen.add(current)
        record = read_lineage(root, current)
        if record is None:
            break
        out.append(record)
        current = record.parent
    return out


def _model_exists(root: DataRoot, model: str) -> bool:
    return os.path.isdir(model) or saved_model(root, model) is not None


def format_chain(model: str, records: list[Lineage]) -> str:
    if not records:
        return f"{model}: no lineage recorded (not trained by quarry train, or trained before lineage.json)"
    lines = [("  " * i) + ("" if i == 0 else "<- ") + r.describe() for i, r in enumerate(records)]
    last = records[-1]
    if last.parent:
        lines.append("  " * len(records) + f"<- {last.parent}: no lineage recorded")
    else:
        lines.append("  " * len(records) + f"<- {last.backbone} (base backbone)")
    return "\n".join(lines)
