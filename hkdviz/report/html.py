"""A standalone HTML report: plotly figures with plotly.js inlined once in the page head (the same
as `include_plotlyjs=True`, without repeating 4.6 MB per figure), images as base64 PNG. The file
opens offline: it references no external script, stylesheet, font or image."""
from __future__ import annotations

import base64
import datetime
import html
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_text

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True,
                 "toImageButtonOptions": {"format": "png", "scale": 2}}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 0 24px 48px; color: #222; line-height: 1.45; }
h1 { margin-top: 28px; } h2 { margin-top: 42px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.banner { background: #fde8e3; border: 3px solid #D55E00; color: #7a2400; padding: 14px 18px; font-weight: 600;
          font-size: 1.05em; margin: 18px 0; }
.banner strong { font-size: 1.25em; display: block; margin-bottom: 4px; }
.meta { color: #555; font-size: 0.92em; } .meta code { font-size: 0.95em; }
.caption { color: #444; font-size: 0.93em; margin: 4px 0 18px; }
.paperfig { max-width: 100%; border: 1px solid #eee; }
.skipped { color: #8a5a00; font-style: italic; }
table.files { border-collapse: collapse; font-size: 0.9em; } table.files td { padding: 2px 12px 2px 0; }
nav a { margin-right: 12px; }
"""


@dataclass
class Item:
    """One thing in a section: a plotly figure, a PNG file, or a note."""
    kind: str                   # "plotly" | "png" | "note"
    content: object             # go.Figure | Path | str
    caption: str = ""


@dataclass
class Section:
    title: str
    anchor: str
    items: list = field(default_factory=list)
    intro: str = ""


def png_tag(path, alt: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img class="paperfig" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def plotly_div(figure) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG)


def render(title: str, sections: list[Section], banner: str | None = None, meta: list[str] | None = None,
           files: list[tuple[str, str]] | None = None) -> str:
    from plotly.offline import get_plotlyjs
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style>",
             f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if banner:
        parts.append(f'<div class="banner" id="untrained-banner"><strong>&#9888; {html.escape(banner.split(":")[0])}'
                     f'</strong>{html.escape(banner.split(":", 1)[1] if ":" in banner else banner)}</div>')
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    parts.append('<div class="meta">' + "<br>".join(html.escape(line) for line in (meta or []) + [f"created {created}"])
                 + "</div>")
    parts.append("<nav>" + "".join(f'<a href="#{section.anchor}">{html.escape(section.title)}</a>'
                                   for section in sections) + "</nav>")
    for section in sections:
        parts.append(f'<h2 id="{section.anchor}">{html.escape(section.title)}</h2>')
        if section.intro:
            parts.append(f"<p>{html.escape(section.intro)}</p>")
        if banner:
            parts.append('<p class="skipped">Untrained model: read these as a demonstration of the pipeline only.</p>')
        for item in section.items:
            if item.kind == "plotly":
                parts.append(plotly_div(item.content))
            elif item.kind == "png":
                parts.append(png_tag(item.content, item.caption))
            else:
                parts.append(f'<p class="skipped">{html.escape(str(item.content))}</p>')
            if item.caption:
                parts.append(f'<p class="caption">{html.escape(item.caption)}</p>')
    if files:
        parts.append('<h2 id="files">Files</h2><table class="files">')
        parts += [f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(what)}</td></tr>" for name, what in files]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path, title: str, sections: list[Section], banner: str | None = None, meta=None, files=None) -> Path:
    path = Path(path)
    write_text(path, render(title, sections, banner, meta, files))
    return path


__all__ = ["Item", "Section", "render", "write_report", "png_tag", "plotly_div", "PLOTLY_CONFIG"]
