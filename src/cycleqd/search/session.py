"""Everything a run needs in memory, built from its config once per process.

Kept apart from :mod:`cycleqd.search.run` (the run directory's life cycle) because a Ray actor
builds one too: the executors import this module, and the run module imports the executors.
"""

from __future__ import annotations

from pathlib import Path

from cycleqd.config import RunConfig
from cycleqd.merging.adapters import open_expert
from cycleqd.merging.basis import ExpertBasis, load_or_build_basis
from cycleqd.merging.genome import Genome
from cycleqd.merging.materialise import Materialiser
from cycleqd.merging.sources import SafetensorsSource, check_compatible
from cycleqd.models.engine import HFEngine
from cycleqd.models.engines import EngineSlot, close_engine, open_engine
from cycleqd.search.loop import ProgressFn
from cycleqd.tasks import build_task


class Session:
    """Everything a run needs in memory: built once per process."""

    def __init__(
        self,
        config: RunConfig,
        progress: ProgressFn | None = None,
        *,
        basis: ExpertBasis | None = None,
        engine: bool = True,
        slot: EngineSlot | None = None,
    ) -> None:
        """``basis`` given: reuse it (a Ray actor gets it from the object store); ``engine``
        False: no model and no task environments (the Ray driver only breeds genomes);
        ``slot``: take the engine from it (a vLLM engine already open for the same model and
        settings is reused, its weights rewritten) and leave it open for the slot's owner."""
        self.config = config
        self._slot = slot
        task_experts = config.task_experts()
        self.task_names = [t.name for t in config.tasks]
        # the executor scores every task and every constraint; only tasks have archives
        self.tasks = (
            [build_task(t.name, t.type, t.params, f"tasks.{i}") for i, t in enumerate(config.tasks)]
            + [
                build_task(c.name, c.type, c.params, f"constraints.{i}")
                for i, c in enumerate(config.constraints)
            ]
            if engine
            else []
        )
        self.base = SafetensorsSource(config.base_model)
        self.experts = {e.name: open_expert(e.path, self.base) for e in config.experts}
        check_compatible(self.base, self.experts)
        emit = progress or (lambda event: None)

        def on_tensor(done: int, total: int, name: str) -> None:
            emit({"phase": "basis", "done": done, "total": total, "tensor": name})

        self.basis: ExpertBasis = basis or load_or_build_basis(
            self.base,
            self.experts,
            energy=config.basis.energy,
            rtol=config.basis.rtol,
            max_rank=config.basis.max_rank,
            kind=config.basis.kind,
            cache_dir=config.basis.cache_dir,
            device=config.basis.device,
            progress=on_tensor,
        )
        self.task_experts = task_experts
        if not engine:
            return
        emit({"phase": "engine"})
        settings = {**config.engine.model_dump(), "seed": config.seed}
        self.engine = (
            open_engine(config.base_model, **settings)
            if slot is None
            else slot.open(config.base_model, settings)
        )
        resident = isinstance(self.engine, HFEngine)
        self.materialiser = Materialiser(
            self.basis,
            self.base,
            self.engine.module if resident else None,
            self.engine.device,
            combine=config.basis.combine,
            density=config.basis.density,
            writer=None if resident else self.engine.write_weights,
        )

    def close(self) -> None:
        """Stop the engine unless a slot lent it (vLLM's engine core keeps its memory until
        stopped, see :meth:`~cycleqd.models.vllm_engine.VLLMEngine.close`); the session scores
        nothing after."""
        engine = self.__dict__.pop("engine", None)
        if self._slot is None:
            close_engine(engine)

    def export_genome(self, genome: Genome, out_dir: Path) -> str:
        """Write ``genome`` as a Hugging Face model directory, in the base checkpoint's dtype.

        When the engine computes in another dtype (bfloat16 under ``engine.dtype: auto`` with a
        float32 checkpoint), the merged tensors are computed again in float32 for the file, so
        an export does not depend on the dtype the search evaluated in.
        """
        saved = self.engine.checkpoint_dtype
        if isinstance(self.engine, HFEngine) and self.engine.dtype == saved:
            self.materialiser.load(genome)  # the resident weights are the file's
            self.engine.save(out_dir)
        else:  # every merged tensor is given, so loading it into the resident model is moot
            self.engine.save(out_dir, self.materialiser.weights(genome, saved))
        return str(out_dir)
