"""The one exception type for expected failures (bad input, wrong files)."""


class LamRobotError(Exception):
    """An error the user can fix; the CLI prints its message on one line, without a traceback."""
