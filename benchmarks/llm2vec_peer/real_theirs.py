"""The LLM2Vec peer check on a real decoder, llm2vec's side: 0.2.3's bidirectional
``LlamaBiModel`` on the dequantised SmolLM2-135M folder, in the throwaway venv of theirs.py,
on the batch real_ours.py wrote (the venv's tokenizers cannot read a tokenizer.json that
transformers 5 saved):

    FOLDER=$(.venv/bin/python -c "from storage.packaged import resolve_packaged as r; print(r('packaged:smollm2-135m'))")
    .venv/bin/python benchmarks/llm2vec_peer/real_ours.py batch $FOLDER /tmp/quarry-llm2vec-real
    /tmp/l2v/bin/python benchmarks/llm2vec_peer/real_theirs.py $FOLDER /tmp/quarry-llm2vec-real
    .venv/bin/python benchmarks/llm2vec_peer/real_ours.py compare $FOLDER /tmp/quarry-llm2vec-real

transformers 5 writes the rotary base under ``rope_parameters``; 4.44 reads ``rope_theta``,
so it is copied across (without it 4.44 would silently use 10,000 instead of 100,000).
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from llm2vec.models import LlamaBiModel
from transformers import LlamaConfig

FOLDER, OUT = sys.argv[1], sys.argv[2]
batch = np.load(os.path.join(OUT, "batch.npz"))
ids, mask = torch.from_numpy(batch["ids"]), torch.from_numpy(batch["mask"])
raw = json.load(open(os.path.join(FOLDER, "config.json")))
config = LlamaConfig.from_pretrained(FOLDER)
config.rope_theta = raw.get("rope_theta") or raw["rope_parameters"]["rope_theta"]
model = LlamaBiModel.from_pretrained(FOLDER, config=config, attn_implementation="eager", torch_dtype=torch.float32)
with torch.no_grad():
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
np.savez(os.path.join(OUT, "theirs.npz"), hidden=hidden.numpy())
print(f"llm2vec 0.2.3, transformers {transformers.__version__}, rope_theta {config.rope_theta}: "
      f"hidden states {tuple(hidden.shape)} saved to {OUT}")
