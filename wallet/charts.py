"""Server-rendered SVG charts for the wallet page: no JavaScript and no third-party assets.

Geometry is computed with integers only (bar heights are floor(value * height / max)), so
the same data always draws the same picture and nothing depends on float rounding."""

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from wallet.selectors import SpendingSeries

# Colour-blind-friendly palette (Okabe-Ito); groups past its length share the last colour.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999")
MAX_GROUPS = len(PALETTE) - 1

WIDTH = 720
PLOT_TOP = 16
PLOT_HEIGHT = 200
PLOT_LEFT = 72
PLOT_RIGHT = 12
AXIS_HEIGHT = 28
LEGEND_ROW = 20


def _grouped(series: SpendingSeries) -> list[tuple[str, list[int]]]:
    """At most MAX_GROUPS named groups, the rest summed into "Other"."""
    named = [(label, series.values[label]) for label in series.groups[:MAX_GROUPS]]
    rest = series.groups[MAX_GROUPS:]
    if rest:
        other = [sum(series.values[label][i] for label in rest) for i in range(len(series.periods))]
        named.append((_("Other"), other))
    return named


def spending_chart_svg(*, series: SpendingSeries, title: str, description: str) -> SafeString:
    """A stacked bar chart of ``series`` as an accessible inline SVG (title, desc, labelled
    bars with their values, legend)."""
    groups = _grouped(series)
    count = len(series.periods)
    plot_width = WIDTH - PLOT_LEFT - PLOT_RIGHT
    slot = plot_width // max(count, 1)
    bar_width = max(1, slot * 3 // 4)
    peak = max(series.totals, default=0)
    legend_rows = (len(groups) + 3) // 4
    height = PLOT_TOP + PLOT_HEIGHT + AXIS_HEIGHT + legend_rows * LEGEND_ROW + 8
    baseline = PLOT_TOP + PLOT_HEIGHT

    parts: list[SafeString] = []
    # Axis: zero and the peak value.
    parts.append(
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#888" />',
            PLOT_LEFT,
            baseline,
            WIDTH - PLOT_RIGHT,
            baseline,
        )
    )
    parts.append(
        format_html(
            '<text x="{}" y="{}" text-anchor="end" font-size="11">0</text>',
            PLOT_LEFT - 6,
            baseline,
        )
    )
    if peak:
        parts.append(
            format_html(
                '<text x="{}" y="{}" text-anchor="end" font-size="11" class="chart-peak">{}</text>',
                PLOT_LEFT - 6,
                PLOT_TOP + 10,
                peak,
            )
        )
    label_every = max(1, -(-count // 8))
    for index, start in enumerate(series.periods):
        x = PLOT_LEFT + index * slot + (slot - bar_width) // 2
        if index % label_every == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text>',
                    x + bar_width // 2,
                    baseline + 16,
                    start.strftime("%m-%d"),
                )
            )
        if not series.totals[index]:
            continue
        top_of_stack = 0
        bars: list[SafeString] = []
        for colour_index, (label, values) in enumerate(groups):
            value = values[index]
            if not value:
                continue
            # Integer geometry: the stack's cumulative height, so segments never drift apart.
            below = top_of_stack
            top_of_stack += value
            y_low = baseline - below * PLOT_HEIGHT // peak
            y_high = baseline - top_of_stack * PLOT_HEIGHT // peak
            bars.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" data-group="{}" '
                    'data-period="{}" data-value="{}"><title>{}</title></rect>',
                    x,
                    y_high,
                    bar_width,
                    max(1, y_low - y_high),
                    PALETTE[min(colour_index, len(PALETTE) - 1)],
                    label,
                    start.isoformat(),
                    value,
                    _("%(group)s, %(period)s: %(value)s tokens")
                    % {"group": label, "period": start.isoformat(), "value": value},
                )
            )
        parts.append(
            format_html(
                '<g class="chart-bar" data-period="{}" data-total="{}">{}</g>',
                start.isoformat(),
                series.totals[index],
                SafeString("".join(bars)),
            )
        )
    legend_top = baseline + AXIS_HEIGHT
    legend = format_html_join(
        "",
        '<g class="chart-legend-item" transform="translate({},{})"><rect width="12" height="12" '
        'fill="{}" /><text x="18" y="11" font-size="12">{}</text></g>',
        (
            (
                PLOT_LEFT + (i % 4) * (plot_width // 4),
                legend_top + (i // 4) * LEGEND_ROW,
                PALETTE[min(i, len(PALETTE) - 1)],
                label,
            )
            for i, (label, _values) in enumerate(groups)
        ),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="spending-chart" role="img" '
        'viewBox="0 0 {} {}" width="100%" aria-labelledby="chart-title chart-desc">'
        '<title id="chart-title">{}</title><desc id="chart-desc">{}</desc>{}'
        '<g class="chart-legend">{}</g></svg>',
        WIDTH,
        height,
        title,
        description,
        SafeString("".join(parts)),
        legend,
    )
