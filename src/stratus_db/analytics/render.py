"""The report as a file or a page: JSON, CSV (one figure a row), and HTML with its charts drawn on the server as SVG,
so that the page needs nothing from the internet (templates/dashboard.html, Jinja2, escaped by default)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from stratus_db.analytics.schemas import MetricsReport

_templates = Environment(
    loader=PackageLoader("stratus_db.analytics", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

CHART_WIDTH, CHART_HEIGHT = 640, 180
"""The charts' drawing box; the SVG scales to its container (viewBox), a laptop's or a phone's."""


def to_json(report: MetricsReport) -> str:
    return report.model_dump_json(indent=2) + "\n"


# -- CSV ------------------------------------------------------------------------------------------------------------

_ITEM_KEYS = ("day", "agent_name", "role", "week", "month", "operation")
"""The field that names an item of a list (a day, an agent…): it becomes part of the figure's name."""


def _flatten(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [
            pair
            for key, item in value.items()
            for pair in _flatten(item, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(value, list):
        pairs = []
        for position, item in enumerate(value):
            name = next((item[key] for key in _ITEM_KEYS if isinstance(item, dict) and key in item), None)
            label = position + 1 if name is None else name
            pairs += _flatten(
                {k: v for k, v in item.items() if k not in _ITEM_KEYS} if isinstance(item, dict) else item,
                f"{path}[{label}]",
            )
        return pairs
    return [(path, value)]


def to_csv(report: MetricsReport) -> str:
    """`figure,value` rows: `days[2026-11-10].active_users,2`, `per_agent[briefing].tokens,500`, …; an empty value
    for a figure there is nothing to compute from."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["figure", "value"])
    for path, value in _flatten(report.model_dump(mode="json"), ""):
        writer.writerow([path, _cell(value)])
    return out.getvalue()


def _cell(value: Any) -> Any:
    """A value as a spreadsheet will read it: text that starts like a formula (=, +, -, @) is quoted as text."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


# -- HTML -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    key: str
    value: float
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Chart:
    """A chart's geometry in its CHART_WIDTH × CHART_HEIGHT box: bars, or a line through points (the bars' tops)."""

    name: str
    title: str
    bars: list[Bar]
    top: float
    """The value of the box's top edge."""
    line: str
    """An SVG path through the points, for a time series."""


def chart(name: str, title: str, points: list[tuple[str, float]]) -> Chart:
    top = max((value for _key, value in points), default=0) or 1
    step = CHART_WIDTH / max(len(points), 1)
    bars = [
        Bar(
            key=key,
            value=value,
            x=index * step + step * 0.1,
            y=CHART_HEIGHT - value / top * CHART_HEIGHT,
            width=step * 0.8,
            height=value / top * CHART_HEIGHT,
        )
        for index, (key, value) in enumerate(points)
    ]
    line = " ".join(
        f"{'M' if index == 0 else 'L'}{bar.x + bar.width / 2:.1f},{bar.y:.1f}"
        for index, bar in enumerate(bars)
    )
    return Chart(name=name, title=title, bars=bars, top=top, line=line)


def heat(share: float | None) -> str:
    """A cohort cell's colour: the darker, the more of the cohort came back; grey when the week is not over."""
    if share is None:
        return "#eeeeee"
    return f"hsl(210, 70%, {95 - share * 60:.0f}%)"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}" if value >= 0.1 or value == 0 else f"{value:.1%}"


def number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.{digits}f}"


def to_html(report: MetricsReport, *, served: bool = False) -> str:
    """The dashboard page. Served, it has the date-range and agent filters (a GET form to /dashboard); as a file
    (`stratus-db report --format html`) it is the same page without them."""
    charts = {
        "dau": chart(
            "dau", "Daily active users", [(day.day.isoformat(), day.active_users) for day in report.days]
        ),
        "messages": chart(
            "messages", "Messages per day", [(day.day.isoformat(), day.messages) for day in report.days]
        ),
        "conversations": chart(
            "conversations",
            "Conversations per day",
            [(day.day.isoformat(), day.conversations) for day in report.days],
        ),
        "responses": chart(
            "responses",
            "Responses per agent",
            [(agent.agent_name, agent.responses) for agent in report.per_agent],
        ),
        "latency": chart(
            "latency",
            "Response time p95 per agent (s)",
            [(agent.agent_name, agent.response_time_p95 or 0.0) for agent in report.per_agent],
        ),
    }
    return _templates.get_template("dashboard.html").render(
        report=report,
        charts=charts,
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        served=served,
        heat=heat,
        percent=percent,
        number=number,
        weeks=range(1, 9),
    )
