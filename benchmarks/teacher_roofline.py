"""How close the teacher's fp32 encoding runs to this CPU's own matrix-multiply rate.

    python benchmarks/teacher_roofline.py [--every 10] [--repeats 3] [--budget 2048]

Why this exists: a cold mine at <= 0.5 of sentence-transformers' fp32 time was the
goal. Nearly all of a cold mine is the teacher's forward passes, and nearly all of those
are the Linear layers' matrix multiplies. This measures, in one process:

1. the CPU's fp32 GEMM rate at the teacher's own Linear shapes (``torch.nn.functional.linear``
   with ``--budget`` rows, the shapes of a Quarry forward pass), at torch's thread count;
2. Quarry's ``Teacher.encode`` (padded-token budget) and sentence-transformers' ``encode``
   (32 texts per pass, its default) on every ``--every``-th English vital text (the
   articles' extracts and their descriptions: a cold mine's two kinds of text), each the best of
   ``--repeats``, interleaved;
3. the model FLOPs each of those runs did (2 x multiply-adds of the Linear layers and of
   the attention products, per padded token of each pass; embeddings, norms, softmax,
   GELU and BERT's pooler, one row per text, left out; ``tests/test_teacher_roofline.py``
   checks the count against torch's FLOP counter), and so the share of the GEMM rate each
   reached;
4. the floor: the same texts encoded with no padding at all at 100% of the GEMM rate,
   against sentence-transformers' measured time.

If that floor is above 0.5 of sentence-transformers' time, no batching or backend that
keeps fp32 arithmetic can meet the goal on this CPU. A benchmark, not a test: record the
figures and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.teacher_backends import cpu_name  # noqa: E402
from miners.teacher import Teacher, TeacherSpec, native_bf16_cpu, plan_batches  # noqa: E402
from pipelines.builders.sources import load_embedded_table  # noqa: E402
from pipelines.runtime.encoding import CPU_BATCH_TOKENS  # noqa: E402

ST_BATCH = 32  # sentence-transformers' default batch_size


def gemm_rate(shapes: list[tuple[int, int, int]], repeats: int) -> float:
    """Best FLOP/s of ``linear`` over ``shapes`` (rows, in, out) run one after another, as a
    layer does."""
    import torch

    inputs = [(torch.randn(m, k), torch.randn(n, k), torch.randn(n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(20):
            for x, w, b in inputs:
                torch.nn.functional.linear(x, w, b)
        best = min(best, (time.perf_counter() - start) / 20)
    return flops / best


def pass_flops(rows: int, length: int, layers: int, hidden: int, intermediate: int) -> int:
    """Model FLOPs of one forward pass of ``rows`` texts padded to ``length`` tokens."""
    linear = layers * (4 * hidden * hidden + 2 * hidden * intermediate)  # Q, K, V, O; two FFN
    attention = layers * 2 * length * hidden  # QK^T and AV, per token
    return 2 * rows * length * (linear + attention)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=10, help="every N-th text (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best counts")
    parser.add_argument("--budget", type=int, default=CPU_BATCH_TOKENS,
                        help="Quarry's padded tokens per pass (default: its CPU budget, %(default)s)")
    args = parser.parse_args()
    if args.every < 1 or args.repeats < 1 or args.budget < 1:
        parser.error("--every, --repeats and --budget must be positive")
    import torch

    table = load_embedded_table("en", None)
    every = [t for col in ("extract", "description") for t in table.column(col).to_pylist() if t]
    texts = list(dict.fromkeys(every))  # a cold mine embeds each distinct text once
    sample = texts[:: args.every]
    teacher = Teacher(TeacherSpec(precision="fp32"), device="cpu")
    config = teacher.model[0].auto_model.config
    dims = (config.num_hidden_layers, config.hidden_size, config.intermediate_size)
    all_lengths = teacher.token_lengths(texts)
    lengths = all_lengths[:: args.every]
    threads = torch.get_num_threads()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, native bf16: {native_bf16_cpu()}; "
          f"torch {torch.__version__} ({threads} threads)")
    print(f"teacher: {config.model_type}, {dims[0]} layers, hidden {dims[1]}, intermediate {dims[2]}, "
          f"max length {teacher.max_length}")
    print(f"texts: {len(texts)} distinct ({sum(all_lengths)} tokens); sample every {args.every}-th: "
          f"{len(sample)} texts, {sum(lengths)} tokens")

    hidden, inter = dims[1], dims[2]
    shapes = [(args.budget, hidden, hidden)] * 4 + [(args.budget, hidden, inter), (args.budget, inter, hidden)]
    peak = gemm_rate(shapes, args.repeats)
    square = gemm_rate([(2048, 2048, 2048)], args.repeats)
    print(f"fp32 GEMM at the teacher's Linear shapes ({args.budget} rows): {peak / 1e9:.1f} GFLOP/s; "
          f"2048^3: {square / 1e9:.1f} GFLOP/s")

    quarry_passes = plan_batches(lengths, 64, args.budget)
    # sentence-transformers sorts its inputs by character count, longest first, then cuts
    # passes of 32: its padding, as far as a stable sort reproduces its argsort.
    st_order = sorted(range(len(sample)), key=lambda i: -len(sample[i]))
    st_passes = [st_order[i:i + ST_BATCH] for i in range(0, len(st_order), ST_BATCH)]

    def flops(passes) -> int:
        return sum(pass_flops(len(p), max(lengths[i] for i in p), *dims) for p in passes)

    runs = {
        "Quarry Teacher.encode": (lambda: teacher.encode(sample, 64, args.budget), quarry_passes),
        "sentence-transformers encode": (
            lambda: teacher.model.encode(sample, batch_size=ST_BATCH, show_progress_bar=False), st_passes),
    }
    teacher.encode(sample[:64], 64, args.budget)  # warm-up
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeats):
        for name, (run, _) in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)

    ideal = sum(pass_flops(1, n, *dims) for n in lengths)  # every text alone: no padding
    print(f"\n{'run':30} {'seconds':>8} {'padded tokens':>14} {'model GFLOP':>12} {'GFLOP/s':>8} {'of GEMM':>8}")
    for name, (_, passes) in runs.items():
        padded = sum(len(p) * max(lengths[i] for i in p) for p in passes)
        work = flops(passes)
        print(f"{name:30} {best[name]:8.2f} {padded:14d} {work / 1e9:12.1f} {work / best[name] / 1e9:8.1f} "
              f"{work / best[name] / peak:8.1%}")
    floor = ideal / peak
    st = best["sentence-transformers encode"]
    print(f"{'floor: no padding, 100% GEMM':30} {floor:8.2f} {sum(lengths):14d} {ideal / 1e9:12.1f} "
          f"{peak / 1e9:8.1f} {1:8.1%}")
    print(f"\nQuarry / sentence-transformers: {best['Quarry Teacher.encode'] / st:.2f}; "
          f"floor / sentence-transformers: {floor / st:.2f}")


if __name__ == "__main__":
    main()
