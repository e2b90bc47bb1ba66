"""Templates and the helpers they use: money, times, ages, and SVG chart geometry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from billops.domain.billing import ZERO_DECIMAL
from billops.governance.control import controls
from billops.runtime import get_runtime

TEMPLATES = Path(__file__).parent / "templates"


def money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "—"
    cur = (currency or "").lower()
    if cur in ZERO_DECIMAL:
        return f"{amount:,} {cur.upper()}"
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(int(amount)), 100)
    return f"{sign}{major:,}.{minor:02d} {cur.upper()}"


def when(value: str | datetime | None) -> str:
    """'2026-11-22 05:03 UTC' from an ISO string or an aware datetime."""
    if value is None or value == "":
        return "—"
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if abs(s) < 60:
        return f"{s} s"
    if abs(s) < 3600:
        return f"{s // 60} min"
    if abs(s) < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def age(value: str | datetime | None) -> str:
    if not value:
        return "—"
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return duration((datetime.now(UTC) - dt).total_seconds())


def until(value: str | datetime | None) -> str:
    if not value:
        return "—"
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    left = (dt - datetime.now(UTC)).total_seconds()
    return f"in {duration(left)}" if left > 0 else f"{duration(-left)} ago"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def daily_bars(
    daily: list[dict[str, Any]], currency: str, width: int = 900, height: int = 220
) -> dict[str, Any]:
    """Geometry for the failed-vs-recovered bar chart of one currency (amounts in minor units)."""
    n = max(len(daily), 1)
    left, bottom, top = 60, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max([d["failed"].get(currency, 0) for d in daily] + [1])
    slot = plot_w / n
    bar = max(slot * 0.38, 1.0)
    bars = []
    for i, d in enumerate(daily):
        failed, rec = d["failed"].get(currency, 0), d["recovered"].get(currency, 0)
        x = left + i * slot + slot * 0.1
        hf, hr = plot_h * failed / peak, plot_h * rec / peak
        bars.append(
            {
                "day": d["day"],
                "label": d["day"][5:] if (n <= 16 or i % max(n // 10, 1) == 0) else "",
                "x_failed": round(x, 1),
                "x_recovered": round(x + bar, 1),
                "w": round(bar, 1),
                "y_failed": round(top + plot_h - hf, 1),
                "h_failed": round(hf, 1),
                "y_recovered": round(top + plot_h - hr, 1),
                "h_recovered": round(hr, 1),
                "failed": money(failed, currency),
                "recovered": money(rec, currency),
                "x_label": round(x + bar, 1),
            }
        )
    ticks = [
        {"y": round(top + plot_h - plot_h * f, 1), "label": money(int(peak * f), currency)}
        for f in (0, 0.5, 1)
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "base": top + plot_h,
        "bars": bars,
        "ticks": ticks,
    }


def stacked_rows(by_route_mode: dict[str, dict[str, int]], width: int = 900) -> dict[str, Any]:
    """Horizontal stacked bars: one row per route, a segment per mode."""
    modes = ["auto", "assist", "shadow"]
    modes += sorted({m for v in by_route_mode.values() for m in v} - set(modes))
    label_w, row_h = 150, 28
    peak = max([sum(v.values()) for v in by_route_mode.values()] + [1])
    plot_w = width - label_w - 60
    rows = []
    for i, (route, counts) in enumerate(sorted(by_route_mode.items())):
        x, segs = float(label_w), []
        for m in modes:
            n = counts.get(m, 0)
            if n:
                w = plot_w * n / peak
                segs.append({"mode": m, "n": n, "x": round(x, 1), "w": round(w, 1)})
                x += w
        rows.append(
            {"route": route, "y": 10 + i * row_h, "segs": segs, "total": sum(counts.values()), "end": x}
        )
    return {
        "width": width,
        "height": 20 + len(rows) * row_h + 24,
        "rows": rows,
        "modes": modes,
        "row_h": row_h,
    }


_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
_env.filters.update(money=money, when=when, age=age, until=until, pct=pct, duration=duration)
_env.globals.update(daily_bars=daily_bars, stacked_rows=stacked_rows)


def render(request: Request, name: str, *, status: int = 200, **ctx: Any) -> HTMLResponse:
    viewer = getattr(request.state, "viewer", None)
    banner = None
    try:
        with get_runtime().db.reader() as s:
            banner = controls(s).shadow_reason
    except RuntimeError:
        banner = None
    html = _env.get_template(name).render(
        request=request, viewer=viewer, banner=banner, path=request.url.path, **ctx
    )
    return HTMLResponse(html, status_code=status)
