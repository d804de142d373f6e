"""Deterministic randomness keyed on what it is for, never on call order.

Every random choice in Quarry (a split, a sampled negative, a batch order, dropout noise)
is keyed on a seed and the ids it concerns, e.g. ``(seed, example_id)`` or
``(seed, "step", step, rank)``: the same inputs give the same draw on every run, worker and
machine, and a resumed run repeats an uninterrupted one (tevatron's negative rotation).

Tested by tests/storage/test_seeding_render.py.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_seed(*parts: object, nbytes: int = 8) -> int:
    """An unsigned integer of ``nbytes`` bytes from sha256 of ``"p1:p2:..."``."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:nbytes], "big")


def stable_rng(*parts: object) -> np.random.Generator:
    """A numpy generator seeded with ``stable_seed(*parts)``."""
    return np.random.default_rng(stable_seed(*parts))


def stable_unit(*parts: object) -> float:
    """A number in [0, 1) from ``stable_seed(*parts)``: one uniform draw without a generator."""
    return stable_seed(*parts) / 2.0**64


def mask_key(text: str) -> int:
    """Signed 64-bit key of a text: equal texts, equal keys, so a loss can mask a text that
    is its own positive (the shards' ``pos_key``/``neg_keys``, SimCSE's batch keys)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big", signed=True)
