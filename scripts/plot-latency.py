#!/usr/bin/env python3
"""The latency/CPU trade-off of scripts/latency.sh as curves: reads its results.md (the medians
table) and writes an SVG with two panels, the ping RTT (p50 solid, p99 dashed) and the nodes' CPU
against the packet rate, one line per busy-poll policy. Standard library only.

Usage: scripts/plot-latency.py RESULTS.md OUT.svg
"""
import re
import sys

COLORS = {"fixed": "#888888", "adaptive": "#1f77b4", "polling": "#d62728"}
RATES = ["100", "200", "500", "1000", "2000"]


def parse(path):
    """{policy: {"idle": cpu, "p50": [...], "p99": [...], "cpu": [...]}} from the table."""
    out = {}
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[0] not in COLORS:
            continue
        row = {"idle": float(cells[1].rstrip("%")), "p50": [], "p99": [], "cpu": []}
        for c in cells[2:]:
            m = re.match(r"([\d.]+) / ([\d.]+)(?: µs)? / ([\d.]+)%", c)
            if not m:
                raise SystemExit(f"plot-latency: cannot read cell {c!r} in {path}")
            row["p50"].append(float(m.group(1)))
            row["p99"].append(float(m.group(2)))
            row["cpu"].append(float(m.group(3)))
        out[cells[0]] = row
    if not out:
        raise SystemExit(f"plot-latency: no policy rows in {path}")
    return out


def panel(x0, title, ylabel, ymax, xs, series, w=380, h=260):
    """One panel at x offset x0: axes, ticks, and (points, color, dashed) lines."""
    left, top, pw, ph = x0 + 55, 40, w - 70, h - 90
    s = [f'<text x="{x0 + w / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>']
    s.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#000"/>')
    for k in range(5):
        v = ymax * k / 4
        y = top + ph - ph * k / 4
        s.append(f'<line x1="{left - 4}" y1="{y}" x2="{left + pw}" y2="{y}" stroke="#ddd"/>')
        s.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" font-size="10">{v:.0f}</text>')
    s.append(
        f'<text x="{x0 + 12}" y="{top + ph / 2}" font-size="11" '
        f'transform="rotate(-90 {x0 + 12} {top + ph / 2})" text-anchor="middle">{ylabel}</text>'
    )
    step = pw / (len(xs) - 1 if len(xs) > 1 else 1)
    for i, label in enumerate(xs):
        x = left + i * step
        s.append(f'<text x="{x}" y="{top + ph + 15}" text-anchor="middle" font-size="10">{label}</text>')
    s.append(
        f'<text x="{left + pw / 2}" y="{top + ph + 32}" text-anchor="middle" font-size="11">'
        "ping rate (packets/s)</text>"
    )
    for points, color, dashed in series:
        pts = " ".join(
            f"{left + i * step:.1f},{top + ph - ph * min(v, ymax) / ymax:.1f}"
            for i, v in enumerate(points)
            if v is not None
        )
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        s.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
    return s


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    data = parse(sys.argv[1])
    title = next((l.strip("# \n") for l in open(sys.argv[1], encoding="utf-8") if l.startswith("#")), "")
    rtt_max = max(max(r["p99"]) for r in data.values()) * 1.1
    cpu_max = max(max(r["cpu"] + [r["idle"]]) for r in data.values()) * 1.1
    svg = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="800" height="298" font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="#fff"/>',
    ]
    svg += panel(
        0, "ping RTT (p50 solid, p99 dashed)", "µs", rtt_max, RATES,
        [(r[k], COLORS[p], k == "p99") for p, r in data.items() for k in ("p50", "p99")],
    )
    svg += panel(
        400, "CPU of both nodes (idle: no traffic, 10 s)", "% of one core", cpu_max, ["idle"] + RATES,
        [([r["idle"]] + r["cpu"], COLORS[p], False) for p, r in data.items()],
    )
    for i, p in enumerate(data):
        x = 60 + i * 130
        svg.append(f'<line x1="{x}" y1="262" x2="{x + 24}" y2="262" stroke="{COLORS[p]}" stroke-width="2"/>')
        svg.append(f'<text x="{x + 30}" y="266" font-size="11">{p}</text>')
    svg.append(f'<text x="10" y="290" font-size="9" fill="#666">{title}</text>')
    svg.append("</svg>")
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
