"""User-facing errors.

Anything the user can fix (a bad config key, a mismatched expert, a corrupted run directory)
raises :class:`CycleQDError`; the CLI turns it into a one-line message and exit code 2, while
genuine bugs keep their traceback.
"""


class CycleQDError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""
