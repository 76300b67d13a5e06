"""User-facing errors: one clear line, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by user input (bad flag, missing file, unknown name).

    The CLI prints ``str(err)`` on one line and exits with code 2, without a traceback.
    The message should say what was wrong and what to do.
    """

    exit_code = 2
