#!/usr/bin/env python3
"""The results of scripts/napi-defer.sh: reads each run's results.json (DIR/s<set>-d<value>/),
writes DIR/results.md (medians over every run of each deferral value) and DIR/curves.svg (CPU
per packet, ping RTT and HTTP rate against the deferral). Standard library only.

Usage: scripts/plot-napi-defer.py DIR "0 25 50 ..."
"""
import glob
import json
import os
import statistics
import sys

# (results.json key, column title, unit)
COLUMNS = [
    ("udp64_cpu_s_per_mpkt", "CPU s / M packets into c21's eth0", "s"),
    ("udp64_cpu_s_per_mpkt_iperf", "CPU s / M packets iperf3 received", "s"),
    ("udp64_tx_pps", "UDP sent (pkt/s)", ""),
    ("udp64_rx_pps", "UDP received (pkt/s)", ""),
    ("ping_p50_us", "ping p50 (µs)", "µs"),
    ("ping_p99_us", "ping p99 (µs)", "µs"),
    ("http_ka_rps", "HTTP keep-alive (req/s)", ""),
    ("http_close_rps", "HTTP new connection (req/s)", ""),
]


def values_of(run_dir):
    """{key: [per-run values]} of one vxmesh-compare output directory."""
    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
        d = json.load(f)
    out = {}
    for m in d["metrics"] + d["supporting"]:
        v = m.get("vxmesh")
        if isinstance(v, dict):
            out[m["key"]] = v.get("values", [])
    return out


def collect(base, values):
    """{value: {key: [every run's value]}}."""
    data = {}
    for v in values:
        merged = {}
        for run_dir in sorted(glob.glob(os.path.join(base, f"s*-d{v}"))):
            if not os.path.isdir(run_dir):
                continue
            for k, vs in values_of(run_dir).items():
                merged.setdefault(k, []).extend(x for x in vs if x is not None)
        data[v] = merged
    return data


def median(xs):
    return statistics.median(xs) if xs else None


def fmt(x):
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 1000 else f"{x:.3g}"


def table(data, values):
    lines = [
        "| deferral (µs) | runs | " + " | ".join(c[1] for c in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for v in values:
        d = data[v]
        n = len(d.get("ping_p50_us", []))
        cells = [fmt(median(d.get(k, []))) for k, _, _ in COLUMNS]
        lines.append(f"| {v} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def panel(x0, title, ylabel, xs, series, w=300, h=250):
    """One panel: axes from 0, one polyline per (points, color, dashed), x labels `xs`."""
    left, top, pw, ph = x0 + 50, 40, w - 62, h - 90
    ymax = max((v for pts, _, _ in series for v in pts if v is not None), default=1) * 1.1
    s = [f'<text x="{x0 + w / 2}" y="22" text-anchor="middle" font-size="13">{title}</text>']
    s.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#000"/>')
    for k in range(5):
        y = top + ph - ph * k / 4
        s.append(f'<line x1="{left - 4}" y1="{y}" x2="{left + pw}" y2="{y}" stroke="#ddd"/>')
        s.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" font-size="10">{fmt(ymax * k / 4)}</text>')
    s.append(
        f'<text x="{x0 + 10}" y="{top + ph / 2}" font-size="11" '
        f'transform="rotate(-90 {x0 + 10} {top + ph / 2})" text-anchor="middle">{ylabel}</text>'
    )
    step = pw / (len(xs) - 1 if len(xs) > 1 else 1)
    for i, label in enumerate(xs):
        s.append(f'<text x="{left + i * step}" y="{top + ph + 15}" text-anchor="middle" font-size="10">{label}</text>')
    s.append(f'<text x="{left + pw / 2}" y="{top + ph + 32}" text-anchor="middle" font-size="11">deferral (µs)</text>')
    for pts, color, dashed in series:
        p = " ".join(
            f"{left + i * step:.1f},{top + ph - ph * v / ymax:.1f}" for i, v in enumerate(pts) if v is not None
        )
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        s.append(f'<polyline points="{p}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
    return s


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    base, values = sys.argv[1], sys.argv[2].split()
    data = collect(base, values)
    if not any(data[v] for v in values):
        raise SystemExit(f"plot-napi-defer: no results.json under {base}")
    med = {k: [median(data[v].get(k, [])) for v in values] for k, _, _ in COLUMNS}
    with open(os.path.join(base, "results.md"), "w", encoding="utf-8") as f:
        f.write("# vxmesh run --afxdp-napi-defer-us: the receive deferral's trade-off\n\n")
        f.write(f"Medians over every run of each value; per-run results in {base}/s*-d*/.\n\n")
        f.write(table(data, values) + "\n")
    svg = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="900" height="280" font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="#fff"/>',
    ]
    svg += panel(0, "CPU per 64 B packet", "CPU s / M packets", values, [
        (med["udp64_cpu_s_per_mpkt"], "#1f77b4", False),
        (med["udp64_cpu_s_per_mpkt_iperf"], "#1f77b4", True),
    ])
    svg += panel(300, "ping RTT at 500/s", "µs", values, [
        (med["ping_p50_us"], "#d62728", False),
        (med["ping_p99_us"], "#d62728", True),
    ])
    svg += panel(600, "HTTP through the VIP", "req/s", values, [
        (med["http_ka_rps"], "#2ca02c", False),
        (med["http_close_rps"], "#2ca02c", True),
    ])
    svg.append(
        '<text x="10" y="272" font-size="10" fill="#444">CPU: solid per packet into c21\'s eth0, dashed per '
        "packet iperf3 received; ping: p50 solid, p99 dashed; HTTP: keep-alive solid, new connection dashed</text>"
    )
    svg.append("</svg>")
    with open(os.path.join(base, "curves.svg"), "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
