"""Checkpoint state is read with torch.load(weights_only=True): tensors and plain values only."""

import os

import pytest
import torch

from trainers.train_loop import STATE_FILE, load_state


class Payload:
    """Any class: unpickling it could run code, so weights_only refuses it."""


def test_a_real_checkpoint_state_loads_and_pickled_code_is_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = {"trainable": {n: p.detach() for n, p in model.named_parameters()}, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": 7}
    torch.save(state, tmp_path / STATE_FILE)
    loaded = load_state(str(tmp_path))
    assert loaded["step"] == 7 and torch.equal(loaded["trainable"]["weight"], model.weight.detach())
    optimizer.load_state_dict(loaded["optimizer"])  # the loop's own round trip
    scheduler.load_state_dict(loaded["scheduler"])

    os.remove(tmp_path / STATE_FILE)
    torch.save({"step": 1, "payload": Payload()}, tmp_path / STATE_FILE)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_state(str(tmp_path))
