"""The renderer every report shares: document blocks, their markdown and self-contained HTML, number formats,
figures on a headless canvas, and the one function that writes a report folder.

A report is a list of blocks built from stored numbers alone, so the same results.json always renders to the
same bytes; the report modules (experiments, committee, selection, deploy, curve, arms) only decide what the
blocks say.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tinylm.analysis.records import task_key  # re-exported: every report orders tasks by it
from tinylm.analysis.stats import MeanCI

Row = TypeVar("Row", bound=Mapping[str, Any])

# ---------------------------------------------------------------- document blocks


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]

    def numeric(self) -> list[bool]:
        """Columns holding only numbers (or '–'), which both renderers right-align."""
        return [all(re.match(r"[+\-–]?\d|–$", row[i]) for row in self.rows) for i in range(len(self.header))]


@dataclass(frozen=True)
class Image:
    filename: str
    alt: str


Block = Heading | Para | Bullets | Table | Image


def to_markdown(blocks: Sequence[Block]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out: list[str] = []
    for block in blocks:
        match block:
            case Heading(text, level):
                out.append(f"{'#' * level} {text}")
            case Para(text):
                out.append(text)
            case Bullets(items):
                out.append("\n".join(f"- {item}" for item in items))
            case Table(header, rows):
                align = ["---:" if numeric else "---" for numeric in block.numeric()]
                lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
                lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
                out.append("\n".join(lines))
            case Image(filename, alt):
                out.append(f"![{alt}]({filename})")
    return "\n\n".join(out) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
        "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem}"
        "td.num{text-align:right}th{background:#f3f3f3}img{max-width:100%}")


def to_html(blocks: Sequence[Block], image_dir: Path, title: str = "tinylm report") -> str:
    """A self-contained page: inline CSS, images embedded as base64 data URIs (no external references)."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{esc(title)}</title>",
           f"<style>{_CSS}</style>", "</head>", "<body>"]
    for block in blocks:
        match block:
            case Heading(text, level):
                out.append(f"<h{level}>{esc(text)}</h{level}>")
            case Para(text):
                out.append(f"<p>{esc(text)}</p>")
            case Bullets(items):
                out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>")
            case Table(header, rows):
                head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
                tds = ['<td class="num">' if numeric else "<td>" for numeric in block.numeric()]
                body = "".join("<tr>" + "".join(f"{td}{esc(v)}</td>" for td, v in zip(tds, row, strict=True)) + "</tr>"
                               for row in rows)
                out.append(f"<table><thead>{head}</thead><tbody>{body}</tbody></table>")
            case Image(filename, alt):
                data = base64.b64encode((image_dir / filename).read_bytes()).decode("ascii")
                out.append(f'<p><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></p>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the report folder

Plot = Callable[[Path], Path | None]  # draws into the given path; None when there is nothing to draw


def write_report(out_dir: str | Path, title: str, build: Callable[[Mapping[str, str]], Sequence[Block]],
                 plots: Mapping[str, Plot] | None = None) -> list[Path]:
    """Create `out_dir`, draw each plot into it under its name, then write report.md and report.html.

    `build` gets the plots that were drawn ({file name: file name}, the form Image blocks refer to), so a report
    leaves out the image of a plot that had nothing to show. Returns report.md, report.html, then the plots.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    drawn: list[Path] = []
    for name, plot in (plots or {}).items():
        path = plot(out / name)
        if path is not None:
            figures[name] = name
            drawn.append(path)
    blocks = build(figures)
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, out, title=title), encoding="utf-8")
    return [md, page, *drawn]


# ---------------------------------------------------------------- numbers as text


def seeds_text(n: int) -> str:
    """'1 seed', '3 seeds'."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def pct(fraction: float, digits: int = 1, signed: bool = False) -> str:
    """A fraction as a percentage without the sign: '83.1'; signed for differences in points: '+41.0'."""
    return f"{100 * fraction:{'+' if signed else ''}.{digits}f}"


def fmt_mean_ci(m: MeanCI, signed: bool = False, unit: str = "", count: bool = True) -> str:
    """A fraction's mean as percent with its interval's half-width: '83.1 ± 1.2 (3 seeds)', or '83.1 (1 seed)'
    where no interval exists; count=False leaves out the '(n seeds)' for tables that give n a column."""
    value = pct(m.mean, signed=signed)
    n = f" ({seeds_text(m.n)})" if count else ""
    if not m.has_ci:
        return f"{value}{unit}{n}"
    return f"{value} ± {pct(m.half_width)}{unit}{n}"


def by_task(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows grouped by their "task", tasks in the paper's order, rows in their given order within a task."""
    grouped: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: task_key(r["task"])):
        grouped.setdefault(r["task"], []).append(r)
    return grouped


# ---------------------------------------------------------------- figures (matplotlib's Agg canvas, no pyplot state)


def new_canvas(figsize: tuple[float, float] = (6.4, 4.2)) -> Figure:
    """An empty figure on its own Agg canvas: works headless and leaves the global backend alone."""
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def new_figure(figsize: tuple[float, float] = (6.4, 4.2)) -> tuple[Figure, Any]:
    """A figure with one set of axes."""
    fig = new_canvas(figsize)
    return fig, fig.add_subplot()


def err_points(m: MeanCI) -> float:
    """An error bar's half-length in points: the interval's half-width, 0 where one seed gives no interval."""
    return 100 * m.half_width if m.has_ci else 0.0
