"""Self-contained HTML pages (reports of an experiment or a study): one file, images inline
as data URIs, no script and no outside resource, so a page opens anywhere (a laptop, an S3
browser, a CI artifact) exactly as it was written.

Numbers in tables carry `data-entry` and `data-key` attributes naming the entry and the
summary key they show, so a page can be checked against the JSON it was rendered from.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline td { color: #8a1c1c; } tr.partial td { color: #777; font-style: italic; }
.note { color: #555; font-size: 0.9em; } figure { display: inline-block; margin: 0.6em; }
figcaption { font-size: 0.85em; color: #555; text-align: center; }
img { max-width: 100%; border: 1px solid #eee; }
"""


@dataclass
class Cell:
    """One table cell: its text, and (for a number) which entry and summary key it shows."""

    text: str
    entry: str | None = None
    key: str | None = None

    def render(self) -> str:
        if self.key is None:
            return f"<td>{html.escape(self.text)}</td>"
        return (
            f'<td class="num" data-entry="{html.escape(self.entry or "")}" '
            f'data-key="{html.escape(self.key)}">{html.escape(self.text)}</td>'
        )


def number(value, entry: str, key: str, digits: int = 3) -> Cell:
    """A numeric cell (`digits` decimals; '-' when there is no value)."""
    text = "-" if value is None else f"{value:.{digits}f}"
    return Cell(text, entry, key)


def table(headers: list[str], rows: list[list[Cell | str]], row_classes=None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(c.render() if isinstance(c, Cell) else Cell(str(c)).render() for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode()
    alt = html.escape(caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


def paragraph(text: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<p{c}>{html.escape(text)}</p>"


def items(texts: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in texts) + "</ul>"


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def page(title: str, *sections: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )
