"""One AgentBench OS sample played as an :class:`~cycleqd.tasks.agent.Episode`.

``reset`` builds a fresh machine, runs the sample's init scripts (beside the shell, like
``docker exec``: their ``export``s and ``cd``s die with them) and its ``start`` command (typed into
the shell, so what it sets or starts belongs to the agent's session) and returns the AgentBench
opening turns. An init script that exits non-zero ends the sample as failed before the agent
acts, as AgentBench (at the commit the data comes from) does; docs/os-execution-model.md has the
whole execution model. ``step`` parses the
reply: a bash action runs in the persistent shell and its output comes back as the next user
turn; an answer or finish ends the conversation; anything else ends it as invalid, as AgentBench
does. ``grade`` runs the judge in the same machine; ``close`` throws the machine away.

What the agent does to its own machine (fork bombs, ``kill -9 -1``, filling the disk) is part of
its episode and scores as failed; only a machine that cannot be built raises (infrastructure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cycleqd.tasks.os.data import OSSample
from cycleqd.tasks.os.environment import EnvironmentOptions, OSEnvironment, SandboxDied
from cycleqd.tasks.os.grading import grade_answer
from cycleqd.tasks.os.protocol import Message, format_observation, opening_messages, parse_action


class OSEpisode:
    """A conversation between the model and one throwaway Linux machine."""

    def __init__(
        self, sample: OSSample, rootfs: Path, options: EnvironmentOptions | None = None
    ) -> None:
        self.sample = sample
        self.sample_id = sample.sample_id
        self.rootfs = rootfs
        self.options = options or EnvironmentOptions()
        self.env: OSEnvironment | None = None
        self.answer: str | None = None
        self.committed = False
        self.status = "round limit"
        self.last_output = ""
        self.setup: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []

    def reset(self) -> list[Message]:
        self.env = OSEnvironment(self.rootfs, self.options)
        self.env.start()
        for i, script in enumerate(self.sample.init):
            r = self.env.exec(script.language, script.code)
            self.setup.append(
                {
                    "init": i,
                    "exit_code": r.exit_code,
                    "timed_out": r.timed_out,
                    "output": r.output[-500:],
                }
            )
            if r.exit_code != 0:
                self.status = f"init script {i} failed (exit {r.exit_code})"
                return opening_messages(self.sample.description)
        if self.sample.start is not None:
            r2 = self.env.run(self.sample.start.code, terminal=True)
            self.setup.append({"start": r2.output[-500:], "timed_out": r2.timed_out})
        return opening_messages(self.sample.description)

    def step(self, reply: str) -> str | None:
        if self.committed or self.status != "round limit":
            return None
        action = parse_action(reply)
        if action.kind is None:
            self.status = "invalid action"
            return None
        if action.kind in ("answer", "finish"):
            self.answer = action.content
            self.committed = True
            self.status = "completed"
            return None
        assert self.env is not None
        try:
            result = self.env.run(action.content or "")
        except SandboxDied as exc:
            self.status = f"environment died: {exc}"
            return None
        self.last_output = result.output
        self.commands.append(
            {
                "command": action.content,
                "exit_code": result.exit_code,
                "timed_out": result.timed_out,
                "restarted": result.restarted,
                "output_bytes": result.output_bytes,
            }
        )
        return format_observation(result.output.rstrip("\n"))

    def grade(self) -> tuple[float, dict[str, Any]]:
        details: dict[str, Any] = {
            "status": self.status,
            "setup": self.setup,
            "commands": self.commands,
        }
        if not self.committed:
            return 0.0, details
        assert self.env is not None
        try:
            ok, judged = grade_answer(self.sample, self.answer, self.env)
        except SandboxDied as exc:
            details["status"] = f"environment died while grading: {exc}"
            return 0.0, details
        details.update(judged)
        return float(ok), details

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
