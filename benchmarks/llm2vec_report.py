"""The LLM2Vec chain's table and LLM2Vec's claims, from benchmarks/llm2vec_chain.py's results.

A claim is held where the scores order as the paper says, on the mean of the tasks' main
scores (nDCG@10, accuracy, V-measure) and on most tasks; the table shows every number it
rests on. Tested by tests/test_llm2vec_report.py.
"""

from __future__ import annotations

CLAIMS = (
    # (claim, [(better, worse), ...]): held when every pair orders so on the mean
    ("bidirectional attention alone hurts a Llama-family decoder (Bi below causal, mean pooling)",
     [("causal-mean", "bi")]),
    ("MNTP adapts the model to it (Bi + MNTP above Bi)", [("mntp", "bi")]),
    ("MNTP then SimCSE gives the best unsupervised encoder",
     [("simcse", k) for k in ("causal-last", "causal-mean", "bi", "bi-last", "mntp")]),
    ("supervised training on top gives the best model",
     [("sup-simcse", k) for k in ("simcse", "sup-causal", "sup-bi", "sup-mntp")]),
    ("mean pooling beats last-token pooling for the bidirectional model", [("bi", "bi-last")]),
    ("latent attention beats mean pooling (NV-Embed) at equal supervised steps", [("sup-bi-latent", "sup-bi")]),
    ("the supervised SmolLM2 beats the causal baseline", [("sup-simcse", "causal-last"), ("sup-simcse", "causal-mean")]),
    ("the supervised SmolLM2 beats the MiniLM student on the same negatives and steps", [("sup-simcse", "minilm")]),
)


def latest_scores(rows: list[dict], split: str) -> dict[str, dict]:
    """model key -> the latest score row on ``split``."""
    out: dict[str, dict] = {}
    for r in rows:
        if r.get("part") == "score" and r.get("split") == split:
            out[r["model"]] = r
    return out


def mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def claim_verdict(scored: dict[str, dict], pairs: list[tuple[str, str]]) -> str:
    missing = sorted({k for pair in pairs for k in pair if k not in scored})
    if missing:
        return f"not measured ({', '.join(missing)} not scored)"
    parts, held = [], True
    for better, worse in pairs:
        a, b = scored[better]["scores"], scored[worse]["scores"]
        wins = sum(a[t] > b[t] for t in a if t in b)
        diff = mean(a) - mean(b)
        held &= diff > 0
        parts.append(f"{better} − {worse} {diff:+.4f} (higher on {wins} of {len(a)} tasks)")
    return ("held: " if held else "not held: ") + "; ".join(parts)


def report(rows: list[dict], split: str, models: dict, unsupervised: list[str]) -> str:
    scored = latest_scores(rows, split)
    if not scored:
        return f"no scores on the {split} split yet"
    tasks = sorted({t for r in scored.values() for t in r["scores"]})
    trained = {r["model"]: r for r in rows if r.get("part") == "train"}
    lines = [f"### SmolLM2-135M, from causal LM to encoder ({split} split, main score per task)", "",
             "| model | " + " | ".join(t.removeprefix("vital-") for t in tasks) + " | mean | steps | train s |",
             "|---|" + "---:|" * (len(tasks) + 3)]
    for key, model in models.items():
        if key not in scored:
            continue
        r = scored[key]
        cells = [f"{r['scores'][t]:.4f}" if t in r["scores"] else "-" for t in tasks]
        steps = ", ".join(f"{k} {v}" for k, v in (r.get("steps") or {}).items()) or "untrained"
        wall = trained.get(key, {}).get("wall_s")
        lines.append(f"| {model.label} | " + " | ".join(cells) + f" | {mean(r['scores']):.4f} | {steps} | "
                     f"{'-' if wall is None else f'{wall:.0f}'} |")
    lines += ["", "### Claims", ""]
    lines += [f"- {claim}: {claim_verdict(scored, pairs)}" for claim, pairs in CLAIMS]
    best = max((k for k in unsupervised if k in scored), key=lambda k: mean(scored[k]["scores"]), default=None)
    if best:
        lines.append(f"- best unsupervised: {models[best].label} ({mean(scored[best]['scores']):.4f})")
    return "\n".join(lines)
