"""Charts as inline SVG, drawn on the server: no script, no CDN, nothing fetched.

Every text that goes into the markup passes `html.escape`; the result is handed to the templates
as `Markup`, so they do not escape it a second time.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

BAR_HEIGHT, GAP, LABEL_WIDTH, BAR_WIDTH, COUNT_WIDTH = 22, 8, 120, 360, 90
#: Labels (rule names, survey choices) are shown whole up to this many characters; the label
#: column widens to fit them (CHAR_WIDTH px a character at the chart's 13 px font, generously).
LABEL_CHARS, CHAR_WIDTH = 48, 8


def _fit(label: str, size: int = LABEL_CHARS) -> str:
    return label if len(label) <= size else label[: size - 1] + "…"


def label_width(labels: list[str]) -> int:
    """The label column: LABEL_WIDTH, or wider so the longest shown label fits whole."""
    longest = max((len(_fit(label)) for label in labels), default=0)
    return max(LABEL_WIDTH, longest * CHAR_WIDTH + 2 * GAP)


def bar_chart(title: str, bars: list[tuple[str, int, bool]]) -> Markup:
    """A horizontal bar per (label, count, declared): one `rect.bar` each, zero-width for zero,
    with the count beside it; undeclared choices get the class `undeclared`."""
    total = sum(n for _, n, _ in bars)
    top = max((n for _, n, _ in bars), default=0)
    height = max(1, len(bars)) * (BAR_HEIGHT + GAP) + GAP
    labels = label_width([label for label, _, _ in bars])
    width = labels + BAR_WIDTH + COUNT_WIDTH
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    if not bars:
        out.append(f'<text class="empty" x="{GAP}" y="{BAR_HEIGHT}">no choices declared, no votes yet</text>')
    for i, (label, n, declared) in enumerate(bars):
        y = GAP + i * (BAR_HEIGHT + GAP)
        w = round(BAR_WIDTH * n / top, 1) if top else 0
        pct = f"{100 * n / total:.1f}%" if total else "0.0%"
        cls = "bar" if declared else "bar undeclared"
        mid = y + BAR_HEIGHT * 0.7
        whole = f"<title>{escape(label)}</title>" if _fit(label) != label else ""  # a cut label
        out.append(
            f'<g class="row">{whole}<text class="label" x="{labels - GAP}" y="{mid:g}" '
            f'text-anchor="end">{escape(_fit(label))}</text>'
            f'<rect class="{cls}" x="{labels}" y="{y}" width="{w:g}" height="{BAR_HEIGHT}" '
            f'data-choice="{escape(label)}" data-votes="{n}"><title>{escape(label)}: {n}</title></rect>'
            f'<text class="count" x="{labels + w + GAP:g}" y="{mid:g}">{n} ({pct})</text></g>'
        )
    out.append("</svg>")
    return Markup("".join(out))
