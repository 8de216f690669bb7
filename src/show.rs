//! Text renderings of the switch's state, shared by `vxmesh demo` and (with the daemon) the
//! control commands: `stats` (every counter, every drop reason by name), `fdb show` (like
//! `bridge fdb show`) and `trace` (like VPP's `show trace`).

use std::fmt::Write;

use vswitch::fdb::FdbDest;
use vswitch::trace::TraceRecord;
use vswitch::{Next, Switch};

/// `vxmesh stats`: per-port counters, then per-stage outcomes, drops by name, and events.
pub fn stats(sw: &Switch) -> String {
    let st = sw.stats();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10}",
        "port", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_dropped"
    );
    for p in &st.ports {
        let s = p.stats;
        let _ = writeln!(
            o,
            "{:<12} {:>12} {:>14} {:>12} {:>14} {:>10}",
            p.name, s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes, s.tx_dropped
        );
        for (k, v) in &p.port {
            let _ = writeln!(o, "{:<12}   {k} {v}", "");
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "stage", "in", "continue", "output", "flood", "remote", "dropped"
    );
    for s in &st.stages {
        let _ = writeln!(
            o,
            "{:<14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            s.name,
            s.rx,
            s.cont,
            s.output,
            s.flood,
            s.remote,
            s.dropped()
        );
        for (name, n) in s.drops.iter().filter(|d| d.1 > 0) {
            let _ = writeln!(o, "{:<14}   {name} {n}", "");
        }
        if s.drop_unnamed > 0 {
            let _ = writeln!(o, "{:<14}   drop_unnamed {}", "", s.drop_unnamed);
        }
        for (name, n) in s.events.iter().filter(|d| d.1 > 0) {
            let _ = writeln!(o, "{:<14}   {name} {n}", "");
        }
    }
    let f = st.fdb;
    let _ = writeln!(
        o,
        "\nfdb: {} learned, {} static; learned {} moves {} refused_full {} aged {}",
        st.fdb_entries.0, st.fdb_entries.1, f.learned, f.moves, f.full, f.aged
    );
    o
}

/// `vxmesh fdb show`: one line per entry, as `bridge fdb show` prints them.
pub fn fdb(sw: &Switch, network: Option<&str>) -> String {
    let mut o = String::new();
    for e in sw.env.fdb.entries(sw.env.now) {
        let net = &sw.env.nets[e.net.0 as usize];
        if network.is_some_and(|n| n != net.name) {
            continue;
        }
        let dest = match e.dest {
            FdbDest::Local(p) => format!("port {}", sw.port_name(p)),
            FdbDest::Remote(v) => match sw.env.vteps.get(v.0 as usize) {
                Some(vt) => format!("dst {} ({})", vt.addr, vt.node),
                None => format!("vtep #{}", v.0),
            },
        };
        let kind = if e.is_static {
            "static".to_string()
        } else {
            format!("learned, age {}s", e.age_secs)
        };
        let _ = writeln!(
            o,
            "{} {dest} network {} vni {} {kind}",
            e.mac, net.name, net.vni
        );
    }
    o
}

/// `vxmesh trace`: records grouped by packet, one line per stage.
pub fn trace(sw: &Switch, recs: &[TraceRecord]) -> String {
    let mut o = String::new();
    let mut last = 0;
    for r in recs {
        if r.id != last {
            let _ = writeln!(o, "--- packet {}", r.id);
            last = r.id;
        }
        let decision = match (r.next, r.drop) {
            (_, Some(d)) => format!("DROP {d}"),
            (Next::Continue, _) => "continue".to_string(),
            (Next::Output(p), _) => format!("output {}", sw.port_name(p)),
            (Next::Flood, _) => "flood".to_string(),
            (Next::Remote(v), _) => match sw.env.vteps.get(v.0 as usize) {
                Some(vt) => format!("remote {}", vt.addr),
                None => format!("remote #{}", v.0),
            },
            (Next::Drop(_), None) => "DROP".to_string(),
        };
        let _ = writeln!(o, "  {:<12} {:<22} {}", r.stage, decision, r.detail);
    }
    o
}
