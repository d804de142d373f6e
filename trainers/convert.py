"""A saved model rewritten in the sentence-transformers convention (``quarry export-model``).

A model saved before that convention tokenized the instruction apart from the text and
never pooled ``[CLS]``/``<s>``; its folder loads in sentence-transformers only through
Quarry's module. Rewriting keeps every weight and changes what the weights see: the
instruction joined to the text, the leading special token pooled when there is no
instruction, positional weights for weighted mean (trainers/tokenization.py,
trainers/pooling.py). The new folder is checked twice: ``SentenceTransformer`` must encode
as Quarry does (to 1e-5), and the drift from the old vectors is measured and reported, since
only the user can say whether it matters (retrain, or re-embed an index, if it does).

Tested by tests/trainers/test_convert.py.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import numpy as np

from storage import InputError
from trainers.model import EmbeddingModel
from trainers.st_files import sentence_transformers_gap
from trainers.tokenization import SENTENCE_TRANSFORMERS

# Texts of several lengths and kinds, for when the user gives none.
PROBES = ("Family of birds", "Paris", "What is the boiling point of water at sea level?",
          "The Corvidae are a family of oscine passerine birds that contains the crows, ravens, rooks, jackdaws, "
          "jays, magpies, treepies, choughs and nutcrackers.",
          "Quantum chromodynamics is the theory of the strong interaction between quarks and gluons.",
          "x y", "1912 Summer Olympics", "A river is a natural flowing watercourse, usually freshwater.")
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Conversion:
    form: str  # trainers.st_files: standard | latent | custom
    texts: int
    prompts: int
    st_gap: float  # SentenceTransformer(new) against Quarry on the new folder
    drift: float  # largest coordinate change from the old model's vectors
    min_cosine: float  # the least cosine between a text's old and new vector

    def summary(self, new: str) -> str:
        return (f"wrote {new} ({self.form} sentence-transformers folder): on {self.texts} texts x "
                f"{self.prompts + 1} prompts, sentence-transformers matches Quarry to {self.st_gap:.1e}; "
                f"against the old model the vectors moved by at most {self.drift:.4f} per coordinate, "
                f"least cosine {self.min_cosine:.4f}")


def _vectors(model: EmbeddingModel, texts: list[str]) -> np.ndarray:
    prompts = [None, *model.config.prompts.values()]
    return np.concatenate([model.encode(texts, prompt) for prompt in prompts])


def convert(old: str, new: str, texts: list[str] | None = None) -> Conversion:
    """Rewrite the model at ``old`` into ``new`` (which must not exist yet), written whole or
    not at all."""
    if os.path.exists(new):
        raise InputError(f"{new} exists: give a new folder for the converted model")
    texts = list(texts or PROBES)
    model = EmbeddingModel.from_pretrained(old)
    before = _vectors(model, texts)
    config = model.config
    config.convention = SENTENCE_TRANSFORMERS
    converted = EmbeddingModel(model.backbone, model.tokenizer, config)
    converted.pooler.load_state_dict(model.pooler.state_dict())
    partial = f"{new.rstrip('/')}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        form = converted.save_pretrained(partial)
        reloaded = EmbeddingModel.from_pretrained(partial)
        gap = sentence_transformers_gap(partial, reloaded, texts)
        if gap > TOLERANCE:
            raise RuntimeError(f"the converted model encodes differently in sentence-transformers ({gap:.2e} > "
                               f"{TOLERANCE:.0e}); nothing was written to {new}")
        after = _vectors(reloaded, texts)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.rename(partial, new)
    cosines = (before * after).sum(axis=1)
    return Conversion(form=form, texts=len(texts), prompts=len(config.prompts), st_gap=gap,
                      drift=float(np.abs(before - after).max()), min_cosine=float(cosines.min()))
