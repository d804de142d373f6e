"""Export and Ray Train on a tiny decoder, 2 CPU workers (gloo): learning, resume, encode."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.cli import main
from pipelines.train.launch import load_train_config
from pipelines.train.run_state import run_state
from storage import Catalog
from tests.pipelines.ray_procs import alive, processes_of, stop

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_local")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "train", "tiny-decoder.yaml")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("train") / "data")
    for argv in (["build", "wiki", "--limit", "120"], ["build", "tasks", "--limit", "120"],
                 ["mine", "--num-negatives", "3"],
                 ["export", "--tasks", "vital-title2article", "--global-batch", "8", "--workers", "2",
                  "--num-negatives", "3"]):
        assert main(["--root", root, *argv]) == 0
    return root


def _losses(root, run):
    with open(os.path.join(root, "runs", run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _steps(root) -> int:
    return 3 * Catalog(root).manifest("shards", "vital-stage1").config["batches"]  # three epochs


def _train_args(root) -> list[str]:
    return ["--root", root, "train", "--config", CONFIG, "--max-steps", str(_steps(root))]


@pytest.fixture(scope="module")
def full(root):
    """The undisturbed run every interrupted one must equal."""
    assert main(_train_args(root) + ["--run-name", "full"]) == 0
    return _losses(root, "full")


def _weights(root, run) -> dict:
    from safetensors.numpy import load_file

    folder = os.path.join(root, "models", run)
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            out.update({f"{name}:{k}": v for k, v in load_file(os.path.join(folder, name)).items()})
    return out


def assert_same_run(root, run, full):
    rows = _losses(root, run)
    assert [r["step"] for r in rows] == list(range(1, len(full) + 1))  # one row per step
    assert np.allclose([r["loss"] for r in rows], [r["loss"] for r in full], atol=1e-4)
    a, b = _weights(root, run), _weights(root, "full")
    assert a.keys() == b.keys() and a
    assert all(np.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert not [e for e in os.listdir(os.path.join(root, "models")) if e.endswith(".partial")]


def _when_step_logged(root, run, step, timeout_s=300) -> int:
    """Wait until ``metrics.jsonl`` of a run holds ``step`` rows; the rows logged then."""
    path = os.path.join(root, "runs", run, "metrics.jsonl")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                rows = sum(1 for line in f if line.endswith("\n"))
            if rows >= step:
                return rows
        time.sleep(0.05)
    raise AssertionError(f"{run} never logged step {step}")


def test_shards_pack_one_task_per_batch_split_over_workers(root):
    shards = Catalog(root).read_table("shards", "vital-stage1").to_pylist()
    by_batch = {}
    for r in shards:
        by_batch.setdefault(r["batch_index"], []).append(r)
    assert all(len(rows) == 8 and {r["worker"] for r in rows} == {0, 1} for rows in by_batch.values())
    assert all(r["in_batch"] and len(r["negatives"]) == 3 for r in shards)
    assert len({r["example_id"] for r in shards}) == len(shards)


def test_stage_two_turns_in_batch_negatives_off_for_class_tasks(root):
    assert main(["--root", root, "export", "--stage", "2", "--global-batch", "8", "--workers", "2",
                 "--num-negatives", "3"]) == 0
    rows = Catalog(root).read_table("shards", "vital-stage2", columns=["task_type", "in_batch"]).to_pylist()
    assert {r["task_type"] for r in rows} >= {"retrieval", "classification", "clustering"}
    assert all(r["in_batch"] == (r["task_type"] == "retrieval") for r in rows)


def test_in_batch_only_shards_train_from_a_parent_with_their_lineage(root, full, tmp_path, capsys):
    common = ["--root", root, "export", "--name", "inbatch", "--global-batch", "8", "--workers", "2",
              "--num-negatives", "0"]
    assert main(common + ["--negatives", "never-mined"]) == 0  # the negatives dataset is not read
    rows = Catalog(root).read_table("shards", "inbatch", columns=["in_batch", "negatives", "neg_keys"]).to_pylist()
    assert rows and all(r["in_batch"] and r["negatives"] == [] == r["neg_keys"] for r in rows)
    config = tmp_path / "inbatch.yaml"  # trained at 64 tokens, encodes at 48
    config.write_text(open(CONFIG).read() + "encode_max_length: 48\n")
    assert main(["--root", root, "train", "--config", str(config), "--shards", "inbatch", "--run-name", "inbatch",
                 "--max-steps", "2", "--init-from", "full"]) == 0
    losses = [r["loss"] for r in _losses(root, "inbatch")]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[0] > 0
    with open(os.path.join(root, "models", "inbatch", "quarry_embedding.json")) as f:
        assert json.load(f)["max_length"] == 48
    # Its lineage: the parent as it was (fingerprint), the exact data, back to the backbone.
    from miners.teacher import fingerprint

    with open(os.path.join(root, "models", "inbatch", "lineage.json")) as f:
        lineage = json.load(f)
    assert lineage["parent"] == "full" and lineage["parent_fingerprint"] == fingerprint(
        os.path.join(root, "models", "full"))
    version = Catalog(root).latest("shards", "inbatch")
    assert lineage["shards"] == f"shards/inbatch {version}" and lineage["steps"] == 2
    capsys.readouterr()
    assert main(["--root", root, "lineage", "inbatch"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"inbatch: 2 steps on shards/inbatch {version} (examples/vital v0001, corpus/vital v0001), " \
                         "from full"
    parent = printed[1].strip()
    assert parent.startswith(f"<- full: {len(full)} steps on shards/vital-stage1 v0001 (") and "negatives/vital" in parent
    assert parent.endswith("), from the backbone tiny:mistral")
    assert printed[2].strip() == "<- tiny:mistral (base backbone)"
    assert main(common[:3] + ["--stage", "2", *common[3:]]) == 2  # class tasks would have nothing to contrast
    assert "--num-negatives 0 leaves" in capsys.readouterr().err


def test_two_worker_training_lowers_the_loss_and_resume_matches(root, full, tmp_path, caplog, monkeypatch):
    import logging

    batches = Catalog(root).manifest("shards", "vital-stage1").config["batches"]
    steps = _steps(root)
    common = _train_args(root)
    assert [r["step"] for r in full] == list(range(1, steps + 1))
    first, last = np.mean([r["loss"] for r in full[:batches]]), np.mean([r["loss"] for r in full[-batches:]])
    assert last < first - 0.3, f"loss did not go down: epoch 1 {first:.3f}, epoch 3 {last:.3f}"

    half = steps // 2
    monkeypatch.setattr("pipelines.train.progress.PROGRESS_EVERY_S", 0.1)
    with caplog.at_level(logging.INFO, logger="quarry"):
        assert main(common + ["--run-name", "split", "--stop-after", str(half)]) == 0
    # The driver's console follows the steps the rank-0 worker logs (pipelines.train.progress).
    progress = [int(m.split()[2]) for m in caplog.messages if m.startswith("train: step ")]
    assert progress and progress == sorted(progress) and progress[-1] <= half, caplog.messages
    assert all(re.match(rf"train: step \d+ of {steps} \(vital-[a-z0-9]+\), loss \d", m)
               for m in caplog.messages if m.startswith("train: step "))
    assert main(common + ["--run-name", "split"]) == 2  # an existing run needs --resume
    assert main(common + ["--run-name", "split", "--resume"]) == 0
    assert_same_run(root, "split", full)

    out = str(tmp_path / "emb.parquet")
    texts = tmp_path / "texts.txt"
    texts.write_text("Paris\nThe Moon orbits the Earth.\n")
    assert main(["--root", root, "encode", "--model", os.path.join(root, "models", "full"), "--input", str(texts),
                 "--out", out]) == 0
    table = pq.read_table(out)
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_a_private_ray_trains_without_a_preemption_watcher(ray_local, full):
    """On the private local Ray (pipelines.runtime.local_ray.start_local_ray) the undisturbed run
    started Ray Train's cluster helpers except the preemption watcher, whose one node
    cannot be drained."""
    logs = os.path.join(ray_local, "session_latest", "logs", "train")
    controller = "".join(open(os.path.join(logs, f)).read()
                         for f in os.listdir(logs) if f.startswith("ray-train-sys-controller"))
    assert "PlacementGroupCleaner launched" in controller  # the controller's log of the run
    assert "PreemptionCallback: started watcher" not in controller


def test_a_run_that_loses_a_worker_then_its_driver_ends_the_same(root, full):
    """checkpoint_every is 10 in the config. One run, as `quarry train` in its own process:
    - a training worker gets SIGKILL after step 12 is logged: Ray Train (FailureConfig)
      restarts the worker group from the step-10 checkpoint, in flight;
    - after step 22 the driver gets SIGKILL: `quarry train --resume` continues from step 20.
    The end equals the undisturbed run: one metrics row per step, same losses and weights."""
    steps = len(full)
    assert steps >= 26, f"the schedule ({steps} steps) is too short for both kills"
    temp_dir = tempfile.mkdtemp(prefix="qk")  # the driver's own local Ray
    env = dict(os.environ, QUARRY_RAY_TMP=temp_dir, QUARRY_RAY_CPUS="2")
    driver = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *_train_args(root), "--run-name", "faults"],
                              env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _when_step_logged(root, "faults", 12) < 20
        workers = [p for p in psutil.Process(driver.pid).children(recursive=True)
                   if "RayTrainWorker" in " ".join(p.cmdline())]
        assert len(workers) == 2, workers
        workers[-1].kill()
        assert _when_step_logged(root, "faults", 22) < steps  # restarted, and past the step-20 checkpoint
        assert not alive(workers[0])  # Ray replaced the whole group, the survivor too
        driver.kill()
        driver.wait(timeout=60)
    finally:
        driver.kill()
        stop(processes_of(temp_dir))  # whatever of its Ray outlived the driver
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not os.path.exists(os.path.join(root, "models", "faults"))  # no model before the end
    assert main(_train_args(root) + ["--run-name", "faults", "--resume"]) == 0
    assert_same_run(root, "faults", full)
    # Killed after its last checkpoint but before the model was saved: not finished, and
    # --resume saves the model without training a step more.
    shutil.rmtree(os.path.join(root, "models", "faults"))
    cfg = load_train_config(CONFIG, {"run_name": "faults", "max_steps": steps})
    state = run_state(cfg, Catalog(root))
    assert (state.done, state.finished) == (steps, False)
    assert main(_train_args(root) + ["--run-name", "faults", "--resume"]) == 0
    assert_same_run(root, "faults", full)
    assert run_state(cfg, Catalog(root)).finished


CONFIGS = os.path.dirname(CONFIG)
CHAIN = ("mntp", "simcse", "supervised")  # configs/train/tiny-llm2vec-<stage>.yaml
CHAIN_STEPS = 12


@pytest.fixture(scope="module")
def chain(root):
    """LLM2Vec's chain on the tiny decoder, as a user runs it: three `quarry train` runs,
    each starting from the one before (init_from in its config)."""
    for stage in CHAIN:
        assert main(["--root", root, "train", "--config", os.path.join(CONFIGS, f"tiny-llm2vec-{stage}.yaml"),
                     "--max-steps", str(CHAIN_STEPS)]) == 0
    return {stage: _losses(root, f"tiny-llm2vec-{stage}") for stage in CHAIN}


def test_the_llm2vec_chain_lowers_each_loss_and_ends_bidirectional(root, chain, capsys):
    from trainers import EmbeddingModel

    for stage, rows in chain.items():
        losses = [r["loss"] for r in rows]
        assert [r["step"] for r in rows] == list(range(1, CHAIN_STEPS + 1)) and all(np.isfinite(losses))
        assert np.mean(losses[-4:]) < np.mean(losses[:4]), f"{stage}: {losses}"
        assert rows[0]["task"] == {"mntp": "mntp", "simcse": "simcse"}.get(stage, rows[0]["task"])
    corpus = Catalog(root).latest("corpus", "vital")
    capsys.readouterr()
    assert main(["--root", root, "lineage", "tiny-llm2vec-supervised"]) == 0
    printed = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert printed[0].startswith(f"tiny-llm2vec-supervised: {CHAIN_STEPS} steps on shards/vital-stage1 ")
    assert printed[0].endswith("from tiny-llm2vec-simcse")
    assert printed[1] == f"<- tiny-llm2vec-simcse: {CHAIN_STEPS} steps of simcse on corpus/vital {corpus}, " \
                         "from tiny-llm2vec-mntp"
    assert printed[2] == f"<- tiny-llm2vec-mntp: {CHAIN_STEPS} steps of mntp on corpus/vital {corpus}, " \
                         "from the backbone tiny:mistral"
    # The final model reloads bidirectional: the last token reaches the first one's state.
    model = EmbeddingModel.from_pretrained(os.path.join(root, "models", "tiny-llm2vec-supervised"))
    assert model.config.pooling.mode == "mean" and not model.backbone.config.is_causal
    ids = model.tokenize(["the river runs to the sea", "the river runs to the hill"])
    with torch.no_grad():
        hidden = model.backbone(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state
    assert not torch.allclose(hidden[0, 1], hidden[1, 1], atol=1e-6)


def test_an_mntp_run_resumes_to_the_same_losses(root, chain):
    config = os.path.join(CONFIGS, "tiny-llm2vec-mntp.yaml")
    common = ["--root", root, "train", "--config", config, "--max-steps", str(CHAIN_STEPS), "--run-name", "mntp-split"]
    assert main(common + ["--stop-after", "5"]) == 0
    assert main(common + ["--resume"]) == 0
    rows = _losses(root, "mntp-split")
    assert [r["step"] for r in rows] == list(range(1, CHAIN_STEPS + 1))
    assert np.allclose([r["loss"] for r in rows], [r["loss"] for r in chain["mntp"]], atol=1e-4)


@pytest.mark.parametrize("override, message", [
    ({"backbone": "packaged:all-MiniLM-L6-v2"}, "objective mntp needs a decoder backbone"),
    ({"corpus": "nope"}, "no corpus dataset named 'nope'"),
    ({"global_batch": 100000}, "fewer than one global batch of 100000"),
    ({"pooling": "latent_attention"}, "trains the backbone alone: set pooling"),
    ({"keep_layers": 9}, "keep_layers 9: the backbone has only 2 layers"),
])
def test_a_bad_text_objective_config_is_one_line(root, tmp_path, capsys, override, message):
    import yaml

    raw = yaml.safe_load(open(os.path.join(CONFIGS, "tiny-llm2vec-mntp.yaml")))
    raw.update(override, run_name="bad-mntp")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--root", root, "train", "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_the_layer_sweep_marks_a_cutoff_and_a_pruned_run_saves_that_many_layers(root, tmp_path, capsys):
    assert main(["--root", root, "sweep-layers", "--config", CONFIG, "--batches", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"] and all(np.isfinite(float(r[1])) for r in rows)
    assert "over 2 global batch(es)" in out
    config = tmp_path / "pruned.yaml"
    config.write_text(open(CONFIG).read() + "keep_layers: 1\n")
    assert main(["--root", root, "train", "--config", str(config), "--run-name", "pruned", "--max-steps", "2"]) == 0
    with open(os.path.join(root, "models", "pruned", "config.json")) as f:
        assert json.load(f)["num_hidden_layers"] == 1
    assert main(["--root", root, "sweep-layers", "--config", os.path.join(CONFIGS, "tiny-llm2vec-mntp.yaml")]) == 2
    assert "sweep-layers scores the contrastive loss on shards" in capsys.readouterr().err
