"""Tiny, real, trained Hugging Face causal LMs for tests and the "tiny example".

CycleQD merges experts that were fine-tuned from one common base on distinct skills. To test
that machinery end to end without downloading anything, this module builds such a family from
scratch in seconds on a CPU:

* a character-level tokenizer made with the ``tokenizers`` library (so it saves, reloads with
  ``AutoTokenizer`` and has a chat template, exactly like a hub tokenizer);
* random Llama / Qwen2 / GPT-2 models of under 100k parameters;
* three procedural skills (``copy``, ``rev``, ``add``) whose samples come from seeded
  generators, so data is reproducible and unlimited;
* the package's own training loop (:func:`cycleqd.train.loop.train_loop`, loss on the target
  tokens only) to make a weak multi-skill base and one expert per skill fine-tuned from it, and
  its own engine and ``likelihood`` task to score them.

Because the experts share a base and differ in what they learned, task vectors are meaningful
and merging them can produce a better all-rounder than any single expert.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, processors
from transformers import (
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from cycleqd.models.engine import HFEngine
from cycleqd.tasks import build_task
from cycleqd.tasks.suites import write_samples
from cycleqd.train.loop import LoopSettings, train_loop
from cycleqd.train.masking import IGNORE, Encoded

__all__ = [
    "ARCHS",
    "CHAT_TEMPLATE",
    "EVAL_SEED_OFFSET",
    "SKILLS",
    "SPECIAL_TOKENS",
    "TinySuite",
    "build_char_tokenizer",
    "build_random_model",
    "build_tiny_suite",
    "encode_prompt",
    "encode_sample",
    "likelihoods",
    "make_samples",
    "tiny_config",
    "train",
]

Arch = Literal["llama", "qwen2", "gpt2"]
ARCHS: tuple[Arch, ...] = ("llama", "qwen2", "gpt2")

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, *ROLE_TOKENS)

# A fixed alphabet keeps token ids stable across builds, so every tiny model ever built shares
# one vocabulary and their weights are interchangeable.
_ALPHABET: str = (
    "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "0123456789"
    " \n\t"
    "+-*/=<>:;?!,.()[]{}_'\"|#@&%$^~`\\"
)

CHAT_TEMPLATE: str = (
    "{{ bos_token }}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

SKILLS: tuple[str, ...] = ("copy", "rev", "add")

# Held-out evaluation data of a suite built with ``seed`` uses ``seed + EVAL_SEED_OFFSET``, far
# from the seeds used for training data, so callers can regenerate it without reading files.
EVAL_SEED_OFFSET = 1_000_003

# Bumped whenever the data format or the training recipe changes, so a cached suite built by an
# older recipe is rebuilt instead of silently reused.
_SUITE_FORMAT = 2


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def build_char_tokenizer(out_dir: Path | None = None) -> PreTrainedTokenizerFast:
    """Build a real character-level fast tokenizer (optionally saving it to ``out_dir``).

    One token per character makes the tiny skills learnable by a 2-layer model (no sub-word
    arithmetic to untangle) and makes decoding an exact inverse of encoding. It is a genuine
    ``tokenizers`` BPE model with no merges, so it behaves like hub tokenizers: it saves with
    ``save_pretrained``, reloads with ``AutoTokenizer``, adds ``<s>`` via a post-processor and
    carries a chat template. Characters outside the alphabet map to ``<unk>``.
    """
    vocab: dict[str, int] = {}
    for tok in (*SPECIAL_TOKENS, *_ALPHABET):
        vocab.setdefault(tok, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    # No pre-tokenizer: the whole text is one "word" that BPE splits into characters, so spaces
    # and newlines are ordinary tokens and nothing is inserted or dropped on decode.
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A $B",
        special_tokens=[(BOS, vocab[BOS])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def tiny_config(
    arch: Arch,
    vocab_size: int,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    max_positions: int = 128,
    tie_word_embeddings: bool = False,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> PretrainedConfig:
    """Return a tiny config of a real architecture.

    Dropout is switched off everywhere so that training is deterministic under a seed and
    converges in few steps. GPT-2 has no grouped-query attention, so ``kv_heads`` is ignored
    there. ``tie_word_embeddings`` lets tests cover the tied-weights case that merging code must
    handle (one tensor reachable under two names). Special token ids default to ``None``
    rather than the architecture's hub defaults (e.g. GPT-2's 50256), which would point
    outside a tiny vocabulary.
    """
    ids: dict[str, Any] = {
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
    }
    if hidden % heads != 0:
        raise ValueError(f"hidden={hidden} must be divisible by heads={heads}")
    if arch in ("llama", "qwen2"):
        if heads % kv_heads != 0:
            raise ValueError(f"heads={heads} must be divisible by kv_heads={kv_heads}")
        common: dict[str, Any] = {
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "intermediate_size": intermediate,
            "max_position_embeddings": max_positions,
            "tie_word_embeddings": tie_word_embeddings,
            "attention_dropout": 0.0,
            "dtype": "float32",
            **ids,
        }
        if arch == "llama":
            return LlamaConfig(**common)
        return Qwen2Config(**common, use_sliding_window=False)
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_inner=intermediate,
            n_positions=max_positions,
            tie_word_embeddings=tie_word_embeddings,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            dtype="float32",
            **ids,
        )
    raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


def build_random_model(
    arch: Arch, tokenizer: PreTrainedTokenizerFast, *, seed: int, **kw: Any
) -> PreTrainedModel:
    """Build a randomly initialised float32 causal LM whose special ids match ``tokenizer``.

    The special token ids are copied into both the model config and its generation config so
    that ``model.generate`` pads and stops correctly without extra arguments, and so that the
    saved directory is self-describing. ``kw`` goes to :func:`tiny_config`.
    """
    config = tiny_config(
        arch,
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **kw,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Skills and data
# --------------------------------------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _word(rng: random.Random, lo: int = 2, hi: int = 5) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(lo, hi)))


def _sample(skill: str, rng: random.Random) -> dict[str, str]:
    if skill == "copy":
        w = _word(rng)
        return {"prompt": f"copy {w}=", "target": w}
    if skill == "rev":
        w = _word(rng)
        return {"prompt": f"rev {w}=", "target": w[::-1]}
    if skill == "add":
        a, b = rng.randint(0, 19), rng.randint(0, 19)
        return {"prompt": f"{a}+{b}=", "target": str(a + b)}
    raise ValueError(f"unknown skill {skill!r}; expected one of {SKILLS}")


def make_samples(skill: str, n: int, seed: int) -> list[dict[str, str]]:
    """Return ``n`` seeded ``{"prompt", "target"}`` samples of one skill.

    Skills have visibly different prompt formats (``copy abc=`` → ``abc``, ``rev abc=`` →
    ``cba``, ``12+7=`` → ``19``) so that an expert's advantage is attributable to its skill.
    The generator is seeded with ``(skill, seed)``, so two skills never share a random stream
    and the same call always returns the same list.
    """
    if skill not in SKILLS:
        raise ValueError(f"unknown skill {skill!r}; expected one of {SKILLS}")
    rng = random.Random(f"{skill}:{seed}")
    return [_sample(skill, rng) for _ in range(n)]


# --------------------------------------------------------------------------------------------
# Encoding, training, evaluation
# --------------------------------------------------------------------------------------------


def encode_prompt(
    tokenizer: PreTrainedTokenizerFast, prompt: str, *, chat: bool = False
) -> list[int]:
    """Token ids of a prompt, as plain text (``<s>`` + text) or through the chat template.

    Training and evaluation both go through this function so the model sees at test time
    exactly the prefix it was trained on.
    """
    if chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    return list(tokenizer(prompt, add_special_tokens=True).input_ids)


def encode_sample(
    tokenizer: PreTrainedTokenizerFast, sample: Mapping[str, str], *, chat: bool = False
) -> Encoded:
    """A prompt/target sample as the training loop takes it: the target and a closing eos are
    learned, the prompt is not (so the model learns to answer and then stop)."""
    p = encode_prompt(tokenizer, sample["prompt"], chat=chat)
    t = list(tokenizer(sample["target"], add_special_tokens=False).input_ids)
    t.append(int(tokenizer.eos_token_id))
    return Encoded(sample["prompt"], "tiny", p + t, [IGNORE] * len(p) + t)


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    samples: Sequence[Mapping[str, str]],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    chat_fraction: float = 0.0,
) -> list[float]:
    """Fine-tune ``model`` in place with the package's training loop; the per-step loss.

    The loop is the one experts are trained with (AdamW, linear warmup over a tenth of the
    steps, cosine decay to 10 %, gradient clipping at 1, batch order from the seed).
    ``chat_fraction`` of the samples (fixed per sample, seeded) are wrapped in the chat template
    so the model answers whether or not callers use the template.
    """
    if not samples:
        return []
    torch.manual_seed(seed)
    chat_rng = random.Random(f"chat:{seed}")
    encoded = [encode_sample(tokenizer, s, chat=chat_rng.random() < chat_fraction) for s in samples]
    # every batch a random mix of the skills (length-sorted batches would be single-skill)
    settings = LoopSettings(
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, warmup_ratio=0.1, length_window=1
    )
    return train_loop(
        model, encoded, settings, pad_id=int(tokenizer.pad_token_id), device=torch.device("cpu")
    )


def likelihoods(model_dir: Path, data: Mapping[str, Path]) -> dict[str, float]:
    """The ``likelihood`` task's quality of the model in ``model_dir`` on each skill's file,
    through the engine a search uses (so the suite's table is what a search would see)."""
    engine = HFEngine(model_dir, device="cpu", dtype="float32", batch_size=128)
    return {
        skill: build_task(skill, "likelihood", {"data": str(path)}, skill).evaluate(engine).quality
        for skill, path in data.items()
    }


# --------------------------------------------------------------------------------------------
# Suite
# --------------------------------------------------------------------------------------------


@dataclass
class TinySuite:
    """Where a built tiny base/experts family lives, plus how well each model does.

    ``likelihoods[model][skill]`` is the ``likelihood`` task's quality on the held-out data of
    ``skill`` (:func:`likelihoods`); ``model`` is ``"base"`` or a skill name (that expert).
    """

    root: Path
    arch: str
    skills: tuple[str, ...]
    base: Path
    experts: dict[str, Path]
    data: dict[str, Path]
    params: dict[str, Any]
    likelihoods: dict[str, dict[str, float]] = field(default_factory=dict)
    build_seconds: float = 0.0

    @property
    def tokenizer(self) -> Path:
        """Directory holding the shared tokenizer (every model dir also has a copy)."""
        return self.base

    def to_json(self) -> dict[str, Any]:
        """Serialise with paths relative to ``root`` so the directory can be moved."""

        def rel(p: Path) -> str:
            return p.relative_to(self.root).as_posix()

        return {
            "format": _SUITE_FORMAT,
            "arch": self.arch,
            "skills": list(self.skills),
            "base": rel(self.base),
            "tokenizer": rel(self.tokenizer),
            "experts": {k: rel(v) for k, v in self.experts.items()},
            "data": {k: rel(v) for k, v in self.data.items()},
            "params": self.params,
            "likelihoods": self.likelihoods,
            "build_seconds": self.build_seconds,
        }

    @classmethod
    def from_json(cls, root: Path, obj: Mapping[str, Any]) -> TinySuite:
        """Inverse of :meth:`to_json` for a suite stored under ``root``."""
        root = Path(root)
        return cls(
            root=root,
            arch=str(obj["arch"]),
            skills=tuple(obj["skills"]),
            base=root / obj["base"],
            experts={k: root / v for k, v in obj["experts"].items()},
            data={k: root / v for k, v in obj["data"].items()},
            params=dict(obj["params"]),
            likelihoods={k: dict(v) for k, v in obj.get("likelihoods", {}).items()},
            build_seconds=float(obj.get("build_seconds", 0.0)),
        )

    @classmethod
    def load(cls, root: Path) -> TinySuite:
        """Read ``root/suite.json``."""
        root = Path(root)
        return cls.from_json(root, json.loads((root / "suite.json").read_text(encoding="utf-8")))


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """Silence transformers' per-save tqdm bar (noise in test logs), restoring it afterwards."""
    hf_logging = transformers.utils.logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_progress():
        model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


def build_tiny_suite(
    out_dir: Path,
    *,
    arch: Arch = "llama",
    seed: int = 0,
    base_epochs: int = 3,
    expert_epochs: int = 5,
    n_train: int = 2000,
    n_eval: int = 200,
    tie_word_embeddings: bool = False,
    lr: float = 3e-3,
    expert_lr: float = 2e-4,
    batch_size: int = 32,
    chat_fraction: float = 0.0,
    skills: Sequence[str] = SKILLS,
) -> TinySuite:
    """Build (or reuse) a base model and one fine-tuned expert per skill under ``out_dir``.

    Layout::

        out_dir/suite.json               paths (relative), parameters, likelihood table
        out_dir/base/                    weights (safetensors) + tokenizer
        out_dir/experts/<skill>/         weights (safetensors) + tokenizer
        out_dir/data/<skill>.jsonl       held-out evaluation samples

    The base is a random model trained briefly on a mixture of all skills, so it knows the
    formats but is mediocre at each; each expert continues from the base on its own skill only,
    with a much smaller learning rate, so experts stay close to the base yet clearly beat the
    base and the other experts on their skill, and their task vectors stay small enough to
    merge. Evaluation samples use a different seed than training, and any training sample whose
    prompt also appears in the evaluation set is dropped, so the reported likelihoods are on
    unseen prompts. Prompts are plain text (``<s>`` + prompt) unless ``chat_fraction`` is
    positive, in which case that share of training prompts goes through the chat template.

    If ``out_dir/suite.json`` already records the same parameters, the suite is returned
    without rebuilding; otherwise everything is rebuilt (``suite.json`` is written last, so an
    interrupted build is never mistaken for a finished one).
    """
    out_dir = Path(out_dir)
    skills = tuple(skills)
    params: dict[str, Any] = {
        "format": _SUITE_FORMAT,
        "arch": arch,
        "seed": seed,
        "base_epochs": base_epochs,
        "expert_epochs": expert_epochs,
        "n_train": n_train,
        "n_eval": n_eval,
        "tie_word_embeddings": tie_word_embeddings,
        "lr": lr,
        "expert_lr": expert_lr,
        "batch_size": batch_size,
        "chat_fraction": chat_fraction,
        "skills": list(skills),
    }
    manifest = out_dir / "suite.json"
    if manifest.is_file():
        try:
            cached = TinySuite.load(out_dir)
        except (OSError, ValueError, KeyError, TypeError):
            cached = None
        if (
            cached is not None
            and cached.params == params
            and all((p / "config.json").is_file() for p in (cached.base, *cached.experts.values()))
            and all(p.is_file() for p in cached.data.values())
        ):
            return cached
        manifest.unlink()

    t0 = time.perf_counter()
    tokenizer = build_char_tokenizer()

    # Held-out evaluation data first, so training data can exclude its prompts.
    eval_sets = {s: make_samples(s, n_eval, seed=seed + EVAL_SEED_OFFSET) for s in skills}
    data_paths = {s: out_dir / "data" / f"{s}.jsonl" for s in skills}
    for s in skills:
        write_samples(data_paths[s], list(eval_sets[s]))
    held_out = {x["prompt"] for samples in eval_sets.values() for x in samples}

    def train_set(skill: str, n: int, data_seed: int) -> list[dict[str, str]]:
        return [x for x in make_samples(skill, n, data_seed) if x["prompt"] not in held_out]

    # Base: a weak generalist over the mixture of all skills.
    model = build_random_model(arch, tokenizer, seed=seed, tie_word_embeddings=tie_word_embeddings)
    mixture = [x for i, s in enumerate(skills) for x in train_set(s, n_train, seed + 17 * i)]
    train(
        model,
        tokenizer,
        mixture,
        epochs=base_epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        chat_fraction=chat_fraction,
    )
    base_dir = out_dir / "base"
    _save(model, tokenizer, base_dir)
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    scores: dict[str, dict[str, float]] = {"base": likelihoods(base_dir, data_paths)}
    expert_dirs: dict[str, Path] = {}
    for i, skill in enumerate(skills):
        expert = build_random_model(
            arch, tokenizer, seed=seed, tie_word_embeddings=tie_word_embeddings
        )
        expert.load_state_dict(base_state)
        train(
            expert,
            tokenizer,
            train_set(skill, n_train, seed + 101 + 17 * i),
            epochs=expert_epochs,
            lr=expert_lr,
            batch_size=batch_size,
            seed=seed + 1 + i,
            chat_fraction=chat_fraction,
        )
        expert_dirs[skill] = out_dir / "experts" / skill
        _save(expert, tokenizer, expert_dirs[skill])
        scores[skill] = likelihoods(expert_dirs[skill], data_paths)

    suite = TinySuite(
        root=out_dir,
        arch=arch,
        skills=skills,
        base=base_dir,
        experts=expert_dirs,
        data=data_paths,
        params=params,
        likelihoods=scores,
        build_seconds=round(time.perf_counter() - t0, 3),
    )
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(suite.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return suite
