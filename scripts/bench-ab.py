#!/usr/bin/env python3
"""Criterion A/B: the same benches of two commits, run alternately on one machine, as ratios.

    scripts/bench-ab.py BASE_REV [--rounds N] [--filter REGEX] [-- CRITERION_ARGS...]

Builds BASE_REV in a git worktree of its own (target/bench-ab/base, removed afterwards) and the
working tree as it is, then runs every criterion bench binary of both, alternating base and new
binary per bench target and per round, so drift of a shared machine falls on both sides alike.
Prints one row per bench that exists on both sides: the median of each side's per-round medians,
and new/base (below 1 is faster). Benches on one side only are listed after the table.
Writes the table to target/bench-ab/ab.md as well.

Criterion arguments default to --warm-up-time 1 --measurement-time 2.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "target", "bench-ab")
UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


def run(cmd, cwd, env=None, capture=False):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)


def bench_binaries(tree, target):
    """Build the benches of `tree` into `target`; {bench target name: executable}."""
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    out = run(["cargo", "bench", "--workspace", "--no-run", "--message-format=json"],
              tree, env, capture=True).stdout
    found = {}
    for line in out.splitlines():
        if '"executable"' not in line or '"bench"' not in line:
            continue
        m = re.search(r'"target":\{[^}]*"kind":\["bench"\][^}]*"name":"([^"]+)"', line)
        e = re.search(r'"executable":"([^"]+)"', line)
        if m and e:
            found[m.group(1)] = e.group(1)
    return found


def parse(text):
    """Criterion's stdout -> {bench id: median ns}. A result is either one line
    (`id   time: [lo mid hi]`) or the id alone on a line and `time:` on the next."""
    res, name = {}, None
    for line in text.splitlines():
        m = re.match(r"(\S*)\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if m:
            key = m.group(1) or name
            if key:
                res[key] = float(m.group(2)) * UNITS[m.group(3)]
            name = None
        elif line and not line[0].isspace() and not line.startswith(
                ("Benchmarking", "Found", "Warning", "Gnuplot", "running", "test ")):
            name = line.split()[0]
    return res


def main():
    # A TERM unwinds like an exception, so the worktree and its target are removed (`finally`).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--filter", default="")
    ap.add_argument("--base-tree", help="an existing checkout of BASE_REV to build in (its "
                    "target dir is reused), instead of a fresh worktree")
    ap.add_argument("criterion", nargs="*")
    a = ap.parse_args()
    cargs = a.criterion or ["--warm-up-time", "1", "--measurement-time", "2"]
    os.makedirs(OUT, exist_ok=True)
    own = not a.base_tree
    base_tree = a.base_tree or os.path.join(OUT, "base")
    base_target = os.environ.get("CARGO_TARGET_DIR_BASE") or (
        os.path.join(OUT, "target-base") if own else os.path.join(base_tree, "target"))
    if own:
        if os.path.exists(base_tree):
            run(["git", "worktree", "remove", "--force", base_tree], ROOT)
        run(["git", "worktree", "add", "--detach", base_tree, a.base], ROOT)
    try:
        sides = {
            "base": bench_binaries(base_tree, base_target),
            "new": bench_binaries(ROOT, os.path.join(ROOT, "target")),
        }
        samples = {"base": {}, "new": {}}
        names = sorted(set(sides["base"]) | set(sides["new"]))
        for r in range(a.rounds):
            for name in names:
                order = ("base", "new") if r % 2 == 0 else ("new", "base")
                for side in order:
                    exe = sides[side].get(name)
                    if not exe:
                        continue
                    cmd = [exe, "--bench", "--noplot", *cargs]
                    if a.filter:
                        cmd.append(a.filter)
                    text = run(cmd, ROOT, capture=True).stdout
                    for k, v in parse(text).items():
                        samples[side].setdefault(k, []).append(v)
        both = sorted(set(samples["base"]) & set(samples["new"]))
        rows = ["| bench | base | new | new/base |", "|---|---|---|---|"]
        for k in both:
            b = statistics.median(samples["base"][k])
            n = statistics.median(samples["new"][k])
            rows.append(f"| {k} | {fmt(b)} | {fmt(n)} | {n / b:.2f} |")
        only = sorted(set(samples["base"]) ^ set(samples["new"]))
        text = "\n".join(rows)
        if only:
            text += "\n\nOn one side only: " + ", ".join(
                f"{k} ({'base' if k in samples['base'] else 'new'})" for k in only)
        head = (f"criterion A/B: base {a.base} vs the working tree, {a.rounds} round(s), "
                f"args {' '.join(cargs)}\n\n")
        with open(os.path.join(OUT, "ab.md"), "w") as f:
            f.write(head + text + "\n")
        print(head + text)
    finally:
        if own:
            # Not `run`: a failure here must not skip the rest of the clean-up.
            subprocess.run(["git", "worktree", "remove", "--force", base_tree], cwd=ROOT,
                           check=False)
            shutil.rmtree(os.path.join(OUT, "target-base"), ignore_errors=True)


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


if __name__ == "__main__":
    main()
