"""Training-step throughput of an EmbeddingModel for a given backbone and batch shape.

    python benchmarks/train_throughput.py --backbone tiny:mistral --batch 16 --negatives 7 --seq 128
    python benchmarks/train_throughput.py --backbone mistral-7b-shape --bf16 --lora --seq 512 --batch 8 \
        --checkpointing both   # on a GPU: gradient checkpointing on, then off, one model load

One process, no Ray: forward + backward + optimizer step of the contrastive loss on
random token ids (queries, positives and negatives in one forward pass, as in training).
Prints examples/s (queries per second), tokens/s and, on a GPU, model FLOPs utilisation
(6 x parameters x tokens for forward + backward through the backbone, 4 x with LoRA,
where frozen weights get no gradient, over the GPU's dense bf16 peak, --peak-tflops;
the forward pass that checkpointing repeats is not counted). ``mistral-7b-shape`` builds a
Mistral-7B-shaped model with random weights (no download). A setting that runs out of GPU
memory is reported as such, and the next one still runs. ``--json PATH`` writes one record
per setting (benchmarks/gpu_check.py reads it).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from trainers import EmbeddingModel, LoraSettings, PoolingConfig  # noqa: E402
from trainers.loss import loss_from_embeddings  # noqa: E402


def build_backbone(name: str) -> str:
    if name.startswith("tiny:"):
        from pipelines.builders.sources import load_embedded_table
        from trainers.tiny import build_tiny_decoder

        texts = load_embedded_table("en", 300).column("extract").to_pylist()
        return build_tiny_decoder(name.split(":")[1], os.path.join(tempfile.mkdtemp(), "m"), texts)
    if name == "mistral-7b-shape":
        from transformers import AutoModel, MistralConfig

        from trainers.tiny import train_tokenizer

        out = os.path.join(tempfile.mkdtemp(), "m")
        cfg = MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = AutoModel.from_config(copy.deepcopy(cfg), dtype=torch.bfloat16)
        model.save_pretrained(out)
        train_tokenizer(["a b c"] * 10, vocab_size=300).save_pretrained(out)
        return out
    from storage import resolve_packaged

    return resolve_packaged(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tiny:mistral")
    p.add_argument("--batch", type=int, default=16, help="queries per step")
    p.add_argument("--negatives", type=int, default=7)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--pooling", default="latent_attention")
    p.add_argument("--lora", action="store_true")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--checkpointing", choices=["off", "on", "both"], default="off",
                   help="gradient checkpointing of the backbone; both: on, then off, on one loaded model")
    p.add_argument("--gradient-checkpointing", action="store_const", const="on", dest="checkpointing",
                   help="the same as --checkpointing on")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--json", help="write the results here, one record per checkpointing setting")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = build_backbone(args.backbone)
    model = EmbeddingModel.from_pretrained(path, pooling=PoolingConfig(mode=args.pooling), attn_implementation=args.attn,
                                           dtype=torch.bfloat16 if args.bf16 else None,
                                           lora=LoraSettings() if args.lora else None).to(device)
    params = sum(p.numel() for p in model.backbone.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    print(f"device: {name}; backbone {args.backbone} ({params / 1e6:.1f} M parameters), pooling {args.pooling}, "
          f"LoRA {args.lora}, bf16 {args.bf16}, seq {args.seq}, {args.batch} queries x (1 + 1 + {args.negatives})",
          flush=True)
    records = []
    for checkpointing in (["on", "off"] if args.checkpointing == "both" else [args.checkpointing]):
        record = {"device": name, "backbone": args.backbone, "parameters": params, "lora": args.lora,
                  "bf16": args.bf16, "seq": args.seq, "batch": args.batch, "negatives": args.negatives,
                  "attn": args.attn, "checkpointing": checkpointing}
        record.update(time_steps(model, optimizer, args, device, params, checkpointing))
        records.append(record)
        if "error" in record:
            print(f"checkpointing {checkpointing}: {record['error']}", flush=True)
            continue
        print(f"checkpointing {checkpointing}: step {record['step_ms']:.1f} ms; {record['examples_per_s']:.1f} "
              f"examples/s; {record['tokens_per_s']:.0f} tokens/s", flush=True)
        if device == "cuda":
            print(f"MFU {record['mfu']:.1%} ({4 if args.lora else 6} x params x tokens per step over "
                  f"{args.peak_tflops} TFLOP/s); peak memory {record['peak_memory_gib']:.1f} GiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


def time_steps(model, optimizer, args, device: str, params: int, checkpointing: str) -> dict:
    """Mean step time after 2 warm-up steps, and what follows from it; or the error that
    ended the setting (out of GPU memory)."""
    base = model.backbone
    if checkpointing == "on":
        (getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable)()
    else:
        (getattr(base, "activation_checkpointing_disable", None) or base.gradient_checkpointing_disable)()
    model.train()
    n = args.batch * (2 + args.negatives)
    vocab = model.tokenizer.vocab_size if hasattr(model.tokenizer, "vocab_size") else 1000
    ids = torch.randint(5, min(vocab, 30000) - 1, (n, args.seq), device=device)
    mask = torch.ones_like(ids)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    try:
        for step in range(args.steps + 2):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            emb = model(input_ids=ids, attention_mask=mask, embed_mask=mask)
            b = args.batch
            loss = loss_from_embeddings(emb[:b], emb[b:2 * b], emb[2 * b:].reshape(b, args.negatives, -1), 0.02, True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device == "cuda":
                torch.cuda.synchronize()  # a CPU-GPU sync point: only to time the step
            if step >= 2:  # the first steps warm up kernels and the allocator
                times.append(time.perf_counter() - t)
    except torch.cuda.OutOfMemoryError:
        optimizer.zero_grad(set_to_none=True)
        emb = loss = None
        torch.cuda.empty_cache()
        return {"error": f"out of GPU memory at {args.batch} queries x {2 + args.negatives} sequences of {args.seq} "
                         "tokens"}
    step_s = sum(times) / len(times)
    tokens = n * args.seq
    out = {"step_ms": step_s * 1000, "examples_per_s": args.batch / step_s, "tokens_per_s": tokens / step_s}
    if device == "cuda":
        # Forward 2N, backward 2N for activation gradients, +2N for weight gradients unless the
        # weights are frozen (LoRA): 6N or 4N FLOPs per token through the backbone.
        per_token = (4 if args.lora else 6) * params
        out["mfu"] = per_token * tokens / step_s / (args.peak_tflops * 1e12)
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


if __name__ == "__main__":
    main()
