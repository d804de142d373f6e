"""The LLM2Vec peer check, side 2 of 2 (theirs.py first; its docstring has the commands):
Quarry under transformers 5 on the model and batch theirs.py saved. Prints a table of the
bidirectional hidden states and MNTP loss against llm2vec's, and the masking statistics of
``trainers.mntp.mask_for_mntp`` against transformers' MLM collator."""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM

from trainers.mntp import IGNORE, mask_for_mntp, mntp_loss, selected_logits
from trainers.model import _load_backbone

OUT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/quarry-llm2vec-peer"
theirs = np.load(os.path.join(OUT, "theirs.npz"))
masked, mask, labels = (torch.from_numpy(theirs[k]) for k in ("masked", "mask", "labels"))
print(f"Quarry, transformers {transformers.__version__}, against llm2vec 0.2.3 (transformers 4.44.2)")
print("| attention | max abs diff of hidden states (real tokens) | Quarry MNTP loss | on full logits | llm2vec loss |")
print("|---|---:|---:|---:|---:|")
for attn in ("eager", "sdpa"):
    causal, _ = _load_backbone(os.path.join(OUT, "llama"), True, attn, None, False, None,
                               auto_class=AutoModelForCausalLM)
    causal.eval()
    with torch.no_grad():
        hidden = causal.model(input_ids=masked, attention_mask=mask).last_hidden_state
        logits, targets = selected_logits(hidden, labels, causal.lm_head)
        loss, full = F.cross_entropy(logits, targets), mntp_loss(causal.lm_head(hidden), labels)
    diff = (hidden - torch.from_numpy(theirs["hidden"]))[mask.bool()].abs().max().item()
    print(f"| {attn} | {diff:.2e} | {float(loss):.6f} | {float(full):.6f} | {float(theirs['loss']):.6f} |")

# The Llama recipe (20%, 80/10/10) on the 200 sequences theirs.py gave the collator.
torch.manual_seed(1)
seqs = [[1] + list(range(10, 10 + n)) + [2] for n in (30, 50, 40, 60)] * 50
selected_at = np.zeros(62)
kinds = np.zeros(3)
for start in range(0, len(seqs), 8):
    chunk = seqs[start:start + 8]
    width = max(map(len, chunk))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in chunk])
    out = mask_for_mntp(ids, (ids != 0).long(), torch.tensor([0, 1, 2, 3]), 3, 0.2, "bert", 1000)
    chosen = out.labels != IGNORE
    selected_at[:width] += chosen.sum(0).numpy()
    kinds += [int(((out.input_ids == 3) & chosen).sum()), int(((out.input_ids == ids) & chosen).sum()),
              int(chosen.sum())]
plain = sum(len(s) - 2 for s in seqs)
theirs_at, theirs_kinds = theirs["selected_at"], theirs["kinds"]
print(f"selected, of non-special tokens: Quarry {kinds[2] / plain:.4f}, collator {theirs_kinds[2] / plain:.4f}")
print(f"positions ever selected are the same: {bool(((selected_at > 0) == (theirs_at > 0)).all())} "
      f"(never selected: {[int(i) for i in np.where(selected_at == 0)[0]]})")
print(f"of the selected, the mask token: Quarry {kinds[0] / kinds[2]:.3f}, collator {theirs_kinds[0] / theirs_kinds[2]:.3f}; "
      f"unchanged: Quarry {kinds[1] / kinds[2]:.3f}, collator {theirs_kinds[1] / theirs_kinds[2]:.3f}")
