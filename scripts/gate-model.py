#!/usr/bin/env python3
"""A model of the receiver gate (docs/performance.md, "Admitting the receiver's share"): a UDP
socket of 200 datagrams behind a gate, sampled about every millisecond (with jitter), fed 300
datagrams a millisecond, and a receiver that reads in bursts (on 2 ms at 280 a millisecond,
off 2 ms, each phase 0.5-1.5x as long at random) or steadily (140 a millisecond). For each
rule it prints what the receiver read, what the socket dropped and what the gate dropped over
20 s of model time. The rules:

  none          no gate
  shut-or-open  the rule before 2026-12-07: shut after two samples full, open at half
  mean          a share moving halfway to what got in at each sample (a smoothed mean)
  window-max    the rule vxmesh uses: the largest share of the last 8 samples

Standard library only; deterministic (seeded). Usage: scripts/gate-model.py
"""
import random

BUF = 200


def run(rule, lam=300.0, r_on=280.0, on=2.0, off=2.0, ms=20000, seed=1):
    rnd = random.Random(seed)
    st = {"throttled": False, "admit": 1.0, "count": 0, "window": [], "quiet": 0}
    q = 0
    read = sock_drop = gate_drop = 0
    offered = admitted = dropped = 0  # since the last sample
    acc = 0.0
    phase_on, left = True, on
    t, tick, next_sample = 0.0, 0.1, 1.0
    while t < ms:
        n = lam * tick
        for _ in range(int(n) + (1 if rnd.random() < n - int(n) else 0)):
            offered += 1
            if st["throttled"]:
                acc += st["admit"]
                if acc < 1:
                    gate_drop += 1
                    continue
                acc -= 1
            admitted += 1
            if q >= BUF:
                sock_drop += 1
                dropped += 1
            else:
                q += 1
        if phase_on:
            r = r_on * tick
            k = min(q, int(r) + (1 if rnd.random() < r - int(r) else 0))
            q -= k
            read += k
        left -= tick
        if left <= 0:
            phase_on = not phase_on
            left = (on if phase_on else off) * rnd.uniform(0.5, 1.5)
        t += tick
        if t >= next_sample:
            next_sample += rnd.uniform(0.5, 3.0)
            if rule is not None:
                rule(st, q, offered, admitted, dropped)
            offered = admitted = dropped = 0
    return read, sock_drop, gate_drop


def shut_or_open(st, q, offered, admitted, dropped):
    looks_full = q >= BUF - BUF / 8 or (dropped > 0 and q >= BUF / 2)
    c = st["count"]
    if c >= 2:
        c = 2 if q > BUF / 2 else 0
    elif looks_full:
        c += 1
    else:
        c = 0
    st["count"] = c
    st["throttled"], st["admit"] = (True, 0.0) if c >= 2 else (False, 1.0)


def pressure(st, q, dropped):
    """Two samples in a row at least half full and dropping or nearly full: throttled."""
    pressured = q >= BUF / 2 and (dropped > 0 or q >= BUF - BUF / 8)
    st["count"] = st["count"] + 1 if pressured else 0
    if st["count"] >= 2:
        st.update(throttled=True, admit=1.0, count=0, window=[1.0] * 8, quiet=0)


def leave_when_quiet(st, q, dropped):
    if st["admit"] >= 1.0 and dropped == 0 and q < BUF / 2:
        st["quiet"] += 1
        if st["quiet"] >= 4:
            st.update(throttled=False, admit=1.0, quiet=0)
    else:
        st["quiet"] = 0


def mean(st, q, offered, admitted, dropped):
    if not st["throttled"]:
        pressure(st, q, dropped)
        return
    if q < BUF / 4:
        st["admit"] = 1.0
    elif offered:
        got = (admitted - min(dropped, admitted)) / offered
        st["admit"] = (st["admit"] + got) / 2
    leave_when_quiet(st, q, dropped)


def window_max(st, q, offered, admitted, dropped):
    if not st["throttled"]:
        pressure(st, q, dropped)
        return
    share = 1.0 if q < BUF / 4 else (
        (admitted - min(dropped, admitted)) / offered if offered else None)
    if share is not None:
        st["window"] = st["window"][1:] + [share]
    st["admit"] = max(st["window"])
    if share is not None and dropped == 0 and q < BUF - BUF / 8:
        st["admit"] = min(1.0, st["admit"] * 17 / 16 + 1 / 256)
    leave_when_quiet(st, q, dropped)


def main():
    cases = [
        ("bursty receiver (on 2 ms at 280/ms, off 2 ms)", {}),
        ("steady receiver (140/ms)", {"r_on": 140.0, "on": 1e12}),
    ]
    rules = [("none", None), ("shut-or-open", shut_or_open), ("mean", mean),
             ("window-max", window_max)]
    print("| receiver | rule | read | dropped by the socket | dropped by the gate | "
          "the gate's share of the loss |")
    print("|---|---|---|---|---|---|")
    for name, kw in cases:
        for rname, rule in rules:
            read, sock, gate = run(rule, **kw)
            share = gate / max(sock + gate, 1)
            print(f"| {name} | {rname} | {read:,} | {sock:,} | {gate:,} | {share:.0%} |")


if __name__ == "__main__":
    main()
