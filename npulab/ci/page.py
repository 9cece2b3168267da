"""A static, self-contained HTML page of the nightly history: tonight's table, regressions and
inline SVG trend charts (tokens/s and load time per machine across nights). No JavaScript, no
external fonts or CDNs: the file opens from an artifact zip as is."""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

from npulab.ci.report import Entry, Flag

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 20, 46

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:960px;
color:#1b1f24;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#57606a;margin:0 0 16px}
table{border-collapse:collapse;width:100%}th,td{padding:5px 8px;border-bottom:1px solid #d0d7de;
text-align:left;white-space:nowrap}td.why{white-space:normal}td.n{text-align:right;font-variant-numeric:tabular-nums}
.PASS{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
.flag{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;margin:4px 0;border-radius:4px}
svg{display:block;margin:4px 0 12px}code{font:12px ui-monospace,monospace}
"""


def _scale(lo: float, hi: float, out_lo: float, out_hi: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0

    def f(v: float) -> float:
        return out_lo + (v - lo) / span * (out_hi - out_lo)

    return f


def nice_step(raw: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is >= ``raw``."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9)))


def chart(title: str, metric: str, unit: str, history: list[Entry], machines: list[str]) -> str:
    """An SVG line chart of ``metric`` per machine; failing nights are red crosses at the base."""
    nights = sorted({e.night for e in history})
    values = [v for e in history if (v := getattr(e, metric)) is not None and e.machine in machines]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa" '
        'stroke="#d0d7de"/>',
    ]
    if not nights or not values:
        parts.append(
            f'<text x="{LEFT + 12}" y="{TOP + 24}" fill="#57606a">no data yet</text></svg>'
        )
        return "".join(parts)
    tick = nice_step(max(values) * 1.1 / 4)
    top = tick * math.ceil(max(values) * 1.05 / tick)
    y = _scale(0.0, top, TOP + plot_h, TOP)
    step = plot_w / max(len(nights) - 1, 1)
    x_of = {n: LEFT + (i * step if len(nights) > 1 else plot_w / 2) for i, n in enumerate(nights)}
    for i in range(round(top / tick) + 1):
        v = tick * i
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#d0d7de" stroke-dasharray="3 3"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#57606a">{v:.3g}</text>'
        )
    label_every = max(1, len(nights) // 8)
    for i, night in enumerate(nights):
        if i % label_every == 0 or i == len(nights) - 1:
            parts.append(
                f'<text x="{x_of[night]:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" '
                f'font-size="11" fill="#57606a">{escape(night[5:])}</text>'
            )
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2:.0f}" font-size="11" fill="#57606a" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})" text-anchor="middle">'
        f"{escape(unit)}</text>"
    )
    for index, machine in enumerate(machines):
        color = COLORS[index % len(COLORS)]
        rows = sorted((e for e in history if e.machine == machine), key=lambda e: e.night)
        # One line per run of nights with a value: a failed night leaves a gap.
        segments: list[list[tuple[float, float]]] = [[]]
        for e in rows:
            v = getattr(e, metric)
            if v is None:
                segments.append([])
            else:
                segments[-1].append((x_of[e.night], y(v)))
        for points in segments:
            if len(points) > 1:
                path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
                parts.append(
                    f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
                )
        for e in rows:
            v = getattr(e, metric)
            tip = escape(f"{machine} {e.night}: {v if v is not None else e.verdict}")
            if e.verdict != "PASS":
                cx, cy = x_of[e.night], TOP + plot_h - 6 - 8 * index
                parts.append(
                    f'<g stroke="#cf222e" stroke-width="2"><title>{tip}</title>'
                    f'<line x1="{cx - 4:.1f}" y1="{cy - 4:.1f}" x2="{cx + 4:.1f}" '
                    f'y2="{cy + 4:.1f}"/><line x1="{cx - 4:.1f}" y1="{cy + 4:.1f}" '
                    f'x2="{cx + 4:.1f}" y2="{cy - 4:.1f}"/></g>'
                )
            if v is not None and metric in e.flags:
                parts.append(
                    f'<circle cx="{x_of[e.night]:.1f}" cy="{y(v):.1f}" r="8" fill="none" '
                    f'stroke="#bf8700" stroke-width="2"><title>regression: {tip}</title></circle>'
                )
            if v is not None:
                parts.append(
                    f'<circle cx="{x_of[e.night]:.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}">'
                    f"<title>{tip}</title></circle>"
                )
        ly = TOP + 14 + 18 * index
        parts.append(
            f'<rect x="{LEFT + plot_w + 12}" y="{ly - 9}" width="12" height="12" '
            f'fill="{color}"/><text x="{LEFT + plot_w + 30}" y="{ly + 1}" font-size="12">'
            f"{escape(machine)}</text>"
        )
    ly = TOP + 14 + 18 * len(machines)
    parts.append(
        f'<text x="{LEFT + plot_w + 12}" y="{ly + 1}" font-size="12" fill="#cf222e">'
        "× failed night</text>"
        f'<circle cx="{LEFT + plot_w + 17}" cy="{ly + 14}" r="6" fill="none" stroke="#bf8700" '
        f'stroke-width="2"/><text x="{LEFT + plot_w + 30}" y="{ly + 18}" font-size="12" '
        'fill="#bf8700">regression</text></svg>'
    )
    return "".join(parts)


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def render(
    night: str, tonight: list[Entry], history: list[Entry], flags: list[Flag], machines: list[str]
) -> str:
    rows = []
    for e in tonight:
        css = "PASS" if e.verdict == "PASS" else "bad"
        why = escape("; ".join(e.reasons)[:300])
        rows.append(
            f"<tr><td>{escape(e.machine)}</td><td>{escape(e.chip)}</td>"
            f'<td class="{css}">{escape(e.verdict)}</td>'
            f'<td class="n">{_num(e.tokens_per_s)}</td><td class="n">{_num(e.load_time_s, 1)}</td>'
            f'<td class="n">{_num(e.time_to_first_token_s)}</td>'
            f"<td><code>{escape((e.upstream_commit or '–')[:12])}</code></td>"
            f"<td><code>{escape((e.series_sha256 or '–')[:12])}</code></td>"
            f'<td class="why">{why}</td></tr>'
        )
    flag_html = "".join(f'<div class="flag">{escape(str(f))}</div>' for f in flags) or (
        "<p>No regression beyond the thresholds.</p>"
    )
    first = min((e.night for e in history), default=night)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>npulab nightly {escape(night)}</title><style>{CSS}</style></head><body>"
        f"<h1>npulab nightly NPU matrix</h1>"
        f'<p class="sub">Night {escape(night)} · history {escape(first)} to {escape(night)} '
        f"({len({e.night for e in history})} nights)</p>"
        "<h2>Tonight</h2><table><tr><th>machine</th><th>chip</th><th>verdict</th>"
        "<th>tokens/s</th><th>load s</th><th>TTFT s</th><th>upstream</th><th>series</th>"
        f"<th>why</th></tr>{''.join(rows)}</table>"
        f"<h2>Regressions</h2>{flag_html}"
        "<h2>Decode speed</h2>"
        + chart("tokens per second per machine", "tokens_per_s", "tokens/s", history, machines)
        + "<h2>Model load time</h2>"
        + chart("model load time per machine", "load_time_s", "seconds", history, machines)
        + "</body></html>\n"
    )
