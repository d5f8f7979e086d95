"""Fixtures for the model zoo tests: tiny llama models written as GGUF files and wheels.

The GGUF writer mimics llama.cpp's ``convert_hf_to_gguf.py`` for llama: its tensor names (via
the ``gguf`` package's own name map), its metadata keys, its row permutation of ``q_proj`` and
``k_proj``, and a GPT-2 style byte-level tokenizer. So converting the file back exercises the
same code paths a real llama.cpp GGUF does, without any download.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from helpers import write_model_family
from transformers import AutoModelForCausalLM, AutoTokenizer

from cycleqd.testing.tiny import build_char_tokenizer, build_random_model

GgufMaker = Callable[..., Path]


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (``LlamaModel.permute`` in convert_hf_to_gguf.py).

    HF stores the two rotary halves of each head as blocks; GGML's RoPE wants them interleaved.
    """
    if n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def write_gguf(
    hf_dir: Path,
    out: Path,
    *,
    qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32,
    permute: bool = True,
) -> Path:
    """Write the tiny HF llama in ``hf_dir`` (model + char tokenizer) as a GGUF file.

    Matrices are stored as ``qtype`` (F32, F16 or Q8_0); 1-D norm weights stay F32 as llama.cpp
    keeps them. ``permute=False`` writes q/k unpermuted: a deliberately broken file, used to
    prove the logits check would catch a wrong permutation.
    """
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    cfg = model.config
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // n_head)
    writer.add_vocab_size(cfg.vocab_size)

    # The char tokenizer's vocabulary, spelled in byte-level form (" " -> "Ġ", "\n" -> "Ċ"), is
    # a valid GPT-2 BPE vocabulary with the same ids.
    byte_map = _bytes_to_unicode()
    special = set(tok.all_special_tokens)
    tokens, types = [], []
    for text, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
        if text in special:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append("".join(byte_map[b] for b in text.encode()))
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # No merges: a char vocabulary has none, and the converter then derives them from scores.
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_unk_token_id(tok.unk_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tok.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    state = model.state_dict()
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight")  # llama.cpp omits output.weight for tied models
    for hf_name, tensor in state.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        data = tensor.numpy().astype(np.float32)
        if permute and hf_name.endswith("q_proj.weight"):
            data = llama_cpp_permute(data, n_head, n_head)
        elif permute and hf_name.endswith("k_proj.weight"):
            data = llama_cpp_permute(data, n_head, n_kv)
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def write_wheel(path: Path, members: dict[str, bytes | Path]) -> Path:
    """A minimal wheel (a zip with a dist-info) holding ``members`` (bytes or files)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            if isinstance(content, Path):
                zf.write(content, name)
            else:
                zf.writestr(name, content)
        zf.writestr("tinypkg-0.0.1.dist-info/METADATA", "Name: tinypkg\nVersion: 0.0.1\n")
    return path


@pytest.fixture(scope="session")
def tiny_llamas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An untied tiny llama (the shared test family's base) and a tied one like SmolLM2."""
    root = tmp_path_factory.mktemp("llamas")
    untied = write_model_family(root / "family", "llama", n_experts=0)["base"]
    tok = build_char_tokenizer()
    tied = build_random_model(
        "llama", tok, seed=1, hidden=64, heads=4, kv_heads=2, intermediate=128, layers=2,
        tie_word_embeddings=True,
    )  # fmt: skip
    tied.config.rope_parameters["rope_theta"] = 50_000.0  # a non-default value must survive
    tied.config.rms_norm_eps = 1e-5
    tied.save_pretrained(root / "tied")
    tok.save_pretrained(root / "tied")
    return {"untied": untied, "tied": root / "tied"}


@pytest.fixture(scope="session")
def tied_gguf(tiny_llamas: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tied tiny llama as an F16 GGUF: the default input of the zoo tests."""
    out = tmp_path_factory.mktemp("gguf") / "tiny.F16.gguf"
    return write_gguf(tiny_llamas["tied"], out, qtype=gguf.GGMLQuantizationType.F16)


@pytest.fixture(scope="session")
def make_gguf() -> GgufMaker:
    """:func:`write_gguf`, as a fixture (test modules cannot import this conftest by name)."""
    return write_gguf


@pytest.fixture(scope="session")
def make_wheel() -> Callable[[Path, dict[str, bytes | Path]], Path]:
    """:func:`write_wheel`, as a fixture."""
    return write_wheel
