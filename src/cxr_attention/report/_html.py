"""A self-contained HTML page skeleton for the pages the Snakemake report embeds.

The report shows each page in an iframe from a ``data:`` URI, so a page must carry everything
inline: one small stylesheet, no scripts, no fonts or images from elsewhere.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

__all__ = ["as_float", "format_number", "html_page", "html_table"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       font-size: 14px; line-height: 1.45; color: #1f2328; margin: 1.5em auto; max-width: 64em;
       padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #d0d7de; }
p.lead { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.met { color: #1a7f37; font-weight: 600; }
.unmet { color: #cf222e; font-weight: 600; }
.na { color: #57606a; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 12px; }
p.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.5em 0.8em; }
"""


def html_page(title: str, body: str, *, lead: str | None = None) -> str:
    """A complete HTML5 document with ``title`` as heading, an optional lead line and ``body``."""
    lead_html = f'<p class="lead">{html.escape(lead)}</p>\n' if lead else ""
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{lead_html}{body}</body>\n</html>\n"
    )


def html_table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Sequence[bool] | None = None,
    cell_classes: Iterable[Sequence[str | None]] | None = None,
) -> str:
    """An HTML table; every cell is escaped text (numbers formatted with :func:`format_number`).

    ``numeric`` marks right-aligned columns; ``cell_classes`` gives an optional CSS class per cell.
    """
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    rows = [list(r) for r in rows]
    classes = [list(c) for c in cell_classes] if cell_classes is not None else None
    lines = ["<table>", "<thead><tr>"]
    lines += [f"<th>{html.escape(str(h))}</th>" for h in header]
    lines.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(row):
            names = ["num"] if numeric[j] else []
            if classes is not None and classes[i][j]:
                names.append(classes[i][j])
            attribute = f' class="{" ".join(names)}"' if names else ""
            text = format_number(value) if isinstance(value, float) else str(value)
            cells.append(f"<td{attribute}>{html.escape(text)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines) + "\n"


def format_number(value: object, digits: int = 4) -> str:
    """Numbers with ``digits`` significant digits; blank for missing values."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return ""
    return f"{number:.{digits}g}"


def as_float(value: object) -> float:
    """``value`` as a float; NaN when it is missing or not a number (blank table cells, None)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
