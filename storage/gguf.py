"""A pretrained decoder shipped as a GGUF file, checked and turned once into a plain
Hugging Face folder in the local cache.

The only pretrained decoder LLM this machine can reach offline is SmolLM2-135M-Instruct,
quantised (Q4_1) into one GGUF file inside a package. transformers (with the ``gguf``
package) dequantises such a file when it loads it, but refuses to save the result ("not
serializable"), and dequantising costs half a minute at every load. So, once:

1. the file's sha256 is checked against the pinned value, before anything reads it as a
   model; a mismatch is one ``InputError`` line naming the package to reinstall;
2. transformers loads and dequantises it (float32), and the tokenizer from its metadata;
3. the weights go into a model built from the same config with the GGUF quantisation
   record removed, which saves as plain safetensors, with the tokenizer beside it;
4. the folder is written through ``build_once`` (storage/cache_folder.py): privately, then
   renamed into place under an exclusive lock, so concurrent first uses make one copy and a
   crash leaves none.

Every path that takes a backbone (train, eval, encode, sweep-layers) then reads the folder
like any other. Tested by tests/storage/test_gguf.py.
"""

from __future__ import annotations

import hashlib
import logging
import os

from storage.archive import CHUNK
from storage.cache_folder import build_once, is_built
from storage.errors import InputError, first_line

log = logging.getLogger("quarry")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dequantized_folder(gguf_path: str, sha256: str, dest: str, what: str, reinstall: str) -> str:
    """``dest``, a Hugging Face folder with the dequantised weights of ``gguf_path``."""
    if is_built(dest):
        return dest
    if not os.path.isfile(gguf_path):
        raise InputError(f"{what}: {gguf_path} is missing: {reinstall}")

    def convert(partial: str) -> None:
        found = sha256_of(gguf_path)
        if found != sha256:
            raise InputError(f"{what}: {os.path.basename(gguf_path)} has sha256 {found}, not the pinned {sha256}: "
                             f"{reinstall}")
        try:
            log.info("%s: dequantising %s once into %s", what, os.path.basename(gguf_path), dest)
            _dequantize(gguf_path, partial)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise InputError(f"{what}: {os.path.basename(gguf_path)} does not load as a model: {first_line(e)}: "
                             f"{reinstall}") from None

    return build_once(dest, convert)


def _dequantize(gguf_path: str, out: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # what makes transformers refuse to save it
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
