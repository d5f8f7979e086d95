"""Reference solutions of AgentBench OS samples, replayed through the real machine and grader.

``cycleqd data check`` uses this to prove the evaluator right on real data: a sample passes when
its reference solution, played as agent turns, scores 1. The reference is the sample's gold
``trajectory`` when it has one (our generated suites), otherwise it is derived from the data:
``match`` samples answer the expected string; ``check`` samples run the example script in the
shell and answer with its output, exactly what a perfect agent would do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cycleqd.tasks.agent import Transcript, replay
from cycleqd.tasks.checks import CheckOutcome
from cycleqd.tasks.os.data import OSSample, Script, unsupported_reason
from cycleqd.tasks.os.environment import EnvironmentOptions
from cycleqd.tasks.os.episode import OSEpisode


def bash_turn(code: str, thought: str = "I will run the reference solution.") -> str:
    return f"Think: {thought}\n\nAct: bash\n\n```bash\n{code}\n```"


def answer_turn(answer: str, thought: str | None = None) -> str:
    thought = thought or f"Now I get the answer, it is {answer}."
    return f"Think: {thought}\n\nAct: answer({answer})"


def finish_turn(thought: str = "The task is done.") -> str:
    return f"Think: {thought}\n\nAct: finish"


def script_as_command(script: Script) -> str:
    """A script as something to type into bash (python goes through a quoted here-document)."""
    if script.language == "python":
        return f"python3 - <<'__CYCLEQD_PY__'\n{script.code}\n__CYCLEQD_PY__"
    return script.code


def play_reference(
    sample: OSSample, rootfs: Path, options: EnvironmentOptions | None = None
) -> Transcript:
    """Play the sample's reference solution through a fresh episode; returns the transcript."""
    episode = OSEpisode(sample, rootfs, options)
    if sample.trajectory is not None:
        return replay(episode, sample.trajectory)
    if sample.match is not None:
        return replay(episode, [answer_turn(str(sample.match["answer"]))])
    assert sample.example is not None
    tr = Transcript(sample.sample_id)
    try:
        tr.messages = list(episode.reset())
        turns = [bash_turn(script_as_command(sample.example))]
        obs = episode.step(turns[0])
        tr.messages.append({"role": "assistant", "content": turns[0]})
        if obs is not None:
            tr.messages.append({"role": "user", "content": obs})
            last = answer_turn(episode.last_output.strip())
            tr.messages.append({"role": "assistant", "content": last})
            episode.step(last)
            tr.finished = True
        tr.rounds = 2
        tr.score, tr.details = episode.grade()
    finally:
        episode.close()
    return tr


def reference_problem(sample: OSSample) -> str | None:
    """Why a sample has no reference solution we can play (None when it has one)."""
    if sample.trajectory is not None:
        return None
    if sample.match is not None and "answer" not in sample.match:
        return "a regex match has no reference answer to play"
    if sample.check is not None and sample.example is None:
        return "a check sample without an example script has no reference solution"
    return None


def check_samples(
    samples: Sequence[OSSample],
    rootfs: Path,
    *,
    workers: int = 2,
    options: EnvironmentOptions | None = None,
) -> Iterator[CheckOutcome]:
    """Passed / failed / unsupported for each sample, in order, ``workers`` machines at once."""

    def one(sample: OSSample) -> CheckOutcome:
        why = unsupported_reason(sample) or reference_problem(sample)
        if why is not None:
            return CheckOutcome(sample.sample_id, "unsupported", why)
        tr = play_reference(sample, rootfs, options)
        if tr.score >= 1.0:
            return CheckOutcome(sample.sample_id, "passed")
        return CheckOutcome(sample.sample_id, "failed", _why_failed(tr, sample))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from pool.map(one, samples)


def _why_failed(tr: Transcript, sample: OSSample) -> str:
    d = tr.details
    parts = [f"status={d.get('status')}"]
    for step in d.get("setup", []):
        if step.get("exit_code", 0) != 0:
            parts.append(f"init script {step['init']} failed: {step}")
    if "answer" in d:
        parts.append(f"answer={d['answer']!r}")
    steps = d.get("steps", [])
    if sample.trajectory is None and sample.check and sample.check[0] is None and steps:
        rerun = str(steps[0].get("output", "")).strip()
        if "answer" in d and rerun != str(d["answer"]).strip():
            # The reference answered with the example's output in the agent's shell; the check
            # re-ran it as an independent script. AgentBench runs both the same way, so there
            # the example disagrees with itself too (see docs/os-execution-model.md).
            parts.append(
                f"the example printed {d['answer']!r} in the agent's shell but {rerun!r} when "
                "the check re-ran it as an independent script (init's exports and cd do not "
                "reach either; the re-run is one more process; /proc changes)"
            )
    for step in steps:
        if step.get("exit_code", 0) != 0 or "error" in step:
            parts.append(f"check script {step['script']} failed: {step}")
    if "expected" in d:
        parts.append(f"expected={d['expected']}")
    return "; ".join(parts)
