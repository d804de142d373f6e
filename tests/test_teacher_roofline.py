"""benchmarks/teacher_roofline.py counts a forward pass's model FLOPs by formula; the floor it
reports rests on that count, so the count is checked against torch's own FLOP
counter on a small BERT with eager attention (whose attention products are plain bmm)."""

import os
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.teacher_roofline import pass_flops  # noqa: E402


@pytest.mark.parametrize("rows,length", [(1, 9), (3, 17), (5, 64)])
def test_pass_flops_equals_torchs_count_of_a_bert_forward(rows, length):
    config = BertConfig(vocab_size=100, num_hidden_layers=2, hidden_size=64, intermediate_size=256,
                        num_attention_heads=4, attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()  # the pooler's output is unused by mean pooling
    ids = torch.randint(0, 100, (rows, length))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert pass_flops(rows, length, 2, 64, 256) == counter.get_total_flops()
