"""Opening input files safely: regular files only, JSON read with a size cap.

Every file hkdviz reads (checkpoint weights, config/meta JSON, trajectory manifests and chunks,
resume files, data-set files) passes through `require_regular_file` first. A FIFO blocks a reader
until someone writes to it, /dev/zero or /dev/urandom never end, and a directory or socket gives
an obscure error deep inside a library; all of them are refused here with a message naming the
path and what it is. JSON files are small by nature: reading more than `JSON_LIMIT_BYTES` means
something is wrong (a data file renamed to .json, a runaway writer), so it is refused before parsing.

Each function takes `error`, the exception class to raise, so a checkpoint problem stays a
CheckpointError, a data-set problem a DatasetError, and so on; `what` names the file's role.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

JSON_LIMIT_BYTES = 16 << 20  # 16 MiB: the largest hkdviz JSON (a checkpoint's meta.json) is a few kB


class InputFileError(ValueError):
    """An input path that is missing, not a regular file, or too large; the message says which."""


def file_kind(mode: int) -> str:
    """What a st_mode is, in words, for error messages."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def require_regular_file(path, error: type[Exception] = InputFileError, what: str = "input file") -> os.stat_result:
    """The stat of `path` (symlinks followed) when it is a regular file; `error` otherwise.

    Checked before anything opens the file, so a FIFO or device never blocks the caller."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} missing (no such file)") from None
    except OSError as problem:
        raise error(f"{path}: cannot read the {what} ({problem.strerror or problem})") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: the {what} is {file_kind(info.st_mode)}, not a regular file") from None
    return info


def open_regular_file(path, error: type[Exception] = InputFileError, what: str = "input file"):
    """A binary read handle on `path`, which must be a regular file.

    Opened with O_NONBLOCK and checked again on the open descriptor: a file swapped for a FIFO
    between the check and the open still cannot block (O_NONBLOCK has no effect on regular files)."""
    path = Path(path)
    require_regular_file(path, error, what)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as problem:
        raise error(f"{path}: cannot open the {what} ({problem.strerror or problem})") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise error(f"{path}: the {what} is {file_kind(mode)}, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def read_bytes_limited(path, limit: int, error: type[Exception] = InputFileError, what: str = "input file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (checked before reading, and while reading
    in case the file grows)."""
    path = Path(path)
    info = require_regular_file(path, error, what)
    if info.st_size > limit:
        raise error(f"{path}: the {what} is {info.st_size:,} bytes, more than the {limit:,} allowed; "
                    f"is it the right file?")
    with open_regular_file(path, error, what) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: the {what} grew past {limit:,} bytes while being read")
    return data


def read_json_file(path, error: type[Exception] = InputFileError, what: str = "JSON file",
                   limit: int = JSON_LIMIT_BYTES):
    """Parse a JSON file that is a regular file of at most `limit` bytes; `error` names the problem."""
    path = Path(path)
    data = read_bytes_limited(path, limit, error, what)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not valid JSON, not even UTF-8 text ({problem})") from None
    except json.JSONDecodeError as problem:
        raise error(f"{path}: not valid JSON, a corrupt {what} ({problem})") from None
    except RecursionError:
        raise error(f"{path}: the {what} nests too deeply to parse as JSON") from None


__all__ = ["InputFileError", "JSON_LIMIT_BYTES", "require_regular_file", "open_regular_file", "read_bytes_limited",
           "read_json_file", "file_kind"]
