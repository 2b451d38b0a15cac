"""Atomic output files: a write either leaves the new file complete or the old file untouched.

Every file hkdviz writes goes through here. The data goes to a temporary file in the SAME directory
(a rename is atomic only within one file system), which is flushed and fsync'd, renamed over the
destination with os.replace, and then the directory is fsync'd so the rename itself survives a crash.
On any failure (full disk, read-only folder, an exception inside the writer, Ctrl-C) the temporary
file is removed and the destination keeps its previous bytes.

    write_bytes(path, data)              write_text(path, text)          write_json(path, value)
    with temporary_path(path) as temp:   # for writers that want a path (savefig, to_netcdf, save_file)
        figure.savefig(temp, format="png")

tempfile.mkstemp creates files with mode 0600; the final file instead gets the mode a plain open()
would give it (0o666 minus the user's umask), so outputs stay readable by whoever could read them before.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

TEMPORARY_SUFFIX = ".tmp"


def current_umask() -> int:
    # Linux reports it in /proc; elsewhere os.umask can only be read by setting it, and setting it back
    # at once leaves a tiny window in which another thread's new file would get 0o022.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode open(path, "w") would give a new file: 0o666 without the umask bits."""
    return 0o666 & ~current_umask()


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems (e.g. certain network mounts) refuse fsync on directories
    finally:
        os.close(descriptor)


def _temporary_name(path: Path) -> tuple[int, Path]:
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    return descriptor, Path(name)


@contextlib.contextmanager
def temporary_path(path, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block finishes without an exception, the file
    written there is fsync'd and renamed onto `path`. On an exception the temporary file is removed
    and `path` is untouched. The writer may replace the temporary file (some libraries do)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a file name")
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = _temporary_name(path)
    os.close(descriptor)
    try:
        yield temporary
        _finish(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _finish(temporary: Path, path: Path) -> None:
    """fsync the finished temporary file, give it the umask mode, rename it, fsync the directory."""
    descriptor = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.chmod(temporary, default_file_mode())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def replace_directory(source, target) -> Path:
    """Copy the directory `source` to `target`, replacing what `target` held, without ever leaving
    neither: the copy is made beside `target` under a temporary name, then the old `target` is
    renamed away, the copy renamed into place, and the old one deleted. A failed copy (full disk)
    removes the partial copy and leaves `target` as it was."""
    import shutil

    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX, dir=target.parent))
    previous = None
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        if target.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, previous)  # onto the empty placeholder directory
        os.replace(staging, target)
    except BaseException:
        if previous is not None and not target.exists():
            os.replace(previous, target)  # put the old one back
            previous = None
        shutil.rmtree(staging, ignore_errors=True)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        raise
    fsync_directory(target.parent)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return target


def write_bytes(path, data: bytes, make_parents: bool = True) -> Path:
    """Write `data` to `path` atomically (see the module docstring). Returns the path."""
    path = Path(path)
    with temporary_path(path, make_parents=make_parents) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
    return path


def write_text(path, text: str, encoding: str = "utf-8", make_parents: bool = True) -> Path:
    return write_bytes(path, text.encode(encoding), make_parents=make_parents)


def write_json(path, value, indent: int | None = 2, sort_keys: bool = False, default=None,
               make_parents: bool = True) -> Path:
    """json.dumps(value) plus a final newline, written atomically. The value is encoded before the
    file is touched, so an unserialisable value leaves no trace at all."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    return write_text(path, text, make_parents=make_parents)


__all__ = ["temporary_path", "write_bytes", "write_text", "write_json", "replace_directory", "default_file_mode",
           "fsync_directory"]
