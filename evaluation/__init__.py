"""Evaluation: mteb's evaluators fed from Quarry's Parquet, for Quarry models and
sentence-transformers models alike.

Layering: above ``storage``, ``miners`` and ``trainers`` (it loads their models and reads
their caches), below ``pipelines`` (which embeds on Ray and writes the ``evals`` dataset).
"""
