"""The ``agentbench-os`` task: AgentBench OS interaction, scored in throwaway Linux machines.

Quality is the mean score over the samples we can run; samples that need the network or another
image are listed in the records as unsupported and left out of the mean (their score would say
nothing about the model). The root file system is built on first use and cached.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cycleqd.errors import CycleQDError
from cycleqd.tasks.agent import LoopStats, run_episodes
from cycleqd.tasks.base import LanguageEngine, TaskResult, register_task
from cycleqd.tasks.os.data import OSSample, load_samples, unsupported_reason
from cycleqd.tasks.os.environment import EnvironmentOptions
from cycleqd.tasks.os.episode import OSEpisode
from cycleqd.tasks.os.protocol import reply_complete
from cycleqd.tasks.os.rootfs import build_rootfs


class OSTaskParams(BaseModel):
    """Config ``params`` of an ``agentbench-os`` task."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    scripts: Path | None = None  # default: ../scripts/<data file stem> if it exists
    limit: int | None = Field(default=None, ge=1)
    max_rounds: int = Field(default=5, ge=1)  # CycleQD's evaluation; AgentBench uses 8
    max_new_tokens: int = Field(default=512, ge=1)
    workers: int = Field(default=4, ge=1)
    command_timeout_s: float = Field(default=10.0, gt=0)


class AgentBenchOSTask:
    """Plays every supported sample as a multi-turn episode with the engine's model."""

    def __init__(self, name: str, params: OSTaskParams) -> None:
        self.name = name
        self.params = params
        samples = load_samples(params.data, params.scripts, params.limit)
        self.unsupported: list[tuple[OSSample, str]] = []
        self.samples: list[OSSample] = []
        for s in samples:
            why = unsupported_reason(s)
            if why is None:
                self.samples.append(s)
            else:
                self.unsupported.append((s, why))
        if not self.samples:
            raise CycleQDError(f"{params.data}: no sample can run here (all unsupported)")
        self.stats = LoopStats()

    def episodes(self, rootfs: Path | None = None) -> list[OSEpisode]:
        rootfs = rootfs or build_rootfs()
        options = EnvironmentOptions(command_timeout_s=self.params.command_timeout_s)
        return [OSEpisode(s, rootfs, options) for s in self.samples]

    def evaluate(self, engine: LanguageEngine) -> TaskResult:
        transcripts = run_episodes(
            engine,
            self.episodes(),
            max_rounds=self.params.max_rounds,
            max_new_tokens=self.params.max_new_tokens,
            until=reply_complete,
            workers=self.params.workers,
            stats=self.stats,
        )
        records = [t.to_record() for t in transcripts]
        for sample, why in self.unsupported:
            records.append(
                {
                    "sample_id": sample.sample_id,
                    "score": 0.0,
                    "rounds": 0,
                    "finished": False,
                    "unsupported": why,
                    "details": {"status": "unsupported", "reason": why},
                    "messages": [],
                }
            )
        quality = sum(t.score for t in transcripts) / len(transcripts)
        return TaskResult(quality, records)


register_task("agentbench-os", OSTaskParams)(AgentBenchOSTask)
