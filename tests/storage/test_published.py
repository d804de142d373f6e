"""Folders published on an object store (moto on loopback): the marker comes last, readers
take only marked folders, and each machine copies a folder once per published id."""

import os

import pytest

from storage import DataRoot, InputError
from storage.published import MARKER, fetch_dir, is_published, local_mirror, publish_dir, saved_model


def _folder(path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        os.makedirs(os.path.dirname(path / rel), exist_ok=True)
        (path / rel).write_text(text)
    return str(path)


def test_publish_then_fetch_copies_once_per_id(s3_root, tmp_path, monkeypatch):
    monkeypatch.setenv("QUARRY_CACHE", str(tmp_path / "cache"))
    root = DataRoot.resolve(s3_root)
    target = root.path("models", "demo")
    assert not is_published(root, target) and saved_model(root, "demo") is None
    publish_dir(root, _folder(tmp_path / "v1", {"config.json": "one", "adapter/w.bin": "w1"}), target)
    assert is_published(root, target) and saved_model(root, "demo") == target
    local = fetch_dir(root, target)
    assert local == local_mirror(root, target) and local.startswith(str(tmp_path / "cache"))
    assert open(os.path.join(local, "adapter", "w.bin")).read() == "w1"
    stamp = os.stat(os.path.join(local, "config.json")).st_mtime_ns
    assert fetch_dir(root, target) == local  # the same id: no second download
    assert os.stat(os.path.join(local, "config.json")).st_mtime_ns == stamp

    # Published again: the old files go, and the next fetch takes the new folder whole.
    publish_dir(root, _folder(tmp_path / "v2", {"config.json": "two"}), target)
    assert sorted(i.base_name for i in root.list_dir(target)) == ["_published.json", "config.json"]
    assert sorted(os.listdir(fetch_dir(root, target))) == ["_published.json", "config.json"]
    assert open(os.path.join(local, "config.json")).read() == "two"
    assert sorted(os.listdir(os.path.dirname(local))) == ["demo", "demo.lock"]  # no staged or old copies


def test_the_workers_of_one_node_fetching_at_once_download_once(s3_root, tmp_path, monkeypatch):
    import threading

    import storage.published as published

    monkeypatch.setenv("QUARRY_CACHE", str(tmp_path / "cache"))
    root = DataRoot.resolve(s3_root)
    target = root.path("models", "shared")
    publish_dir(root, _folder(tmp_path / "m", {f"w{i}.bin": "x" * 10000 for i in range(8)}), target)
    downloads, real = [], published.download_file
    monkeypatch.setattr(published, "download_file", lambda *a: (downloads.append(a[1]), real(*a)))
    barrier, seen, errors = threading.Barrier(4), [], []

    def worker():
        try:
            barrier.wait()
            local = fetch_dir(root, target)
            seen.append(sorted((n, len(open(os.path.join(local, n)).read())) for n in os.listdir(local)
                               if n.endswith(".bin")))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(downloads) == 8  # one copy of each file, not four
    assert seen == [[(f"w{i}.bin", 10000) for i in range(8)]] * 4


def test_a_folder_without_its_marker_is_not_read(s3_root, tmp_path, monkeypatch):
    monkeypatch.setenv("QUARRY_CACHE", str(tmp_path / "cache"))
    root = DataRoot.resolve(s3_root)
    target = root.path("models", "cut")
    publish_dir(root, _folder(tmp_path / "m", {"config.json": "x"}), target)
    root.fs.delete_file(f"{target}/{MARKER}")  # what an upload cut before its last PUT leaves
    assert not is_published(root, target) and saved_model(root, "cut") is None
    with pytest.raises(InputError, match="models/cut is not a complete published folder"):
        fetch_dir(root, target)
    assert saved_model(root, "../escape") is None  # names are validated before a path is built


def test_run_logs_sync_to_the_store_and_a_restart_starts_from_its_copy(s3_root, tmp_path, monkeypatch):
    import json

    from trainers.run_files import RunFiles

    monkeypatch.setenv("QUARRY_CACHE", str(tmp_path / "cache"))
    root = DataRoot.resolve(s3_root)
    files = RunFiles.for_run(root, "r")
    assert files.work_dir == local_mirror(root, files.run_dir)
    files.start(0)
    with open(files.metrics_path, "a") as f:
        f.writelines(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 5))
    os.makedirs(files.tensorboard_dir)
    with open(os.path.join(files.tensorboard_dir, "events.out"), "w") as f:
        f.write("tb")
    files.sync()
    # Another node (an empty cache) restarts from the checkpoint at step 2.
    monkeypatch.setenv("QUARRY_CACHE", str(tmp_path / "other-node"))
    again = RunFiles.for_run(root, "r")
    again.start(2)
    with open(again.metrics_path) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2]
    assert open(os.path.join(again.tensorboard_dir, "events.out")).read() == "tb"
    # A local root needs none of this: the work folder is the run folder.
    local = RunFiles.for_run(DataRoot.resolve(str(tmp_path / "data")), "r")
    assert local.work_dir == local.run_dir
