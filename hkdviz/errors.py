"""How every `hkdviz` command reports a failure: one line on stderr, and an exit code that says whose
problem it is.

    exit 2  bad usage: wrong arguments, a value out of range, a config key that does not exist, a
            checkpoint or data path that does not exist (the commands check their inputs up front);
    exit 1  a run that failed: any OSError while it runs (the output directory is read-only, full, or
            cannot be created), the machine ran out of memory, a data file or a checkpoint is
            corrupt, an unexpected error.

A traceback is printed only when asked for: `--debug` anywhere on the command line, or the
environment variable HKDVIZ_DEBUG=1. Everything else is one line `hkdviz <command>: error: ...`,
so scripts can grep it and users are not handed a wall of torch internals for a typo.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "HKDVIZ_DEBUG"

USAGE_EXIT = 2
FAILURE_EXIT = 1


class UsageError(ValueError):
    """A command line that cannot run as given (exit code 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (`prog: error: message`), not usage + message."""

    def error(self, message):
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


# Set by run_guarded while its command runs: commands that report some errors themselves (figures, demo,
# train) ask debugging() whether to add the traceback.
_debug_requested = False


def debugging() -> bool:
    """Whether the running command was asked for tracebacks (--debug or HKDVIZ_DEBUG=1)."""
    return _debug_requested or os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def split_debug(argv) -> tuple[list[str], bool]:
    """(argv without --debug, whether a traceback was asked for by --debug or HKDVIZ_DEBUG)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return [item for item in argv if item != DEBUG_FLAG], DEBUG_FLAG in argv or debugging()


def print_traceback_if_debugging() -> None:
    if debugging():
        traceback.print_exc()


def _usage_types() -> tuple:
    from .checkpoint import CheckpointNotFoundError
    from .model.config import ConfigError
    types = [UsageError, ConfigError, CheckpointNotFoundError]
    try:
        from .data.base import DatasetError
        from .train.presets import PresetError
        types += [PresetError, DatasetError]
    except ImportError:  # pragma: no cover - an install without the training stack
        pass
    return tuple(types)


def _failure_types() -> tuple:
    """Errors of the run itself; some derive from ValueError, so they are tested before ValueError."""
    from .checkpoint import CheckpointError
    types = [MemoryError, CheckpointError]
    try:
        from .analysis.storage import StorageError
        types.append(StorageError)
    except ImportError:  # pragma: no cover - xarray missing
        pass
    return tuple(types)


def exit_code(error: BaseException) -> int:
    """2 for bad usage, 1 for a failed run (see the module docstring)."""
    # Usage first: CheckpointNotFoundError (a name that is not shipped) is a CheckpointError too.
    if isinstance(error, _usage_types()):
        return USAGE_EXIT
    if isinstance(error, _failure_types()):
        return FAILURE_EXIT
    if isinstance(error, OSError):  # read-only or full disk, permissions, I/O errors
        return FAILURE_EXIT
    if isinstance(error, (ValueError, TypeError)):  # a value the API refused: bad input
        return USAGE_EXIT
    return FAILURE_EXIT


def describe(error: BaseException) -> str:
    """One line naming the problem. Errors hkdviz raises keep their own text (it names the file, key or
    value); anything unexpected gets its type and a pointer to --debug."""
    if isinstance(error, MemoryError):
        text = "out of memory" + (f" ({error})" if str(error) else "") + "; try fewer seeds or a smaller batch size"
    elif isinstance(error, OSError) and error.filename is not None:
        text = f"{error.strerror or error}: {error.filename}"
        if isinstance(error, PermissionError) or error.errno == errno.ENOSPC:
            text += " (is the output directory writable, with free space?)"
    elif isinstance(error, (ValueError, TypeError, OSError)) or type(error).__module__.split(".")[0] == "hkdviz":
        text = str(error) or type(error).__name__  # hkdviz's own error classes (TrainingError, ...) included
    else:
        text = f"{type(error).__name__}: {error} (unexpected; rerun with {DEBUG_FLAG} for the traceback)"
    return " ".join(text.split())


def run_guarded(prog: str, body, argv=None) -> int:
    """Run `body(argv) -> int` the way every hkdviz command runs: --debug stripped from argv, every
    exception turned into one line on stderr and an exit code (a traceback only when debugging).
    SystemExit (argparse, --help) and KeyboardInterrupt keep their meaning."""
    global _debug_requested
    argv, debug = split_debug(argv)
    previous, _debug_requested = _debug_requested, debug
    try:
        return body(argv)
    except SystemExit as exit_request:
        code = exit_request.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        print(code, file=sys.stderr)  # SystemExit("message"): argparse-style one-liners
        return USAGE_EXIT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - this is the one place that reports every failure
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {describe(error)}", file=sys.stderr)
        return exit_code(error)
    finally:
        _debug_requested = previous




def check_device_option(value, flag: str = "--device"):
    """A --device value resolved up front: a device that cannot be used is bad usage (exit 2), named."""
    from .checkpoint import resolve_device
    try:
        return resolve_device(value)
    except (RuntimeError, ValueError, TypeError) as error:
        raise UsageError(f"{flag} {value}: {error}") from None


__all__ = ["UsageError", "OneLineParser", "split_debug", "debugging", "print_traceback_if_debugging", "exit_code",
           "describe", "run_guarded", "check_device_option", "USAGE_EXIT", "FAILURE_EXIT"]
