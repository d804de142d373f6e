"""The sentence-transformers files of a saved model: which form it takes, and proof that it
encodes as Quarry does.

Three forms, the first that fits:

- ``standard``: mean, weighted-mean and last-token pooling under the sentence-transformers
  convention (trainers/tokenization.py) are ``Transformer`` + ``Pooling(include_prompt=
  False)`` + ``Normalize``, in the classic folder layout most of the hub uses. No module
  outside sentence-transformers is named: ``SentenceTransformer(folder)`` loads it anywhere.
- ``latent``: latent attention is ``Transformer`` + ``quarry_latent_attention.
  LatentAttentionHead``, whose code is written into the folder from
  trainers/latent_attention.py, byte for byte the file Quarry runs, so
  ``SentenceTransformer(folder, trust_remote_code=True)`` loads it without Quarry, as
  NV-Embed-v2 ships its own head.
- ``custom``: anything else (the legacy ``quarry`` convention, a tokenizer that cannot append
  its EOS itself, a LoRA adapter kept apart) names ``trainers.st_module.QuarryEncoder``,
  which needs Quarry installed and ``trust_remote_code=True``; saving says so in the log.

Quarry's own files (quarry_embedding.json, and pooling.pt for the custom form) sit beside
them; ``EmbeddingModel.from_pretrained`` reads the head's weights from whichever form holds
them. Tested by tests/trainers/test_sentence_transformers_export.py and, on a Python with
no Quarry, tests/trainers/test_portable_model.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import torch

from trainers import latent_attention
from trainers.config import PARAMETER_FREE_POOLING
from trainers.tokenization import SENTENCE_TRANSFORMERS, JoinedInputs, boundary_merges

log = logging.getLogger("quarry")

ST_CONFIG_NAME = "config_sentence_transformers.json"
POOLING_WEIGHTS = "pooling.pt"
HEAD_FILE = "quarry_latent_attention.py"
HEAD_DIR = "1_LatentAttention"
HEAD_TYPE = "quarry_latent_attention.LatentAttentionHead"
STANDARD, LATENT, CUSTOM = "standard", "latent", "custom"
ST_POOLING = {"mean": "mean_tokens", "weighted_mean": "weightedmean_tokens", "last_token": "lasttoken"}
# Written by this module (or an older Quarry) and removed before a save, so that a folder
# saved twice in different forms holds one.
WRITTEN = ("modules.json", "sentence_bert_config.json", "1_Pooling", "2_Normalize", HEAD_DIR, HEAD_FILE,
           POOLING_WEIGHTS)


def folder_form(model, adapter_kept: bool) -> tuple[str, str]:
    """(form, why it is custom) for ``model`` (an ``EmbeddingModel``)."""
    cfg = model.config
    if cfg.convention != SENTENCE_TRANSFORMERS:
        return CUSTOM, f"it uses the {cfg.convention!r} tokenization convention (quarry export-model converts it)"
    if adapter_kept:
        return CUSTOM, "its LoRA adapter is kept apart from the backbone (save with merge_lora=True)"
    if not (isinstance(model.inputs, JoinedInputs) and model.inputs.standard):
        return CUSTOM, "its tokenizer cannot be made to append the EOS token itself"
    return (STANDARD if cfg.pooling.mode in PARAMETER_FREE_POOLING else LATENT), ""


def write_files(out_dir: str, model, adapter_kept: bool) -> str:
    """Write ``model``'s sentence-transformers files (and its pooling weights) into
    ``out_dir``, where the backbone and tokenizer already are; returns the form."""
    for stale in WRITTEN:
        path = os.path.join(out_dir, stale)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    form, why = folder_form(model, adapter_kept)
    if form != CUSTOM:
        why = _reload_differs(out_dir, model)
        form = CUSTOM if why else form
    if form == STANDARD:
        modules = _write_standard(out_dir, model)
    elif form == LATENT:
        modules = _write_latent(out_dir, model)
    else:
        log.info("model: %s loads in sentence-transformers through Quarry's own module only, because %s",
                 out_dir, why)
        from trainers.st_module import MODULE_TYPE

        torch.save(model.pooler.state_dict(), os.path.join(out_dir, POOLING_WEIGHTS))
        modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]
    _write_json(os.path.join(out_dir, "modules.json"), modules)
    _write_json(os.path.join(out_dir, ST_CONFIG_NAME),
                {"model_type": "SentenceTransformer", "prompts": dict(model.config.prompts),
                 "default_prompt_name": None, "similarity_fn_name": "cosine"})
    if form != CUSTOM:
        for name, prompt in sorted(model.config.prompts.items()):
            if boundary_merges(model.tokenizer, prompt):
                log.info("model: prompt %r ends in a token that merges with the text after it: the text's first "
                         "token is attended to but not pooled (sentence-transformers counts the prompt alone)", name)
    return form


def load_head_weights(path: str, pooler) -> None:
    """Load a saved model's pooling weights into ``pooler``, from whichever form holds them."""
    legacy = os.path.join(path, POOLING_WEIGHTS)
    if os.path.isfile(legacy):
        pooler.load_state_dict(torch.load(legacy, map_location="cpu", weights_only=True))
    elif pooler.latent is not None:
        from safetensors.torch import load_file

        pooler.load_state_dict(load_file(os.path.join(path, HEAD_DIR, "model.safetensors")))


def _reload_differs(out_dir: str, model) -> str:
    """Why the tokenizer saved in ``out_dir`` would not tokenize as ``model`` does ("" when it
    would): the saved form must not depend on state that does not survive a save."""
    from transformers import AutoTokenizer

    reloaded = JoinedInputs(AutoTokenizer.from_pretrained(out_dir), add_eos=False)
    probes = [("", "quarry probe"), *(((p, "quarry probe") for p in model.config.prompts.values()))]
    for instruction, text in probes:
        if reloaded.encode(instruction, text, model.config.max_length) != model.inputs.encode(
                instruction, text, model.config.max_length):
            return "its tokenizer, saved and loaded again, does not add the same special tokens"
    return ""


def _write_standard(out_dir: str, model) -> list[dict]:
    _write_json(os.path.join(out_dir, "sentence_bert_config.json"), _transformer_settings(model))
    mode = ST_POOLING[model.config.pooling.mode]
    pooling = {f"pooling_mode_{m}": m == mode for m in ("cls_token", "mean_tokens", "max_tokens",
                                                      "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")}
    os.makedirs(os.path.join(out_dir, "1_Pooling"))
    _write_json(os.path.join(out_dir, "1_Pooling", "config.json"),
                {"word_embedding_dimension": model.pooler_dim(), **pooling, "include_prompt": False})
    os.makedirs(os.path.join(out_dir, "2_Normalize"))
    return [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def _write_latent(out_dir: str, model) -> list[dict]:
    _write_json(os.path.join(out_dir, "sentence_bert_config.json"), _transformer_settings(model))
    shutil.copyfile(latent_attention.__file__, os.path.join(out_dir, HEAD_FILE))
    cfg = model.config.pooling
    head = latent_attention.LatentAttentionHead(model.pooler_dim(), cfg.num_latents, cfg.num_heads, cfg.mlp_mult)
    head.latent.load_state_dict(model.pooler.latent.state_dict())
    os.makedirs(os.path.join(out_dir, HEAD_DIR))
    head.save(os.path.join(out_dir, HEAD_DIR))
    return [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": HEAD_DIR, "type": HEAD_TYPE}]


def _transformer_settings(model) -> dict:
    """sentence-transformers' ``Transformer`` settings. A BERT-style backbone is saved without
    its [CLS] pooler (Quarry never uses it), so the loader is told to build none; otherwise
    transformers would initialise one at random and report its weights missing."""
    settings = {"max_seq_length": model.config.max_length, "do_lower_case": False}
    if takes_pooling_layer(model.backbone.config):
        settings["model_args"] = {"add_pooling_layer": False}  # the key every sentence-transformers reads
    return settings


def takes_pooling_layer(config) -> bool:
    """Whether the AutoModel class for ``config`` has BERT's ``add_pooling_layer`` switch."""
    import inspect

    from transformers import MODEL_MAPPING

    try:
        model_class = MODEL_MAPPING[type(config)]
    except KeyError:  # a trust_remote_code model: leave it as it is
        return False
    return "add_pooling_layer" in inspect.signature(model_class.__init__).parameters


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)


def sentence_transformers_gap(folder: str, model, texts: list[str], device: str = "cpu") -> float:
    """The largest coordinate difference between ``SentenceTransformer(folder)`` and
    ``model.encode`` on ``texts``, with no prompt and with each of the model's prompts."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    with open(os.path.join(folder, "modules.json"), encoding="utf-8") as f:
        foreign = any(not m["type"].startswith("sentence_transformers.") for m in json.load(f))
    st = SentenceTransformer(folder, device=device, trust_remote_code=foreign)
    gap = float(np.abs(st.encode(texts) - model.encode(texts)).max())
    for name, prompt in model.config.prompts.items():
        gap = max(gap, float(np.abs(st.encode(texts, prompt_name=name) - model.encode(texts, prompt)).max()))
    return gap
