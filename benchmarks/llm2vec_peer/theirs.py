"""The LLM2Vec peer check, side 1 of 2: llm2vec 0.2.3 under transformers 4.44.2, the newest
transformers it allows, so it runs in a throwaway venv (docs/llm2vec.md):

    python3 -m venv /tmp/l2v && /tmp/l2v/bin/pip install torch==2.13.0 transformers==4.44.2 peft==0.12.0 \\
        numpy tqdm tokenizers && /tmp/l2v/bin/pip install --no-deps llm2vec==0.2.3
    /tmp/l2v/bin/python benchmarks/llm2vec_peer/theirs.py && .venv/bin/python benchmarks/llm2vec_peer/ours.py

Saves a tiny random Llama (with its LM head), then records on a fixed masked batch the
bidirectional hidden states of llm2vec's LlamaBiModel and the MNTP loss of its
LlamaBiForMNTP, and the masking statistics of transformers' MLM collator with LLM2Vec's
Llama recipe (20%, 80/10/10). ours.py computes the same with Quarry and compares.
"""
import os
import sys

import numpy as np
import torch
import transformers
from llm2vec.models import LlamaBiForMNTP
from tokenizers import Tokenizer, models
from transformers import DataCollatorForLanguageModeling, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

OUT = sys.argv[1] if len(sys.argv) > 1 else "/tmp/quarry-llm2vec-peer"  # ours.py reads it from here
os.makedirs(OUT, exist_ok=True)

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
LlamaForCausalLM(cfg).save_pretrained(os.path.join(OUT, "llama"))
model = LlamaBiForMNTP.from_pretrained(os.path.join(OUT, "llama"), attn_implementation="eager").eval()

# One right-padded batch; about half of its non-special tokens selected and replaced by id 5.
ids = torch.tensor([[1, 10, 11, 12, 13, 14, 15, 2, 0, 0], [1, 20, 21, 22, 23, 24, 25, 26, 27, 2]])
mask = (ids != 0).long()
draw = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3))
labels = torch.where((draw < 0.5) & mask.bool() & (ids > 2), ids, torch.tensor(-100))
labels[:, 0] = -100
masked = torch.where(labels != -100, torch.tensor(5), ids)
with torch.no_grad():
    hidden = model.model(input_ids=masked, attention_mask=mask).last_hidden_state
    loss = model(input_ids=masked, attention_mask=mask, labels=labels).loss

# transformers' MLM collator, as LLM2Vec's Llama MNTP runs use it, over 200 sequences.
vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "_": 3, **{f"t{i}": i for i in range(4, 1000)}}
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<pad>")), bos_token="<s>",
                              eos_token="</s>", pad_token="<pad>", mask_token="_")
collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.2)
torch.manual_seed(1)
batch = [{"input_ids": [1] + list(range(10, 10 + n)) + [2]} for n in (30, 50, 40, 60)] * 50
selected_at = np.zeros(62)
kinds = np.zeros(3)  # replaced by the mask token, left unchanged, selected
for start in range(0, len(batch), 8):
    out = collator(batch[start:start + 8])
    chosen = out["labels"] != -100
    selected_at[:chosen.shape[1]] += chosen.sum(0).numpy()
    original = torch.where(chosen, out["labels"], torch.tensor(0))
    kinds += [int(((out["input_ids"] == tok.mask_token_id) & chosen).sum()),
              int(((out["input_ids"] == original) & chosen).sum()), int(chosen.sum())]
np.savez(os.path.join(OUT, "theirs.npz"), mask=mask.numpy(), labels=labels.numpy(), masked=masked.numpy(),
         hidden=hidden.numpy(), loss=loss.numpy(), selected_at=selected_at, kinds=kinds)
print(f"llm2vec 0.2.3, transformers {transformers.__version__}: MNTP loss {float(loss):.6f}; saved to {OUT}")
