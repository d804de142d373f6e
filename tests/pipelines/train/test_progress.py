import logging

from pipelines.train.progress import TrainProgress
from storage import DataRoot


def test_training_progress_is_logged_when_the_step_moves_and_names_the_task(tmp_path, caplog, monkeypatch):
    progress = TrainProgress(DataRoot.resolve(str(tmp_path)), str(tmp_path), total_steps=40)
    clock = iter([0.0, 10.0, 20.0, 30.0, 40.0])
    monkeypatch.setattr("pipelines.train.progress.time.monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="quarry"):
        for step, task in ((5, "t2a"), (5, "t2a"), (3, "d2a"), (13, "d2a")):  # a repeat, then a restart
            progress._report(step, 0.5, task)
    assert [r.getMessage() for r in caplog.records] == [
        "train: step 5 of 40 (t2a), loss 0.5000",
        "train: step 13 of 40 (d2a), loss 0.5000, 1.00 steps/s"]  # 10 steps since the restart seen at 20 s
