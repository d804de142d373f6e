"""Quarry trainers: the NV-Embed contrastive model and trainer (see issue 4)."""
