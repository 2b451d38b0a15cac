"""Strip outputs, execution counts and widget state from notebooks (what git holds carries none).

    python scripts/strip_notebooks.py                   # every notebooks/*.ipynb, in place
    python scripts/strip_notebooks.py a.ipynb b.ipynb   # the given files
    python scripts/strip_notebooks.py --check           # exit 1 and list the files that carry outputs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# Notebook-level metadata that only records one run (widget state, timings), never the content.
VOLATILE_METADATA = ("widgets", "execution")


def strip(notebook: nbformat.NotebookNode) -> bool:
    """Strip `notebook` in place; True when anything changed."""
    changed = False
    for key in VOLATILE_METADATA:
        if key in notebook.metadata:
            del notebook.metadata[key]
            changed = True
    for cell in notebook.cells:
        for key in VOLATILE_METADATA:
            if key in cell.get("metadata", {}):
                del cell.metadata[key]
                changed = True
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            cell.outputs = []
            changed = True
        if cell.get("execution_count") is not None:
            cell.execution_count = None
            changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook carries outputs")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    dirty = []
    for path in paths:
        if not path.is_file():
            parser.error(f"{path}: no such notebook file")
        notebook = nbformat.read(path, as_version=4)
        if strip(notebook):
            dirty.append(path)
            if not args.check:
                nbformat.write(notebook, path)
    verb = "carry outputs" if args.check else "stripped"
    for path in dirty:
        print(f"{verb}: {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
