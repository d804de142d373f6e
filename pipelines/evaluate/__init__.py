"""Evaluation: models scored with mteb's evaluators on an examples split, texts encoded with a
model, and the verdict of ``quarry run``.

    quarry eval --model M [--model M2]    # scoring.evaluate
    quarry encode --model M --input F     # encode.encode_file

Reading order: ``task_data`` (each task's data from the catalog) -> ``scoring`` (encode
through the shared cache, run mteb) -> ``results`` (the table) -> ``record`` (``eval.json``
and ``evals/<examples>``); ``report`` judges a trained model against its teacher and
writes ``quarry run``'s ``report.md``.
"""

from pipelines.evaluate.results import EvalResult, ModelEval
from pipelines.evaluate.scoring import EvalConfig, evaluate

__all__ = ["EvalConfig", "EvalResult", "ModelEval", "evaluate"]
