"""The ``dbbench`` task type: AgentBench DBBench episodes, quality = mean score.

Config example::

    tasks:
      db:
        type: dbbench
        params: {data: data/dbbench/dev.jsonl, limit: 60, workers: 4}

The server is reached (or started) when the first evaluation needs it, not when the config is
read, so validating a config never starts MariaDB.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cycleqd.tasks.agent import LoopStats, run_episodes
from cycleqd.tasks.base import LanguageEngine, TaskResult, register_task
from cycleqd.tasks.db.data import DBSample, load_samples
from cycleqd.tasks.db.episode import DBBenchEpisode, replies_allowed
from cycleqd.tasks.db.protocol import DEFAULT_MAX_ROUNDS, reply_complete
from cycleqd.tasks.db.server import DatabaseServer, get_server


class DBBenchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Path
    limit: int | None = Field(default=None, ge=1)
    # Executed operations per sample (AgentBench's max_round); one more reply may answer.
    max_rounds: int = Field(default=DEFAULT_MAX_ROUNDS, ge=1)
    max_new_tokens: int = Field(default=512, ge=1)
    workers: int = Field(default=4, ge=1)
    # mysql://user:password@host:port of an existing server; default: a private MariaDB.
    db_url: str | None = None


def build_episodes(
    samples: list[DBSample], server: DatabaseServer, *, max_rounds: int = DEFAULT_MAX_ROUNDS
) -> list[DBBenchEpisode]:
    return [DBBenchEpisode(s, server, max_rounds=max_rounds) for s in samples]


class DBBenchTask:
    """Scores a model on DBBench samples against a real MySQL-compatible server."""

    def __init__(self, name: str, params: DBBenchParams) -> None:
        self.name = name
        self.params = params
        self.samples = load_samples(params.data, params.limit)
        self.stats = LoopStats()

    def evaluate(self, engine: LanguageEngine) -> TaskResult:
        p = self.params
        server = get_server(p.db_url)
        episodes = build_episodes(self.samples, server, max_rounds=p.max_rounds)
        transcripts = run_episodes(
            engine,
            episodes,
            max_rounds=replies_allowed(p.max_rounds),
            max_new_tokens=p.max_new_tokens,
            workers=p.workers,
            stats=self.stats,
            until=reply_complete,  # decoding past the first complete action is wasted time
        )
        records = [t.to_record() for t in transcripts]
        quality = sum(t.score for t in transcripts) / len(transcripts)
        return TaskResult(min(1.0, max(0.0, quality)), records)


register_task("dbbench", DBBenchParams)(DBBenchTask)
