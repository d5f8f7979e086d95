"""End to end on a tiny model: training learns, saves a plain checkpoint, caches and reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from cycleqd.errors import CycleQDError
from cycleqd.models.devices import bf16_is_fast, pick_device
from cycleqd.models.engine import HFEngine
from cycleqd.tasks.code.task import CodeParams, CodeTask
from cycleqd.train import TrainConfig, cached_expert, train_expert
from cycleqd.train.batching import collate
from cycleqd.train.data import BuildOptions, build_conversations
from cycleqd.train.loop import batch_loss
from cycleqd.train.lora import add_lora, merge_lora
from cycleqd.train.masking import encode_conversation
from cycleqd.train.save import save_expert
from cycleqd.train.spec import resolve_spec

# Fast, deterministic settings for a 2-layer char model (the defaults suit SmolLM2 instead).
# float32: a tiny model at lr 1e-2 must learn its one program exactly; bf16 has its own test.
QUICK = {
    "method": "full",
    "lr": 1e-2,
    "batch_size": 4,
    "warmup_ratio": 0.0,
    "workers": 1,
    "precision": "float32",
}


@pytest.fixture(scope="module")
def fixed_reply_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MBPP-format file whose problems all share one short gold program (learnable fast)."""
    path = tmp_path_factory.mktemp("train-data") / "double.jsonl"
    records = [
        {
            "task_id": f"double/{i}",
            "text": "Write a function double(x) that returns twice x.",
            "code": "def double(x):\n    return 2 * x",
            "test_list": [f"assert double({i}) == {2 * i}"],
        }
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def mean_loss(model_dir: Path, data: Path) -> float:
    """The training loss (assistant tokens only) of a saved model on the data file."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    convs = build_conversations(resolve_spec(str(data)), BuildOptions(n=None)).conversations
    rows = [encode_conversation(tok, c.messages, c.train_from, source="x") for c in convs]
    with torch.no_grad():
        return float(batch_loss(model, collate(rows, tok.pad_token_id), torch.device("cpu")))


def test_training_lowers_loss_and_raises_the_code_score(
    tiny_base: Path, fixed_reply_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "expert"
    report = train_expert(tiny_base, [fixed_reply_data], out, epochs=60, progress=False, **QUICK)
    assert report.n_train == 4 and report.dropped == 0 and report.steps == 60
    assert mean_loss(out, fixed_reply_data) < 0.3 * mean_loss(tiny_base, fixed_reply_data)
    task = CodeTask("code", CodeParams(data=fixed_reply_data, max_new_tokens=48))
    assert task.evaluate(HFEngine(tiny_base)).quality == 0.0
    # at least three of the four replies are the learned program (which one of a 2-layer model's
    # four near-identical prompts ends in a degenerate reply depends on the CPU's float kernels:
    # on one machine all four passed, on another the second repeated its opening fence)
    assert task.evaluate(HFEngine(out)).quality >= 0.75


def test_bf16_autocast_training_also_learns_and_is_part_of_the_cache_key(
    tiny_base: Path, fixed_reply_data: Path, tmp_path: Path
) -> None:
    settings = {**QUICK, "precision": "bfloat16"}
    out = tmp_path / "bf16"
    report = train_expert(tiny_base, [fixed_reply_data], out, epochs=30, progress=False, **settings)
    assert report.hyperparameters["precision"] == "bfloat16"
    assert mean_loss(out, fixed_reply_data) < 0.5 * mean_loss(tiny_base, fixed_reply_data)
    again = train_expert(tiny_base, [fixed_reply_data], out, epochs=30, progress=False, **settings)
    assert again.skipped
    fp32 = {**settings, "precision": "float32"}
    assert not train_expert(
        tiny_base, [fixed_reply_data], out, epochs=1, progress=False, **fp32
    ).skipped


def test_auto_precision_is_resolved_before_the_cache_key(
    tiny_base: Path, fixed_reply_data: Path, tmp_path: Path
) -> None:
    settings = {**QUICK, "precision": "auto"}
    report = train_expert(
        tiny_base, [fixed_reply_data], tmp_path / "e", epochs=1, progress=False, **settings
    )
    expected = "bfloat16" if bf16_is_fast(pick_device("auto")) else "float32"
    assert report.hyperparameters["precision"] == expected


def test_lora_merge_saves_a_plain_checkpoint_with_the_adapted_logits(
    tiny_base: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_base)
    peft = add_lora(AutoModelForCausalLM.from_pretrained(tiny_base), r=4, alpha=8, dropout=0.0)
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    ids = torch.tensor([tok("<|user|>hello\n<|assistant|>")["input_ids"]])
    peft.eval()
    with torch.no_grad():
        adapted = peft(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_base)(input_ids=ids).logits
    assert not torch.allclose(adapted, base, atol=1e-4)
    save_expert(merge_lora(peft), tok, tmp_path / "merged", torch.float32, {"cache_key": "k"})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in k for k in loaded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)


def test_lora_expert_directory_is_complete_and_in_the_base_dtype(
    tiny_base: Path, fixed_reply_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lora"
    report = train_expert(
        tiny_base, [fixed_reply_data], out, epochs=2, batch_size=2, lr=1e-2, progress=False
    )
    base_weights = load_file(tiny_base / "model.safetensors")
    weights = load_file(out / "model.safetensors")
    assert weights.keys() == base_weights.keys()
    assert all(w.dtype == base_weights[k].dtype for k, w in weights.items())
    assert any(not torch.equal(w, base_weights[k]) for k, w in weights.items())
    assert AutoTokenizer.from_pretrained(out).chat_template is not None
    record = json.loads((out / "training.json").read_text())
    assert record["cache_key"] == report.cache_key and record["n_train"] == 4
    assert (
        record["hyperparameters"]["method"] == "lora" and record["hyperparameters"]["lora_r"] == 16
    )
    assert len(record["loss_curve"]) == report.steps == 4
    assert not list(tmp_path.glob(".lora*"))  # no temp directory left behind


def test_a_lora_expert_saved_as_its_adapter_is_the_merged_expert(
    tiny_base: Path, fixed_reply_data: Path, tmp_path: Path
) -> None:
    """``save: adapter`` writes the peft adapter, naming its base by path: the same training
    merged gives the same weights, the cache keys differ, and a search takes it as an expert."""
    from cycleqd.merging.adapters import LoraSource, open_expert
    from cycleqd.merging.sources import SafetensorsSource

    settings = {"epochs": 2, "batch_size": 2, "lr": 1e-2, "progress": False}
    merged = train_expert(tiny_base, [fixed_reply_data], tmp_path / "merged", **settings)
    adapter = train_expert(
        tiny_base, [fixed_reply_data], tmp_path / "adapter", save="adapter", **settings
    )
    assert adapter.cache_key != merged.cache_key and adapter.losses == merged.losses
    out = tmp_path / "adapter"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_base.resolve())
    assert not (out / "model.safetensors").exists() and (out / "training.json").is_file()
    base = SafetensorsSource(tiny_base)
    source = open_expert(out, base)
    assert isinstance(source, LoraSource)
    full = SafetensorsSource(tmp_path / "merged")
    for name in full.keys():  # noqa: SIM118 (a source, not a dict)
        torch.testing.assert_close(source.get(name), full.get(name), rtol=1e-5, atol=1e-6)
    again = train_expert(tiny_base, [fixed_reply_data], out, save="adapter", **settings)
    assert again.skipped
    task = CodeTask("code", CodeParams(data=fixed_reply_data, max_new_tokens=24))
    engines = [HFEngine(d, dtype="float32") for d in (out, tmp_path / "merged")]
    assert task.evaluate(engines[0]).quality == task.evaluate(engines[1]).quality


def test_same_seed_same_weights_other_seed_other_weights(
    tiny_base: Path, fixed_reply_data: Path, tmp_path: Path
) -> None:
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        config = TrainConfig(epochs=1, batch_size=2, seed=seed, lr=1e-2)
        train_expert(tiny_base, [fixed_reply_data], tmp_path / name, config, progress=False)
        runs[name] = load_file(tmp_path / name / "model.safetensors")
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_identical_expert_is_skipped_unless_forced_or_changed(
    tiny_base: Path, fixed_reply_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cached"
    settings = {"epochs": 1, "progress": False, **QUICK}
    first = train_expert(tiny_base, [fixed_reply_data], out, **settings)
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    again = train_expert(tiny_base, [fixed_reply_data], out, **settings)
    assert again.skipped and again.cache_key == first.cache_key and again.losses == first.losses
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    found = cached_expert(tiny_base, [fixed_reply_data], out, epochs=1, **QUICK)
    assert found is not None and found.skipped and found.cache_key == first.cache_key
    assert cached_expert(tiny_base, [fixed_reply_data], out, epochs=2, **QUICK) is None
    forced = train_expert(tiny_base, [fixed_reply_data], out, force=True, **settings)
    assert not forced.skipped
    changed = train_expert(tiny_base, [fixed_reply_data], out, **{**settings, "epochs": 2})
    assert not changed.skipped and changed.cache_key != first.cache_key


def test_several_specs_train_one_all_data_model(
    tiny_base: Path, fixed_reply_data: Path, tmp_path: Path
) -> None:
    report = train_expert(
        tiny_base,
        ["code-mini", fixed_reply_data],
        tmp_path / "all",
        n_train=3,
        epochs=1,
        progress=False,
        **QUICK,
    )
    assert [s.spec for s in report.sources] == ["code-mini", str(fixed_reply_data)]
    assert [s.kept for s in report.sources] == [3, 3] and report.n_train == 6


def test_bad_inputs_raise_user_errors(tiny_base: Path, tmp_path: Path) -> None:
    with pytest.raises(CycleQDError, match="'no-such-suite'"):
        train_expert(tiny_base, ["no-such-suite"], tmp_path / "x", progress=False)
    with pytest.raises(CycleQDError, match=r"missing\.jsonl"):
        train_expert(tiny_base, [tmp_path / "missing.jsonl"], tmp_path / "x", progress=False)
    with pytest.raises(CycleQDError, match=r"config\.json"):
        train_expert(tmp_path, ["code-mini"], tmp_path / "x", progress=False)
    with pytest.raises(CycleQDError, match="at least one"):
        train_expert(tiny_base, [], tmp_path / "x", progress=False)


def test_cli_refuses_a_bad_option_value_with_its_name_and_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = str(tmp_path / "e")
    args = ["train-expert", "--base", str(tmp_path), "--task", "code-mini", "--out", out]
    res = subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", *args, "--precision", "fp8"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert "precision" in res.stdout + res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "e").exists()


def test_train_expert_options_are_the_train_config_fields() -> None:
    """Every TrainConfig field is an option of ``cycleqd train-expert`` with the same default."""
    from typer.main import get_command

    from cycleqd.cli import app
    from cycleqd.train import TrainConfig

    command = get_command(app)
    options = {p.name: p for p in command.commands["train-expert"].params}  # type: ignore[attr-defined]
    for name, field in TrainConfig.model_fields.items():
        assert name in options, name
        default = field.get_default(call_default_factory=True)
        got = options[name].default
        assert (list(got) if isinstance(default, list) else got) == default, name
