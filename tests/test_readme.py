"""README.md and docs/ cannot drift from the code: the tour runs, the links resolve, the page stays short.

The tour's python blocks run in order in one namespace, as a reader would paste them, against the
shipped default checkpoint. Links are checked as GitHub renders them: a relative path must name a
file of the repository, and a `#fragment` must name a heading of the file it points into.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKDOWN_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAXIMUM_README_LINES = 260

CODE_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)


def code_blocks(text: str, language: str) -> list[str]:
    return [body for tag, body in CODE_BLOCK.findall(text) if tag == language]


def without_code(text: str) -> str:
    """The text with fenced code blocks blanked: '#' lines inside them are comments, not headings."""
    return CODE_BLOCK.sub(lambda match: "\n" * match.group(0).count("\n"), text)


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    kept = "".join(char for char in text
                   if char in " -_" or unicodedata.category(char)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for _, heading in HEADING.findall(without_code(path.read_text())):
        anchor = heading_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        result.add(anchor if count == 0 else f"{anchor}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    targets = LINK.findall(without_code(path.read_text()))
    return [target for target in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # skip http:, mailto:


# -- the helpers themselves, on known answers ----------------------------------------------------------
def test_heading_anchor_follows_github():
    assert heading_anchor("A tour: encode, evolve, edit, decode") == "a-tour-encode-evolve-edit-decode"
    assert heading_anchor("The earlier default: `--preset default-cpu` on 2 CPU cores") == \
        "the-earlier-default---preset-default-cpu-on-2-cpu-cores"
    assert heading_anchor("The previous HKD: 12,288 trajectories, 900 steps (a tie on KID)") == \
        "the-previous-hkd-12288-trajectories-900-steps-a-tie-on-kid"


def test_link_and_block_extraction():
    text = "See [a](docs/a.md#x), ![p](img.png) and [web](https://example.org).\n```python\nx = 1\n```\n" \
           "```bash\nls\n```\n```python\n# [not](a-link.md)\ny = 2\n```\n"
    assert code_blocks(text, "python") == ["x = 1\n", "# [not](a-link.md)\ny = 2\n"]
    assert LINK.findall(without_code(text)) == ["docs/a.md#x", "img.png", "https://example.org"]


# -- README.md ---------------------------------------------------------------------------------------
def test_readme_is_a_first_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAXIMUM_README_LINES, f"README.md has {len(lines)} lines (at most {MAXIMUM_README_LINES})"


def test_readme_quickstart_commands():
    # The two commands users (and CI) run from a fresh clone; changing them is a user-visible change.
    bash = "\n".join(code_blocks(README.read_text(), "bash"))
    assert "bash scripts/setup.sh && .venv/bin/hkdviz demo\nbash scripts/test.sh\n" in bash


def test_readme_tour_runs(tmp_path, monkeypatch):
    if not (ROOT / "checkpoints" / "default" / "hkd" / "meta.json").exists():
        pytest.skip("no shipped default checkpoint in this checkout")
    blocks = code_blocks(README.read_text(), "python")
    assert blocks, "README.md has no python code blocks"
    monkeypatch.chdir(tmp_path)  # the tour writes spectrum.nc into the working directory
    namespace: dict = {"__name__": "readme_tour"}
    for number, block in enumerate(blocks, start=1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001 - name the block that failed, keep the cause
            raise AssertionError(f"README.md python block {number} failed: {error!r}\n{block}") from error
    assert (tmp_path / "spectrum.nc").exists()
    import torch
    assert isinstance(namespace["edited"], torch.Tensor) and namespace["edited"].shape == (4, 3, 32, 32)
    assert not torch.equal(namespace["edited"], namespace["image"])  # the edit did something


def test_readme_cli_flags_exist(capsys):
    # Every `--flag` the command table shows for `hkdviz COMMAND` is one that COMMAND --help lists.
    from hkdviz.cli import main
    rows = re.findall(r"^\| `hkdviz (\w+)([^`]*)` \|", README.read_text(), re.MULTILINE)
    assert {command for command, _ in rows} >= {"demo", "info", "spectrum", "trajectory", "figures", "eval", "train"}
    for command, usage in rows:
        argv = [command, "all"] if command == "train" else [command]
        try:  # argparse exits after --help; some dispatched commands catch that and return its code
            code = main([*argv, "--help"])
        except SystemExit as exit_info:
            code = exit_info.code
        assert code in (0, None), (command, code)
        help_text = capsys.readouterr().out
        flags = re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", usage.replace("\\|", "|"))
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), \
                f"README's `hkdviz {command}` row names {flag}, which `hkdviz {command} --help` does not list"


# -- every markdown file -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            problems.append(f"{target}: no such file {destination}")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            problems.append(f"{target}: no heading with anchor #{fragment} in {destination.relative_to(ROOT)}")
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_docs_stand_alone(path):
    # The repository must stand alone: no pointers into the project's shared folders or other checkouts.
    text = path.read_text()
    for outside in ("../shared", "hkd-spec", "design.md", "../.library"):
        assert outside not in text, f"{path.relative_to(ROOT)} refers to {outside!r}, outside the repository"


def test_command_table_rows_have_two_cells():
    # The command table escapes '|' inside code as '\\|' (GitHub tables); the flag check above relies on
    # that, so every row must split into exactly two cells.
    for line in README.read_text().splitlines():
        if line.startswith("| `hkdviz "):
            cells = [cell for cell in re.split(r"(?<!\\)\|", line) if cell.strip()]
            assert len(cells) == 2, line
