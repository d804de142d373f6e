"""Teacher encoding throughput: Quarry's ``Teacher.encode`` against sentence-transformers' ``encode``.

    python benchmarks/teacher_throughput.py --shape mistral-7b --precision bf16            # on a GPU
    python benchmarks/teacher_throughput.py --shape tiny --passages 500 --device cpu       # a check on CPU

One process, no Ray (the GPU machines have none): ``Teacher.encode`` is what Quarry's
encoder actor and the driver run, a padded-token budget per forward pass
(``pipelines.runtime.encoding``: 32,768 tokens on a GPU, 2,048 on a CPU); sentence-transformers
runs its own ``encode`` at its default 32 texts per pass. Same model object on disk, same
texts, same device, same autocast. Each side is timed after a warm-up pass of 64 texts,
once by default (``--repeats``: the best is kept; at the 7B shape one pass over 20,000
passages is minutes, and a device call is limited to 10).

The teacher is a Mistral-shaped decoder with random weights and mean pooling, saved once as
a sentence-transformers folder (``--shape mistral-7b``: 32 layers, hidden 4096, bf16
weights, about 14.5 GB on disk; ``tiny``: 2 layers, hidden 64). It reads word-level
tokens, one per word, so each passage is exactly as long, in tokens, as one of the
embedded articles' extracts: ``benchmarks/passage_tokens.json`` holds their length
histogram (19,988 English and French extracts, the packaged teacher's tokenizer, truncated
at 512), and the passages are drawn from it. Prints tokens/s (real tokens, padding left
out) for each side and their ratio, and on a GPU the model FLOPs rate (2 x parameters x
tokens) against ``--peak-tflops``. A benchmark, not a test: record the figures and the
machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

LENGTHS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "passage_tokens.json")
VOCAB = 32000
SPECIALS = ["<pad>", "<unk>", "<s>"]
SHAPES = {
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}


def passage_lengths(n: int, seed: int = 0) -> list[int]:
    """``n`` token lengths drawn from the embedded extracts' histogram (with <s>, so >= 2)."""
    with open(LENGTHS) as f:
        hist = json.load(f)["tokens_by_length"]
    lengths = np.repeat([int(k) for k in hist], [int(v) for v in hist.values()])
    rng = np.random.default_rng(seed)
    return [max(2, int(x)) for x in rng.choice(lengths, size=n, replace=n > len(lengths))]


def passages(lengths: list[int], seed: int = 0) -> list[str]:
    """Texts of random words; with the word-level tokenizer, ``length - 1`` words + <s>."""
    rng = np.random.default_rng(seed + 1)
    return [" ".join(f"w{i}" for i in rng.integers(0, VOCAB - len(SPECIALS), size=length - 1)) for length in lengths]


def build_teacher(shape: str, out: str, device: str, dtype: torch.dtype, max_length: int) -> str:
    """A random Mistral-shaped sentence-transformers model (mean pooling) saved under ``out``."""
    import inspect

    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers 6; older versions have them in sentence_transformers.models
        from sentence_transformers.sentence_transformer.modules import (
            Pooling,
            Transformer,
        )
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import AutoModel, MistralConfig, PreTrainedTokenizerFast

    backbone = os.path.join(out, "backbone")
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i + len(SPECIALS) for i in range(VOCAB - len(SPECIALS))})
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                            bos_token="<s>").save_pretrained(backbone)
    config = MistralConfig(vocab_size=VOCAB, max_position_embeddings=max(max_length, 512), pad_token_id=0,
                           bos_token_id=2, eos_token_id=2, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):  # 7B parameters initialise in seconds on a GPU, minutes on a CPU
        AutoModel.from_config(config, dtype=dtype).save_pretrained(backbone)
    # Loaded in the saved dtype (the keyword was renamed in sentence-transformers 6).
    load = ({"model_kwargs": {"dtype": dtype}} if "model_kwargs" in inspect.signature(Transformer.__init__).parameters
            else {"model_args": {"torch_dtype": dtype}})
    st = SentenceTransformer(modules=[Transformer(backbone, max_seq_length=max_length, **load),
                                      Pooling(config.hidden_size, "mean")], device="cpu")
    folder = os.path.join(out, "teacher")
    st.save(folder)
    return folder


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def time_quarry(quarry, texts: list[str], lengths: list[int], budget: int, dtype: torch.dtype, args):
    """(parameters, best seconds over all texts, vectors of the first 256) of Quarry's teacher."""
    assert quarry.token_lengths(texts[:50]) == [min(n, args.max_length) for n in lengths[:50]], "tokenizer mismatch"
    weights = {x.dtype for x in quarry.model.parameters()}
    assert weights == {dtype}, f"the teacher loaded as {weights}, not {dtype}"
    quarry.encode(texts[:64], max_batch_tokens=budget)  # warm-up: kernels, allocator
    seconds = best_of(args.repeats, lambda: quarry.encode(texts, max_batch_tokens=budget))
    return (sum(x.numel() for x in quarry.model.parameters()), seconds,
            quarry.encode(texts[:256], max_batch_tokens=budget))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="mistral-7b")
    p.add_argument("--passages", type=int, default=20000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16",
                   help="the teacher's precision: bf16 saves bf16 weights and runs both sides under bf16 autocast")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-tokens", type=int, help="Quarry's padded-token budget (default: the device's)")
    p.add_argument("--st-batch", type=int, default=32, help="sentence-transformers' texts per pass (its default)")
    p.add_argument("--repeats", type=int, default=1, help="timed passes per side, best kept")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--json", help="write the results here (benchmarks/gpu_check.py reads them)")
    args = p.parse_args()

    from contextlib import nullcontext

    from sentence_transformers import SentenceTransformer

    from miners.teacher import Teacher, TeacherSpec
    from pipelines.runtime.encoding import (  # imports no Ray at module level
        CPU_BATCH_TOKENS,
        GPU_BATCH_TOKENS,
    )

    device = args.device
    kind = device.split(":")[0]
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    budget = args.batch_tokens or (GPU_BATCH_TOKENS if kind == "cuda" else CPU_BATCH_TOKENS)
    work = tempfile.mkdtemp(prefix="quarry-teacher-throughput-")
    t = time.perf_counter()
    folder = build_teacher(args.shape, work, device, dtype, args.max_length)
    print(f"teacher {args.shape} ({args.precision}) built in {time.perf_counter() - t:.1f} s: {folder}", flush=True)

    lengths = passage_lengths(args.passages)
    texts = passages(lengths)
    tokens = sum(min(n, args.max_length) for n in lengths)
    params, q_seconds, q_vectors = time_quarry(Teacher(TeacherSpec(teacher=folder, precision=args.precision,
                                                                   max_length=args.max_length), device=device),
                                               texts, lengths, budget, dtype, args)
    print(f"{len(texts)} passages, {tokens} tokens (mean {tokens / len(texts):.1f}); {params / 1e6:,.1f} M parameters "
          f"in {args.precision}; {device}", flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # Quarry's teacher is gone: room for sentence-transformers' copy

    st = SentenceTransformer(folder, device=device, local_files_only=True)
    st.max_seq_length = args.max_length
    autocast = torch.autocast(kind, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()

    def st_encode(batch):
        with autocast:
            return st.encode(batch, batch_size=args.st_batch, convert_to_numpy=True, show_progress_bar=False,
                             normalize_embeddings=True)

    st_encode(texts[:64])
    s_seconds = best_of(args.repeats, lambda: st_encode(texts))
    agree = float(np.min(np.sum(q_vectors * st_encode(texts[:256]).astype(np.float32), axis=1)))

    name = torch.cuda.get_device_name() if kind == "cuda" else f"{platform.machine()}, {os.cpu_count()} CPUs"
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs"
          + (f", {name}" if kind == "cuda" else "") + f"; torch {torch.__version__}")
    print(f"{'encoder':42} {'seconds':>8} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6}")
    sides = {}
    for side, label, seconds in (("quarry", f"Quarry Teacher.encode, budget {budget} tokens", q_seconds),
                                 ("sentence_transformers", f"sentence-transformers encode, {args.st_batch} per pass",
                                  s_seconds)):
        tflops = 2 * params * tokens / seconds / 1e12
        sides[side] = {"seconds": seconds, "tokens_per_s": tokens / seconds, "tflops": tflops,
                       "mfu": tflops / args.peak_tflops if kind == "cuda" else None}
        mfu = f"{tflops / args.peak_tflops:6.1%}" if kind == "cuda" else "     -"
        print(f"{label:42} {seconds:8.1f} {tokens / seconds:10.0f} {tflops:8.2f} {mfu}")
    print(f"Quarry vs sentence-transformers: {s_seconds / q_seconds:.2f}x the tokens/s; "
          f"lowest cosine between their vectors of the first {len(q_vectors)} passages: {agree:.5f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "shape": args.shape, "precision": args.precision,
                       "passages": len(texts), "tokens": tokens, "parameters": params, "budget": budget,
                       "st_batch": args.st_batch, **sides, "ratio": s_seconds / q_seconds, "lowest_cosine": agree},
                      f, indent=1)


if __name__ == "__main__":
    main()
