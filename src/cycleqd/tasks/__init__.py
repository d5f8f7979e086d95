"""Tasks that score a model; importing this package registers the built-in task types."""

# Importing a task module registers its task types, data checkers and procedural suites.
from cycleqd.tasks import code, db, multiple_choice, simple, synthetic  # noqa: F401
from cycleqd.tasks import os as os_task  # noqa: F401
from cycleqd.tasks.base import (
    LanguageEngine,
    Task,
    TaskResult,
    build_task,
    register_task,
    task_types,
)

__all__ = ["LanguageEngine", "Task", "TaskResult", "build_task", "register_task", "task_types"]
