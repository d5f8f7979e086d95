"""Tasks that score a model; importing this package registers the built-in task types."""

from cycleqd.tasks import simple  # noqa: F401  (registers exact_match and likelihood)
from cycleqd.tasks.base import Task, TaskResult, build_task, register_task, task_types

__all__ = ["Task", "TaskResult", "build_task", "register_task", "task_types"]
