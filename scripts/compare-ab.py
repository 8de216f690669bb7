#!/usr/bin/env python3
"""The table of scripts/compare-ab.sh: an older vxmesh (BASE) and this checkout's against the
kernel's overlay and OVS userspace, from one session's runs.

    scripts/compare-ab.py OUT BASE

OUT holds base-1/, after/ and base-2/, each a vxmesh-compare results directory. The base's
figures are the median over the runs of both base sets; the kernel's, OVS's and the wire's come
from after/ (the wire: c11 and c21 on one veth pair, the floor). Ratios are plain quotients of medians (value / value); the column "better" says
which way is better. Writes OUT/results.md and prints it.
"""

import json
import statistics
import sys
from pathlib import Path


def load(path):
    with open(path / "results.json") as f:
        return json.load(f)


def values(metric, side):
    v = metric.get(side)
    return list(v["values"]) if v else []


def med(vs):
    return statistics.median(vs) if vs else None


def fmt(x):
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "—"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: compare-ab.py OUT BASE")
    out, base = Path(sys.argv[1]), sys.argv[2]
    after = load(out / "after")
    bases = [load(out / "base-1"), load(out / "base-2")]
    # compare-ab.sh links the base's binary when it has the option, else writes a wrapper.
    base_lacks_offloads = not (out.parent / base / "vxmesh").is_symlink()

    def base_metric(key):
        vs = []
        for b in bases:
            for m in b["metrics"] + b["supporting"]:
                if m["key"] == key:
                    vs += values(m, "vxmesh")
        return vs

    rows = []
    for m in after["metrics"] + after["supporting"]:
        key = m["key"]
        b = [] if (base_lacks_offloads and "offl" in key) else base_metric(key)
        a, k, o, w = (med(values(m, s)) for s in ("vxmesh", "kernel", "ovs", "wire"))
        bm = med(b)
        if all(x is None for x in (bm, a, k, o, w)):
            continue  # a test not run (--tests)
        rows.append(
            f"| {m['label']} | {m['unit']} | {m['better']} | {fmt(w)} | {fmt(bm)} ({len(b)}) | {fmt(a)} "
            f"| {fmt(k)} | {fmt(o)} | {ratio(bm, k)} | {ratio(a, k)} | {ratio(a, bm)} |"
        )
    md = [
        f"# vxmesh {base} and {after.get('vxmesh_rev', '?')} against the kernel and OVS userspace, one session",
        "",
        f"Date: {after.get('date', '?')}  ",
        f"Machine: {after['machine'].get('cpus')} × {after['machine'].get('cpu')}, kernel {after['machine'].get('kernel')}  ",
        "Order: base-1 (the base, vxmesh only), after (this checkout, every side), base-2 (the base again)  ",
        "Commands: " + "; ".join(" ".join(d["command"]) for d in (bases[0], after, bases[1])),
        "",
        "Medians; the base's over both of its sets (runs in brackets). Ratios are value / value.",
        "",
        f"| figure | unit | better | wire | {base} (runs) | after | kernel | OVS | {base} / kernel | after / kernel | after / {base} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if base_lacks_offloads:
        md += ["", f"{base} has no `--afxdp-offloads`: its rows of that option are left out."]
    text = "\n".join(md) + "\n"
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
