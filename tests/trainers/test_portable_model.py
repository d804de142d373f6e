"""A saved model works where Quarry is not installed: a throwaway venv with only torch,
transformers and sentence-transformers (the versions this one has, from the local wheel
cache) loads every pooling mode of a MiniLM-like encoder and a tiny decoder, and encodes
queries with their prompt and documents without, as EmbeddingModel.encode does.

The venv is built once per set of versions and reused (``QUARRY_PORTABLE_VENV`` names
another place for it).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest

from storage import PACKAGED_MINILM, resolve_packaged
from trainers import EmbeddingModel
from trainers.config import POOLING_MODES
from trainers.tiny import build_tiny_decoder

pytestmark = pytest.mark.integration

PACKAGES = ("torch", "transformers", "sentence-transformers")
QUERIES = ["Family of birds", "Capital city of France", "x y"]
DOCS = ["The Corvidae are a family of oscine passerine birds.", "Paris is the capital of France.", "Paris"]
INSTRUCTION = "Instruct: Given the description of a Wikipedia article, retrieve the article\nQuery: "
# Run by the venv's Python, from a folder outside the repository.
SCRIPT = """
import importlib.util, json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
for name in ("trainers", "storage", "miners", "pipelines", "evaluation"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable: this is not a Python without Quarry"
job = json.load(open(sys.argv[1]))
for i, folder in enumerate(job["folders"]):
    model = SentenceTransformer(folder, device="cpu", trust_remote_code=folder.endswith("latent_attention"))
    np.save(f"{folder}.queries.npy", model.encode(job["queries"], prompt_name="task-query"))
    np.save(f"{folder}.docs.npy", model.encode(job["docs"]))
"""


def _portable_python() -> str:
    pins = [f"{name}=={version(name).split('+')[0]}" for name in PACKAGES]
    key = hashlib.sha256(" ".join(pins).encode()).hexdigest()[:10]
    venv = os.environ.get("QUARRY_PORTABLE_VENV") or os.path.join("/tmp", f"quarry-portable-{key}")
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(os.path.join(venv, ".complete")):
        return python
    building = f"{venv}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    # The base interpreter, not this venv's: nothing of this environment may leak in.
    subprocess.run([sys._base_executable, "-m", "venv", building], check=True)
    subprocess.run([os.path.join(building, "bin", "python"), "-m", "pip", "install", "-q", *pins], check=True,
                   timeout=1200)
    open(os.path.join(building, ".complete"), "w").close()
    shutil.rmtree(venv, ignore_errors=True)
    os.rename(building, venv)  # venvs hold absolute paths: this one is used only through its python
    return python


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, wiki_texts):
    return build_tiny_decoder("llama", str(tmp_path_factory.mktemp("tiny") / "llama"), wiki_texts[:200])


def test_every_pooling_mode_loads_and_encodes_alike_without_quarry(tmp_path, tiny_llama):
    import torch

    folders, expected = [], {}
    for family, path in (("minilm", resolve_packaged(PACKAGED_MINILM)), ("llama", tiny_llama)):
        for mode in POOLING_MODES:
            model = EmbeddingModel.from_pretrained(path, pooling=mode, max_length=64)
            torch.manual_seed(3)
            with torch.no_grad():
                for p in model.pooler.parameters():
                    p.add_(torch.randn_like(p) * 0.05)  # a trained head, not the init
            model.config.prompts = {"task-query": INSTRUCTION}
            folder = str(tmp_path / f"{family}-{mode}")
            form = model.save_pretrained(folder)
            assert form == ("latent" if mode == "latent_attention" else "standard"), (family, mode)
            folders.append(folder)
            expected[folder] = (model.encode(QUERIES, INSTRUCTION), model.encode(DOCS))
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"folders": folders, "queries": QUERIES, "docs": DOCS}))
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(away), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(away / "modules")}
    done = subprocess.run([_portable_python(), "-c", SCRIPT, str(job)], cwd=away, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for folder, (queries, docs) in expected.items():
        assert np.abs(np.load(f"{folder}.queries.npy") - queries).max() <= 1e-5, folder
        assert np.abs(np.load(f"{folder}.docs.npy") - docs).max() <= 1e-5, folder
