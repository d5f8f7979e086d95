"""The batched multi-turn agent loop shared by the OS and database tasks.

An agent benchmark is a set of *episodes*, each a conversation between the model and one
environment (a shell, a database). Generation is the expensive part, so all live episodes of a
task advance together: one batched ``engine.generate`` call per round over every conversation that
is still going, then every environment acts on its reply concurrently (threads: the environments
are other processes, so the GIL is not the bottleneck). Transcripts are kept for the report.

An environment failure that is the model's doing (bad SQL, a command that crashes) is part of the
episode and scores as failed; an :class:`EnvironmentError` raised by an episode means the
infrastructure itself broke (the server died) and aborts the evaluation, because a score computed
without a working environment would be a lie.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from cycleqd.tasks.base import LanguageEngine

Message = dict[str, str]


class Episode(Protocol):
    """One sample's conversation with its own fresh environment."""

    sample_id: str

    def reset(self) -> list[Message]:
        """Create the environment; return the opening messages (system/one-shot/user turns)."""
        ...

    def step(self, reply: str) -> str | None:
        """Act on the model's reply; return the next user message, or None when it is over."""
        ...

    def grade(self) -> tuple[float, dict[str, Any]]:
        """Score in [0, 1] plus details, once the conversation has ended (or ran out of rounds)."""
        ...

    def close(self) -> None:
        """Discard the environment; must be safe to call more than once."""
        ...


@dataclass
class Transcript:
    """What happened in one episode: the whole conversation, the score and why."""

    sample_id: str
    messages: list[Message] = field(default_factory=list)
    score: float = 0.0
    rounds: int = 0
    finished: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "score": self.score,
            "rounds": self.rounds,
            "finished": self.finished,
            "details": self.details,
            "messages": self.messages,
        }


@dataclass
class LoopStats:
    """Where the time went, for the tokens-per-second comparison with raw ``generate``."""

    generate_s: float = 0.0
    environment_s: float = 0.0
    generated_chars: int = 0
    calls: int = 0


def run_episodes(
    engine: LanguageEngine,
    episodes: Sequence[Episode],
    *,
    max_rounds: int,
    max_new_tokens: int,
    stop: Sequence[str] = (),
    until: Callable[[str], bool] | None = None,
    workers: int = 4,
    on_round: Callable[[int, int], None] | None = None,
    stats: LoopStats | None = None,
) -> list[Transcript]:
    """Play every episode to its end or to ``max_rounds`` model replies; grade; clean up.

    ``until(reply)`` stops a reply at its first complete action (see ``HFEngine.generate``);
    ``on_round(round, live)`` is called before each round's generation (progress reporting).
    """
    stats = stats if stats is not None else LoopStats()
    transcripts = [Transcript(e.sample_id) for e in episodes]
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            t0 = time.perf_counter()
            openings = list(pool.map(lambda e: e.reset(), episodes))
            stats.environment_s += time.perf_counter() - t0
            for tr, opening in zip(transcripts, openings, strict=True):
                tr.messages = list(opening)
            live = list(range(len(episodes)))
            for rnd in range(max_rounds):
                if not live:
                    break
                if on_round is not None:
                    on_round(rnd, len(live))
                t0 = time.perf_counter()
                replies = engine.generate(
                    [transcripts[i].messages for i in live],
                    max_new_tokens=max_new_tokens,
                    stop=stop,
                    chat=True,
                    until=until,
                )
                stats.generate_s += time.perf_counter() - t0
                stats.calls += 1
                stats.generated_chars += sum(len(r) for r in replies)
                for i, reply in zip(live, replies, strict=True):
                    transcripts[i].messages.append({"role": "assistant", "content": reply})
                    transcripts[i].rounds += 1
                t0 = time.perf_counter()
                pairs = zip(live, replies, strict=True)
                observations = list(pool.map(lambda ir: episodes[ir[0]].step(ir[1]), pairs))
                stats.environment_s += time.perf_counter() - t0
                still = []
                for i, obs in zip(live, observations, strict=True):
                    if obs is None:
                        transcripts[i].finished = True
                    else:
                        transcripts[i].messages.append({"role": "user", "content": obs})
                        still.append(i)
                live = still
            t0 = time.perf_counter()
            grades = list(pool.map(lambda e: e.grade(), episodes))
            stats.environment_s += time.perf_counter() - t0
            for tr, (score, details) in zip(transcripts, grades, strict=True):
                if not 0.0 <= score <= 1.0:
                    raise ValueError(f"episode {tr.sample_id}: score {score} outside [0, 1]")
                tr.score = float(score)
                tr.details = details
    finally:
        for e in episodes:
            e.close()
    return transcripts


def replay(episode: Episode, replies: Sequence[str]) -> Transcript:
    """Play a fixed list of replies (a gold trajectory) through one episode and grade it.

    This is how ``cycleqd data check`` proves that a sample's reference solution passes the real
    environment and grader, and how expert-training data is validated.
    """
    tr = Transcript(episode.sample_id)
    try:
        tr.messages = list(episode.reset())
        for reply in replies:
            tr.messages.append({"role": "assistant", "content": reply})
            tr.rounds += 1
            obs = episode.step(reply)
            if obs is None:
                tr.finished = True
                break
            tr.messages.append({"role": "user", "content": obs})
        tr.score, tr.details = episode.grade()
    finally:
        episode.close()
    return tr
