"""The one error hierarchy of subaudit: every error the tool raises on purpose is a `SubauditError`.

Each carries a one-line message that names what is wrong and the fix, so the plugin can show it as one
line (and in the report's "why" column) instead of a traceback. `UsageError` marks bad input named on the
command line or in pyproject.toml: the plugin turns it into pytest's usage error (exit 4) at start-up.
Every other module's exception subclasses one of these (as httpx's `_exceptions.py` does).
"""

from __future__ import annotations


class SubauditError(Exception):
    """Base of every error subaudit raises on purpose; the message is one line naming the fix."""


class UsageError(SubauditError):
    """Bad input named by the user (an option, a path, a probe file): fixed by changing the command."""


class ModelNotFound(UsageError):
    """No model matched `--model`; the message says what was looked for and how to get it."""


def exit_code(action) -> int:
    """Run a command-line action: 0, or its SubauditError as one line on stderr and 2 (a usage exit)."""
    import sys

    try:
        action()
    except SubauditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
