"""Errors a user causes reach the command line as one line on stderr and a non-zero exit status.

A user error is a bad setting or input: a ``ValueError`` or ``TypeError`` from the argument checks,
an ``OSError`` (a missing or unwritable path), a checkpoint that is missing or does not fit, a run
directory another run holds, a diverged loss, or an object Hydra could not build from the config.
Anything else is a bug and keeps its traceback. ``--verbose`` (which sets ``HYDRA_FULL_ERROR=1``)
shows the traceback of user errors too.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

__all__ = ["one_line_errors", "one_line", "is_user_error", "verbose", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2
# (module, class): looked up only if the module is loaded, since an exception of a module that was
# never imported cannot have been raised; this keeps torch out of the light commands
_USER_ERROR_CLASSES = (
    ("spikegate.checkpoint", "CheckpointError"),
    ("spikegate.run_directory", "RunDirectoryError"),
    ("spikegate.train", "NonFiniteLossError"),
    ("hydra.errors", "InstantiationException"),
)


def verbose() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def is_user_error(err: BaseException) -> bool:
    types: list[type] = [ValueError, TypeError, OSError]
    for module_name, name in _USER_ERROR_CLASSES:
        module = sys.modules.get(module_name)
        if module is not None:
            types.append(getattr(module, name))
    return isinstance(err, tuple(types))


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line. Hydra's instantiate wraps the error of the object it
    builds ("Error in call to target ...\\nValueError(...)\\nfull_key: dataset"): that error's own
    message is the useful part, with the config key it came from."""
    cause = err.__cause__ if type(err).__name__ == "InstantiationException" else None
    text = str(cause) if cause is not None else str(err)
    if cause is not None:
        key = next((line.split(":", 1)[1].strip() for line in str(err).splitlines()
                    if line.startswith("full_key:")), None)
        text = f"{key}: {text}" if key else text
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(err).__name__


@contextmanager
def one_line_errors(command: str) -> Iterator[None]:
    """Print a user error raised inside as ``command: message`` and exit with status 2."""
    try:
        yield
    except Exception as err:
        if verbose() or not is_user_error(err):
            raise
        text = one_line(err)
        word = command.split()[-1]  # "evaluate: ..." from spikegate evaluate is not said twice
        print(f"{command}: {text.removeprefix(f'{word}: ')}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
