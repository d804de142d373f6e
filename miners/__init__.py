"""Quarry miners: teacher embedding, FAISS search and hard-negative selection (see issue 3)."""
