"""Draws delivery latency against subscriber count as an SVG, from fanout results.

    python3 scripts/bench/latency_chart.py RESULTS.jsonl OUT.svg

RESULTS.jsonl holds the JSON lines `swarmfeed-bench fanout` printed, one run per line,
and may hold lines of `swarmfeed-bench floor` too. Runs with the same subscriber count
are summarised by their median p50, p99 and p99.9 latency from commit (fanout) and
median p99 from the moment each event was due (floor). The SVG is drawn by hand (no
plotting library): a logarithmic subscriber axis, a linear millisecond axis, one line
per percentile, the floor's p99 dotted and the 50 ms target as a dashed line.
"""

import json
import math
import statistics
import sys
from collections import defaultdict

WIDTH, HEIGHT = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 40, 60
TARGET_MS = 50
SERIES = [("p50_ms", "p50", "#2b6cb0"), ("p99_ms", "p99", "#c05621"), ("p999_ms", "p99.9", "#9b2c2c")]
FLOOR = ("p99_ms", "floor p99", "#2f855a")


def load(path):
    """Median latencies per subscriber count, fanout's and the floor's:
    ({subscribers: {key: ms}}, {subscribers: {key: ms}})."""
    runs, floors = defaultdict(list), defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                run = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{number}: not JSON: {e}")
            if run.get("mode") == "fanout":
                runs[run["subscribers_connected"]].append(run["latency_from_commit"])
            elif run.get("mode") == "floor":
                floors[run["subscribers"]].append(run["latency_from_due"])
    if not runs:
        sys.exit(f"{path}: no fanout results")

    def medians(by_count):
        return {
            n: {key: statistics.median(r[key] for r in rs) for key, _, _ in SERIES} | {"runs": len(rs)}
            for n, rs in sorted(by_count.items())
        }

    return medians(runs), medians(floors)


def nice_step(span):
    """A round tick step giving about five ticks over span."""
    raw = span / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def draw(points, floor, title):
    counts = sorted(set(points) | set(floor))
    low, high = math.log10(min(counts)), math.log10(max(counts))
    if high == low:
        low, high = low - 0.5, high + 0.5
    top_ms = max(max(p[key] for key, _, _ in SERIES) for p in points.values())
    top_ms = max([top_ms] + [p[FLOOR[0]] for p in floor.values()])
    top_ms = max(top_ms, TARGET_MS) * 1.1
    step = nice_step(top_ms)
    top_ms = math.ceil(top_ms / step) * step
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(n):
        return LEFT + (math.log10(n) - low) / (high - low) * plot_w

    def y(ms):
        return TOP + plot_h - ms / top_ms * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{title}</text>',
    ]
    tick = 0
    while tick <= top_ms:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += step
    for n in counts:
        out.append(f'<line x1="{x(n):.1f}" x2="{x(n):.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{x(n):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{n:,}</text>'.replace(",", " "))
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 16}" text-anchor="middle">WebSocket subscribers (log scale)</text>'
    )
    out.append(
        f'<text x="18" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 18 {TOP + plot_h / 2})">latency from commit, ms</text>'
    )
    out.append(
        f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(TARGET_MS):.1f}" y2="{y(TARGET_MS):.1f}" '
        'stroke="#4a5568" stroke-dasharray="6 4"/>'
    )
    out.append(f'<text x="{LEFT + 6}" y="{y(TARGET_MS) - 5:.1f}" fill="#4a5568">p99 target, {TARGET_MS} ms</text>')
    def series(by_count, key, label, colour, row, legend, dash=""):
        path = " ".join(f"{x(n):.1f},{y(p[key]):.1f}" for n, p in by_count.items())
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dashes}/>')
        for n, p in by_count.items():
            out.append(f'<circle cx="{x(n):.1f}" cy="{y(p[key]):.1f}" r="3.5" fill="{colour}"/>')
        last_n, last = list(by_count.items())[-1]
        out.append(
            f'<text x="{x(last_n) + 8:.1f}" y="{y(last[key]) + 4:.1f}" fill="{colour}">{label} {last[key]:.0f} ms</text>'
        )
        out.append(f'<rect x="{LEFT + 10}" y="{TOP + 8 + row * 18}" width="12" height="3" fill="{colour}"/>')
        out.append(f'<text x="{LEFT + 28}" y="{TOP + 13 + row * 18}">{legend}</text>')

    for row, (key, label, colour) in enumerate(SERIES):
        series(points, key, label, colour, row, label)
    if floor:
        key, label, colour = FLOOR
        series(floor, key, label, colour, len(SERIES), f"{label}: no server, TCP alone", dash="2 3")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: " + __doc__.strip().splitlines()[2].strip())
    points, floor = load(sys.argv[1])
    title = "One event at a time, 10 events/s to every subscriber (2 cores, harness included)"
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(draw(points, floor, title))
    for n, p in points.items():
        print(f"{n:>6} subscribers: p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms ({p['runs']} runs)")
    for n, p in floor.items():
        print(f"{n:>6} connections, floor: p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms ({p['runs']} runs)")


if __name__ == "__main__":
    main()
