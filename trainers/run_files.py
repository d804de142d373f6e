"""What a training run writes besides Ray Train's checkpoints: ``metrics.jsonl``, TensorBoard
events, and the final model, on a local or an object-store data root.

The rank-0 worker appends the logs to a local working folder: the run folder itself on a
local root; on an object store, a folder in the local cache (``storage.published``) that
is uploaded to ``<root>/runs/<run>`` at every checkpoint and at the end, because the
TensorBoard writer and an append-only JSONL file need a local file. A restart (Ray's after
a failure, or ``--resume``, possibly on another node) starts from the root's copy and drops
the rows after the checkpoint it resumes from, so each step has one row.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass

from storage import DataRoot
from storage.published import download_dir, download_file, local_mirror, publish_dir, replace_dir, upload_dir
from trainers.lineage import LINEAGE_FILE, Lineage

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"


def truncate_metrics(path: str, last_step: int) -> None:
    """Keep the rows of ``metrics.jsonl`` up to ``last_step`` (the checkpoint a run restarts
    from), replacing the file in one rename. A torn last line from a killed writer goes too."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= last_step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def last_logged_row(root: DataRoot, run_dir: str, tail_bytes: int = 8192) -> dict | None:
    """The last complete row of a run's ``metrics.jsonl`` on ``root``, from the file's tail
    (None before the first row). On a local root the rank-0 worker appends it step by step;
    on an object store it is the copy of the last checkpoint (``RunFiles.sync``)."""
    path = posixpath.join(run_dir, METRICS_FILE)
    try:
        with root.fs.open_input_file(path) as f:
            f.seek(max(0, f.size() - tail_bytes))
            tail = f.read()
    except FileNotFoundError:
        return None
    # Whole lines only: what follows the last newline may be a row still being written, and
    # the first line may be cut by the tail.
    for line in reversed(tail.split(b"\n")[:-1]):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def save_model_atomically(module, model_dir: str, lineage: Lineage | None = None) -> None:
    """``save_pretrained`` into a hidden sibling, then one rename: readers see the old model or
    the whole new one, never a half-written folder (a killed save leaves only the sibling,
    which the next save clears)."""
    parent, name = os.path.split(model_dir.rstrip("/"))
    staged = os.path.join(parent, f".{name}.partial")
    shutil.rmtree(staged, ignore_errors=True)
    _save(module, staged, lineage)
    replace_dir(staged, model_dir)


def _save(module, folder: str, lineage: Lineage | None) -> None:
    module.save_pretrained(folder)
    if lineage is not None:
        with open(os.path.join(folder, LINEAGE_FILE), "w", encoding="utf-8") as f:
            f.write(lineage.to_json())


@dataclass(frozen=True)
class RunFiles:
    """Where one run's logs and model go. Paths are inside ``root`` except ``work_dir``."""

    root_uri: str
    run_dir: str  # <root>/runs/<run>: checkpoints (Ray Train), and the logs' lasting copy
    model_dir: str  # <root>/models/<run>
    work_dir: str  # local folder the rank-0 worker appends the logs to

    @classmethod
    def for_run(cls, root: DataRoot, run_name: str) -> "RunFiles":
        run_dir = root.path("runs", run_name)
        return cls(root_uri=root.uri, run_dir=run_dir, model_dir=root.path("models", run_name),
                   work_dir=run_dir if root.is_local else local_mirror(root, run_dir))

    @functools.cached_property
    def root(self) -> DataRoot:  # resolved once per worker, not at every checkpoint's sync
        return DataRoot.resolve(self.root_uri)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.work_dir, METRICS_FILE)

    @property
    def tensorboard_dir(self) -> str:
        return os.path.join(self.work_dir, TENSORBOARD_DIR)

    def start(self, resumed_step: int) -> None:
        """Before the rank-0 worker logs its first step: the logs as of ``resumed_step``."""
        root = self.root
        if not root.is_local:
            # The root's copy is the run's (this node's may be stale, or another run's).
            shutil.rmtree(self.work_dir, ignore_errors=True)
            os.makedirs(self.work_dir)
            if root.exists(posixpath.join(self.run_dir, METRICS_FILE)):
                download_file(root, posixpath.join(self.run_dir, METRICS_FILE), self.metrics_path)
            if root.is_dir(posixpath.join(self.run_dir, TENSORBOARD_DIR)):
                download_dir(root, posixpath.join(self.run_dir, TENSORBOARD_DIR), self.tensorboard_dir)
        truncate_metrics(self.metrics_path, resumed_step)

    def sync(self) -> None:
        """Copy the logs to the run folder on an object-store root (nothing to do on a local one)."""
        root = self.root
        if root.is_local:
            return
        if os.path.isfile(self.metrics_path):
            with open(self.metrics_path, "rb") as f:
                root.write_bytes_atomic(posixpath.join(self.run_dir, METRICS_FILE), f.read())
        if os.path.isdir(self.tensorboard_dir):
            upload_dir(root, self.tensorboard_dir, posixpath.join(self.run_dir, TENSORBOARD_DIR))

    def save_model(self, module, lineage: Lineage | None = None) -> None:
        """The final model with its lineage, appearing whole (a rename locally, a marker last
        on an object store)."""
        root = self.root
        if root.is_local:
            save_model_atomically(module, self.model_dir, lineage)
            return
        with tempfile.TemporaryDirectory(prefix="quarry-model-") as d:
            _save(module, d, lineage)
            publish_dir(root, d, self.model_dir)
