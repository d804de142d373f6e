"""The teacher's CPU backends side by side: torch (what Quarry ships) against ONNX Runtime.

    pip install onnxruntime onnx      # not Quarry dependencies: only this benchmark needs them
    python benchmarks/teacher_backends.py [--texts 600] [--repeats 2] [--budget 2048] [--bf16]

Why this exists: a ``--teacher-backend onnx|openvino`` would go through
sentence-transformers' ``backend=`` and optimum's export and quantisation. Those need
optimum, and no optimum release installs beside transformers 5 (docs/benchmarks.md), so
this measures what ONNX Runtime itself would give, with each library's own tools:

- ``torch fp32``: ``Teacher.encode``, the path Quarry ships (token-budget batching);
- ``torch bf16``: the same under bf16 autocast (``--bf16``; emulated, and slow, on a CPU
  without AVX-512 BF16 or AMX);
- ``onnx fp32``: the whole sentence-transformers model (transformer, pooling) exported by
  ``torch.onnx.export``, its graph fused by ONNX Runtime's transformer optimizer
  (attention, GELU, skip layer-norm; the model is loaded with eager attention for the
  export, since the optimizer does not recognise the SDPA graph), run by ONNX Runtime;
- ``onnx int8``: that graph with ONNX Runtime's ``quantize_dynamic`` (int8 weights,
  activations quantised per call).

Every backend encodes the same real texts (the first ``--texts`` English vital-article
extracts) in the same forward passes (``plan_batches`` at ``--budget`` padded tokens), with the
same tokenizer (sentence-transformers' ``preprocess``) and fp32 L2 normalisation. Prints,
per backend, the best wall time of ``--repeats``, its speed against torch fp32, the
lowest and mean cosine of its vectors to torch fp32's, and its **batch dependence**: the
lowest cosine between a text's vector in these passes and in passes of a 256-token budget.
Quarry's embedding cache is keyed by text, so a backend whose vector for a text depends
on the texts batched with it cannot fill it. A benchmark, not a test: record the figures
and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from miners.teacher import Teacher, TeacherSpec, native_bf16_cpu, plan_batches  # noqa: E402
from pipelines.builders.sources import load_embedded_table  # noqa: E402
from pipelines.runtime.encoding import CPU_BATCH_TOKENS  # noqa: E402

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OTHER_BUDGET = 256  # the second batching, for batch dependence


def export_onnx(teacher: Teacher, folder: str, texts: list[str]) -> tuple[str, str]:
    """(fused fp32 graph, its int8 quantisation): the teacher's folder, loaded with eager
    attention, exported whole (pooling included), then optimised and quantised by ONNX
    Runtime's own tools."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(teacher.resolved.path, device="cpu", local_files_only=True,
                                model_kwargs={"attn_implementation": "eager"})
    model.max_seq_length = teacher.max_length

    class Whole(torch.nn.Module):
        """The sentence-transformers pipeline as one forward of tensors (what the exporter takes)."""

        def __init__(self, st):
            super().__init__()
            self.st = st

        def forward(self, input_ids, attention_mask, token_type_ids):
            features = {"input_ids": input_ids, "attention_mask": attention_mask,
                        "token_type_ids": token_type_ids, "modality": "text"}
            return self.st(features)["sentence_embedding"]

    sample = model.preprocess(texts[:4])
    raw, fused, quantised = (os.path.join(folder, n) for n in ("model.onnx", "fused.onnx", "int8.onnx"))
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS} | {"embedding": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings about Python control flow
        torch.onnx.export(Whole(model).eval(), tuple(sample[n] for n in INPUTS), raw, input_names=list(INPUTS),
                          output_names=["embedding"], dynamic_axes=axes, dynamo=False, opset_version=17)
    config = model[0].auto_model.config
    optimised = optimizer.optimize_model(raw, model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size)
    fusions = {k: v for k, v in optimised.get_fused_operator_statistics().items() if v}
    print(f"ONNX Runtime fusions: {fusions}")
    optimised.save_model_to_file(fused)
    quantize_dynamic(fused, quantised, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return fused, quantised


def onnx_encoder(path: str, teacher: Teacher, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = [i.name for i in session.get_inputs()]

    def forward(texts: list[str]) -> np.ndarray:
        features = teacher.model.preprocess(texts)
        return session.run(None, {n: features[n].numpy() for n in feeds})[0]

    return forward


def encode(forward, texts: list[str], lengths: list[int], dim: int, budget: int) -> np.ndarray:
    """Rows in input order, in the passes ``plan_batches`` makes, L2-normalised in fp32."""
    out = np.empty((len(texts), dim), dtype=np.float32)
    for rows in plan_batches(lengths, 64, budget):
        out[rows] = forward([texts[i] for i in rows])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=600, help="English extracts to encode (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per backend; the best counts")
    parser.add_argument("--budget", type=int, default=CPU_BATCH_TOKENS,
                        help="padded tokens per forward pass (default: Quarry's CPU budget, %(default)s)")
    parser.add_argument("--bf16", action="store_true", help="also torch under bf16 autocast")
    args = parser.parse_args()
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        sys.exit("this benchmark needs ONNX Runtime: pip install onnxruntime onnx")

    table = load_embedded_table("en", None)
    texts = [t for t in table.column("extract").to_pylist() if t][: args.texts]
    import torch

    threads = torch.get_num_threads()
    teacher = Teacher(TeacherSpec(precision="fp32"), device="cpu")
    lengths = teacher.token_lengths(texts)
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, native bf16: "
          f"{native_bf16_cpu()}; torch {torch.__version__} ({threads} threads), onnxruntime {onnxruntime.__version__}")
    print(f"{len(texts)} extracts, {sum(lengths)} tokens, passes of at most {args.budget} padded tokens")

    backends = {"torch fp32": lambda batch: teacher.encode(batch, batch_size=len(batch))}
    if args.bf16:
        bf16 = Teacher(TeacherSpec(precision="bf16"), device="cpu")
        backends["torch bf16"] = lambda batch: bf16.encode(batch, batch_size=len(batch))
    with tempfile.TemporaryDirectory(prefix="quarry-teacher-backends-") as folder:
        fused, quantised = export_onnx(teacher, folder, texts)
        backends["onnx fp32"] = onnx_encoder(fused, teacher, threads)
        backends["onnx int8"] = onnx_encoder(quantised, teacher, threads)

        reference, base = None, None
        print(f"{'backend':12} {'best s':>8} {'texts/s':>8} {'speed':>6} {'min cos':>9} {'mean cos':>9} "
              f"{'batch dep. min cos':>19}")
        for name, forward in backends.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                vectors = encode(forward, texts, lengths, teacher.dim, args.budget)
                times.append(time.perf_counter() - start)
            other = encode(forward, texts, lengths, teacher.dim, OTHER_BUDGET)
            if reference is None:
                reference, base = vectors, min(times)
            cosine = (vectors * reference).sum(axis=1)
            print(f"{name:12} {min(times):8.2f} {len(texts) / min(times):8.1f} {base / min(times):5.2f}x "
                  f"{cosine.min():9.6f} {cosine.mean():9.6f} {(vectors * other).sum(axis=1).min():19.6f}")


if __name__ == "__main__":
    main()
