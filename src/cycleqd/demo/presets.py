"""Sizes of the demo: how many samples, generations and tokens each stage gets.

The demo's cost is generation, so every knob that multiplies it is here and nowhere else. ``cpu``
is sized for a 2-core machine (measured there: about 63 minutes of training on a first run, the
three anchored experts and the all-data fine-tune at two epochs; about 18 minutes per search;
about 3 minutes per model's test and language evaluation, see the README; far over the
45-minute goal);
``full`` is for a GPU; ``mini`` is the CI miniature on tiny models (it checks the plumbing, not
the result).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Preset:
    name: str
    n_train: int  # per suite, for expert training
    n_val: int  # per suite: what the search selects on
    n_test: int  # per suite: held out, only for the final table
    generations: int
    bins: int = 10
    seed: int = 0
    # MMLU questions (seeded sample of the test split) for the table's language column
    n_language: int = 200
    # MMLU questions of the searches' language constraint (--language-constraint), drawn
    # apart from the column's
    n_language_search: int = 100
    max_new_tokens: dict[str, int] = field(
        default_factory=lambda: {"code": 160, "os": 96, "db": 96}
    )
    max_rounds: dict[str, int] = field(default_factory=lambda: {"os": 4, "db": 3})
    train_epochs: int = 2
    train_lr: float | None = None  # peak learning rate of expert training (None: 1e-3 for LoRA)
    # KL to the base on the other skills' training conversations while an expert trains
    # (``anchor_weight`` of TrainConfig; 0: plain fine-tuning, the paper's experts)
    anchor_weight: float = 0.0
    train_max_len: int = 2048  # tokens; longer conversations are dropped (and counted)
    batch_size: int = 16
    # the real benchmarks' development data (MBPP validation, DBBench dev, AgentBench OS dev)
    real_limit: int | None = 30
    # task_arithmetic adds the task vectors at weight 1/3 each, task_arithmetic_full at 1 (the
    # sum, which anchored experts are trained to survive). ``linear`` (the experts' mean) is
    # left out: it is the weight-1/3 task arithmetic, the same model up to rounding (the `cpu`
    # table had them one sample apart), and each row costs a full test evaluation.
    merges: tuple[str, ...] = (
        "task_arithmetic",
        "task_arithmetic_full",
        "ties",
        "dare_ties",
    )
    # the search's operators (config ``search.crossover.kind`` and ``search.final_model``)
    crossover: str = "linear"
    final_model: str = "merge"
    final_merge: str = "softmax"  # ``search.final_merge``: softmax (the paper's), ties, assemble
    signed_mutation: bool = False  # ``search.mutation.signed``
    basis_kind: str = "svd"  # ``basis.kind``
    combine: str = "sum"  # ``basis.combine``: how a genome's expert parts form its task vector
    w_max: float = 0.1
    # children evaluated together in shared forward passes (``executor.children_per_batch``)
    children_per_batch: int = 1
    # ``executor.population``: auto lets the measured cost model pick shared passes or not
    population: str = "auto"


PRESETS: dict[str, Preset] = {
    # Experts: 192 gold conversations per skill, two epochs (48 steps). Fewer (64, 8 steps) left the
    # OS and DB experts at 0.125 on validation, too weak for any merge to show anything; one epoch
    # (24 steps) left them undertrained: 0.75 / 0.66 / 0.56 on the 32-sample validation splits
    # against 0.84 / 1.00 / 0.94 after two, where the all-data fine-tune (two epochs of all three,
    # 144 steps) reaches the experts' own scores (0.927) and the experts' sum 0.854 (after one
    # epoch: 0.729 and 0.562). Training doubles with it (about 63 minutes on 2 cores, README), but a
    # merge of experts that have not learned their skills shows nothing about merging. (The
    # anchoring and operator numbers that follow are of one-epoch experts.) Experts are anchored
    # (``anchor_weight``: a KL to the base on the other skills' conversations while each trains):
    # plain experts interfered, their task vectors added in full scoring 0.250 on the 32-sample
    # validation splits against 0.427 for their TIES merge; anchored ones keep their own scores
    # (0.75 / 0.66 / 0.56) and added in full score 0.656 / 0.469 / 0.563 (0.562), above their TIES
    # merge (0.438; benchmarks/interference_probe.py). So the search runs in the paper's genome
    # space (``combine: sum``) and the final merge takes each expert's slice from its archive's best
    # elite in full (``final_merge: assemble``: the experts' sum when those elites are the experts).
    # Crossover merges per expert slice (the paper's average of two single-skill experts halves both
    # skills), mutation draws a signed SVD step (so a direction can also shrink), and the better of
    # the final merge and the best elite on validation is kept (``final_model: best_of``). Children
    # are evaluated one at a time: on a 2-core CPU shared forward passes were slower (0.62x at K=4,
    # README), and 48 rows already fill a batch. 48 test samples per task give the table's
    # intervals; 32 validation samples per task (16 could not tell 0.354 from 0.427) cost ten
    # generations instead of 12.
    "cpu": Preset(
        name="cpu",
        n_train=192,
        n_val=32,
        n_test=48,
        generations=10,
        max_new_tokens={"code": 96, "os": 64, "db": 64},
        max_rounds={"os": 3, "db": 3},
        train_epochs=2,
        batch_size=48,
        real_limit=10,
        anchor_weight=1.0,
        crossover="per_expert",
        final_model="best_of",
        final_merge="assemble",
        signed_mutation=True,
    ),
    "full": Preset(
        name="full",
        n_train=1200,
        n_val=60,
        n_test=200,
        n_language=1000,
        generations=300,
        bins=15,
        max_rounds={"os": 5, "db": 5},
        train_epochs=3,
        batch_size=64,
        real_limit=None,
        # a GPU's decoding step is memory- and launch-bound: eight children share each pass
        # where the measured cost model (``executor.population: auto``) finds that it pays
        children_per_batch=8,
    ),
    "mini": Preset(
        name="mini",
        n_train=16,
        n_val=3,
        n_test=3,
        n_language=6,
        n_language_search=4,
        generations=4,
        bins=5,
        max_new_tokens={"code": 12, "os": 12, "db": 12},
        max_rounds={"os": 2, "db": 2},
        train_epochs=1,
        train_max_len=8192,  # the tiny models' character tokenizer: a token per character
        batch_size=8,
        real_limit=2,
        merges=("linear", "task_arithmetic", "ties", "dare_ties"),
        children_per_batch=2,
        population="on",  # the plumbing test checks the shared path, whatever the timings
        final_merge="ties",
        anchor_weight=1.0,  # the plumbing test checks that experts are anchored
    ),
}

# The search's operators as the paper has them: ``cycleqd demo --ablation`` searches with these,
# then with each of a preset's departures from them alone. TSV bases are ablated even though no
# preset uses them yet, so their measured effect is in the table beside the rest.
PAPER_OPERATORS: dict[str, object] = {
    "crossover": "linear",
    "signed_mutation": False,
    "final_merge": "softmax",
    "final_model": "merge",
    "basis_kind": "svd",
    "combine": "sum",
}
_CONFIG_KEYS = {
    "crossover": "search.crossover.kind",
    "signed_mutation": "search.mutation.signed",
    "final_merge": "search.final_merge",
    "final_model": "search.final_model",
    "basis_kind": "basis.kind",
    "combine": "basis.combine",
}


def ablations(preset: Preset) -> list[tuple[str, Preset]]:
    """``(label, preset)``: the paper's operators, then each of ``preset``'s changes alone."""
    paper = replace(preset, **PAPER_OPERATORS)  # type: ignore[arg-type]
    variants = [("paper's operators", paper)]
    for key, paper_value in PAPER_OPERATORS.items():
        value = getattr(preset, key)
        if key == "basis_kind" and value == paper_value:
            value = "tsv"
        if value == paper_value:
            continue
        shown = "true" if value is True else value
        variants.append((f"paper + {_CONFIG_KEYS[key]}: {shown}", replace(paper, **{key: value})))
    return variants
