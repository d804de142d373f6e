"""Progress of a training run in the driver's console.

The workers' own output stays in Ray's log files unless ``quarry -v``, and Ray Train hears
of checkpoints only (``trainers.train_loop``), so a long run would print nothing between
its start and its end. While ``trainer.fit()`` runs, a thread reads the last row of the
run's ``metrics.jsonl`` (``trainers.run_files.last_logged_row``) every
``PROGRESS_EVERY_S`` and logs it when the step has moved: every step's row on a local root,
each checkpoint's on an object store.
"""

from __future__ import annotations

import logging
import threading
import time

from storage import DataRoot
from trainers.run_files import last_logged_row

log = logging.getLogger("quarry")

PROGRESS_EVERY_S = 30.0


class TrainProgress:
    """``with TrainProgress(root, run_dir, total_steps):`` around ``trainer.fit()``."""

    def __init__(self, root: DataRoot, run_dir: str, total_steps: int):
        self.root, self.run_dir, self.total_steps = root, run_dir, total_steps
        self.every_s = PROGRESS_EVERY_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="quarry-train-progress", daemon=True)
        self._last: tuple[int, float] | None = None  # (step, when it was seen)

    def __enter__(self) -> "TrainProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                row = last_logged_row(self.root, self.run_dir)
            except OSError as e:  # a store that does not answer now may answer at the next poll
                log.debug("train: progress not read: %s", e)
                continue
            if row is not None:
                self._report(int(row["step"]), float(row["loss"]), row.get("task"))

    def _report(self, step: int, loss: float, task: str | None = None) -> None:
        now = time.monotonic()
        if self._last is not None and step <= self._last[0]:
            if step < self._last[0]:  # a restart went back to its checkpoint
                self._last = (step, now)
            return
        rate = "" if self._last is None else f", {(step - self._last[0]) / (now - self._last[1]):.2f} steps/s"
        # A mixed-task run's losses differ by task (an easy task's 0.05 beside a hard one's
        # 1.2): the line says whose step it is, so a jump between lines is not read as divergence.
        of_task = f" ({task})" if task else ""
        log.info("train: step %d of %d%s, loss %.4f%s", step, self.total_steps, of_task, loss, rate)
        self._last = (step, now)
