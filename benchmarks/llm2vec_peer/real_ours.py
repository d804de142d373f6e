"""The LLM2Vec peer check on a real decoder, Quarry's side (real_theirs.py's docstring has
the commands). ``batch``: a fixed right-padded batch tokenized as Quarry tokenizes
documents (EOS appended). ``compare``: Quarry's bidirectional backbone under
transformers 5 on the same folder and batch against llm2vec's hidden states, with the
causal model as the control."""
import os
import sys

import numpy as np
import torch
import transformers

from trainers.model import EmbeddingModel, _load_backbone

TEXTS = ["The capital of France is Paris.", "Quantum chromodynamics describes the strong interaction.",
         "A river flows to the sea."]
PART, FOLDER, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
if PART == "batch":
    os.makedirs(OUT, exist_ok=True)
    features = EmbeddingModel.from_pretrained(FOLDER, pooling="mean").tokenize(TEXTS)
    np.savez(os.path.join(OUT, "batch.npz"), ids=features["input_ids"].numpy(), mask=features["attention_mask"].numpy())
    print(f"wrote {OUT}/batch.npz: {tuple(features['input_ids'].shape)}")
    sys.exit(0)
theirs = np.load(os.path.join(OUT, "theirs.npz"))
batch = np.load(os.path.join(OUT, "batch.npz"))
ids, mask = torch.from_numpy(batch["ids"]), torch.from_numpy(batch["mask"])
real = mask.bool()
print(f"Quarry (transformers {transformers.__version__}) against llm2vec 0.2.3 (transformers 4.44.2) on SmolLM2-135M, "
      f"{int(real.sum())} real tokens")
print("| attention | Quarry bidirectional vs llm2vec: max abs diff | Quarry causal vs llm2vec: max abs diff |")
print("|---|---:|---:|")
for attn in ("eager", "sdpa"):
    diffs = []
    for bidirectional in (True, False):
        model, _ = _load_backbone(FOLDER, bidirectional, attn, torch.float32, False, None)
        with torch.no_grad():
            hidden = model.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
        diffs.append((hidden - torch.from_numpy(theirs["hidden"]))[real].abs().max().item())
    print(f"| {attn} | {diffs[0]:.2e} | {diffs[1]:.2e} |")
