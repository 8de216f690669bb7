//! Text renderings of the switch's state, shared by `vxmesh demo` and (with the daemon) the
//! control commands: `stats` (every counter, every drop reason by name), `fdb show` (like
//! `bridge fdb show`) and `trace` (like VPP's `show trace`).

use std::fmt::Write;

use lb::ServiceKey;
use lb::listing::ListMode;
use serde_json::{Value, json};
use vswitch::fdb::FdbDest;
use vswitch::trace::TraceRecord;
use vswitch::{Next, Switch};

use crate::node::Node;

/// `vxmesh stats`: per-port counters, then per-stage outcomes, drops by name, and events.
pub fn stats(sw: &Switch) -> String {
    stats_text(&sw.stats())
}

/// [`stats`] of a snapshot (a node's workers' counters added up: `SwitchStats::add`).
pub fn stats_text(st: &vswitch::SwitchStats) -> String {
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
    fdb_render(fdb_rows(sw, network), false)
}

/// One entry of `fdb show`, keyed by MAC and network, in both renderings.
#[derive(Clone, Debug)]
pub struct FdbRow {
    key: (vswitch::Mac, String),
    text: String,
    json: Value,
}

/// The entries of `sw`'s FDB (of `network` only, if given).
pub fn fdb_rows(sw: &Switch, network: Option<&str>) -> Vec<FdbRow> {
    let mut rows = Vec::new();
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
        rows.push(FdbRow {
            key: (e.mac, net.name.clone()),
            text: format!(
                "{} {dest} network {} vni {} {kind}\n",
                e.mac, net.name, net.vni
            ),
            json: json!({
                "mac": e.mac.to_string(),
                "network": net.name,
                "vni": net.vni,
                "dest": dest_json(sw, e.dest),
                "static": e.is_static,
                "age_secs": e.age_secs,
            }),
        });
    }
    rows
}

/// The FDB rows of a node's workers as one listing: worker 0's, then the entries only another
/// worker has (each learns on its own; the static entries are the same on all).
pub fn fdb_merge(all: Vec<Vec<FdbRow>>) -> Vec<FdbRow> {
    let mut out: Vec<FdbRow> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for rows in all {
        for r in rows {
            if seen.insert(r.key.clone()) {
                out.push(r);
            }
        }
    }
    out
}

/// `fdb show` of `rows`, as text or JSON.
pub fn fdb_render(rows: Vec<FdbRow>, as_json: bool) -> String {
    if as_json {
        pretty(&Value::Array(rows.into_iter().map(|r| r.json).collect()))
    } else {
        rows.into_iter().map(|r| r.text).collect()
    }
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
        let decision = decision(sw, r);
        let _ = writeln!(o, "  {:<12} {:<22} {}", r.stage, decision, r.detail);
    }
    o
}

/// A record's decision as `trace` prints it (`output c21`, `DROP drop_...`).
pub fn decision(sw: &Switch, r: &TraceRecord) -> String {
    match (r.next, r.drop) {
        (_, Some(d)) => format!("DROP {d}"),
        (Next::Continue, _) => "continue".to_string(),
        (Next::Output(p), _) => format!("output {}", sw.port_name(p)),
        (Next::Flood, _) => "flood".to_string(),
        (Next::Remote(v), _) => match sw.env.vteps.get(v.0 as usize) {
            Some(vt) => format!("remote {}", vt.addr),
            None => format!("remote #{}", v.0),
        },
        (Next::Drop(_), None) => "DROP".to_string(),
    }
}

/// `vxmesh trace --json`: one object per record.
pub fn trace_json(sw: &Switch, recs: &[TraceRecord]) -> String {
    let v: Vec<Value> = recs
        .iter()
        .map(|r| {
            json!({
                "packet": r.id,
                "stage": r.stage,
                "decision": decision(sw, r),
                "drop": r.drop,
                "detail": r.detail,
            })
        })
        .collect();
    lines(&v)
}

fn lines(v: &[Value]) -> String {
    let mut o = String::new();
    for x in v {
        let _ = writeln!(o, "{x}");
    }
    o
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn dest_json(sw: &Switch, d: FdbDest) -> Value {
    match d {
        FdbDest::Local(p) => json!({ "port": sw.port_name(p) }),
        FdbDest::Remote(v) => match sw.env.vteps.get(v.0 as usize) {
            Some(vt) => json!({ "vtep": vt.addr.to_string(), "node": vt.node }),
            None => json!({ "vtep_id": v.0 }),
        },
    }
}

/// `vxmesh fdb show --json`.
pub fn fdb_json(sw: &Switch, network: Option<&str>) -> String {
    fdb_render(fdb_rows(sw, network), true)
}

fn counters_json(c: &[(&'static str, u64)]) -> Value {
    Value::Object(c.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

/// `vxmesh stats --json`.
pub fn stats_json(sw: &Switch) -> String {
    stats_json_of(&sw.stats())
}

/// [`stats_json`] of a snapshot.
pub fn stats_json_of(st: &vswitch::SwitchStats) -> String {
    let ports: Vec<Value> = st
        .ports
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "rx_packets": p.stats.rx_packets,
                "rx_bytes": p.stats.rx_bytes,
                "tx_packets": p.stats.tx_packets,
                "tx_bytes": p.stats.tx_bytes,
                "tx_dropped": p.stats.tx_dropped,
                "counters": counters_json(&p.port),
            })
        })
        .collect();
    let stages: Vec<Value> = st
        .stages
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "in": s.rx,
                "continue": s.cont,
                "output": s.output,
                "flood": s.flood,
                "remote": s.remote,
                "dropped": s.dropped(),
                "drops": counters_json(&s.drops),
                "drop_unnamed": s.drop_unnamed,
                "events": counters_json(&s.events),
            })
        })
        .collect();
    let f = st.fdb;
    pretty(&json!({
        "ports": ports,
        "stages": stages,
        "fdb": {
            "learned_entries": st.fdb_entries.0,
            "static_entries": st.fdb_entries.1,
            "learned": f.learned,
            "moves": f.moves,
            "refused_full": f.full,
            "aged": f.aged,
        },
    }))
}

/// `vxmesh network inspect NET` (text or JSON), from the cluster file in force and the switch.
pub fn network(node: &Node, name: &str, as_json: bool) -> Result<String, String> {
    let c = &node.cluster;
    let Some(net) = c.network(name) else {
        let names: Vec<&str> = c.networks.iter().map(|n| n.name.as_str()).collect();
        return Err(format!(
            "no network {name:?} (networks: {})",
            names.join(", ")
        ));
    };
    let served = node.sw.env.net_by_name(name).is_some();
    let peers: Vec<Value> = c
        .peers(name)
        .iter()
        .map(|n| {
            json!({
                "node": n.name,
                "vtep": n.vtep.to_string(),
                "lb": n.lb.get(name).map(|a| a.to_string()),
                "this_node": n.name == node.plan.node,
            })
        })
        .collect();
    let endpoints: Vec<Value> = c
        .endpoints
        .iter()
        .filter(|e| e.network == name)
        .map(|e| {
            let local = e.node == node.plan.node;
            json!({
                "name": e.name,
                "node": e.node,
                "ip": e.ip.to_string(),
                "mac": e.mac.to_string(),
                "attach": if local { e.attach.as_ref().map(|a| match a {
                    crate::config::Attach::Afxdp(i) => format!("afxdp:{i}"),
                    crate::config::Attach::Tap(i) => format!("tap:{i}"),
                }) } else { None },
                "local": local,
                "aliases": e.aliases,
            })
        })
        .collect();
    let services: Vec<Value> = c
        .services
        .iter()
        .filter(|s| s.network == name)
        .map(|s| {
            json!({
                "name": s.name,
                "vip": s.vip.to_string(),
                "scheduler": s.scheduler.name(),
                "backends": s.backends.iter().map(|(b, w)| json!({"endpoint": b, "weight": w})).collect::<Vec<_>>(),
                "ports": s.ports.iter().map(|p| json!({
                    "protocol": p.protocol.to_string(),
                    "port": p.port,
                    "target": p.target,
                    "published": p.published,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    // Key ids and security associations only: never key bytes (docs/encryption.md).
    let sas: Vec<esp::SaInfo> = if net.encrypted {
        let peers: Vec<std::net::Ipv4Addr> = c.peers(name).iter().map(|n| n.vtep).collect();
        node.esp_sas()
            .into_iter()
            .filter(|s| peers.contains(&s.peer))
            .collect()
    } else {
        Vec::new()
    };
    let encryption = net.encrypted.then(|| {
        json!({
            "keys": c.keys.iter().map(|k| k.id().to_string()).collect::<Vec<_>>(),
            "security_associations": sas.iter().map(|s| json!({
                "direction": s.direction.to_string(),
                "peer": s.peer.to_string(),
                "key_id": s.key_id.to_string(),
                "spi": format!("{:#010x}", s.spi),
                "epoch": s.epoch,
                "seq": s.seq,
            })).collect::<Vec<_>>(),
        })
    });
    let v = json!({
        "name": net.name,
        "vni": net.vni,
        "subnet": net.subnet.to_string(),
        "mtu": net.mtu,
        "dns": net.dns.to_string(),
        "encrypted": net.encrypted,
        "encryption": encryption,
        "served_by_this_node": served,
        "peers": peers,
        "endpoints": endpoints,
        "services": services,
    });
    if as_json {
        return Ok(pretty(&v));
    }
    let mut o = String::new();
    let _ = writeln!(
        o,
        "network {}  vni {}  subnet {}  mtu {}  dns {}{}{}",
        net.name,
        net.vni,
        net.subnet,
        net.mtu,
        net.dns,
        if net.encrypted { "  encrypted" } else { "" },
        if served {
            ""
        } else {
            "  (not served by this node)"
        }
    );
    if net.encrypted {
        let ids: Vec<String> = c.keys.iter().map(|k| k.id().to_string()).collect();
        let _ = writeln!(o, "encryption: keys {} (the first sends)", ids.join(", "));
        let _ = writeln!(o, "  DIR PEER            KEY ID    SPI         EPOCH:SEQ");
        for s in &sas {
            let _ = writeln!(
                o,
                "  {:<3} {:<15} {}  {:#010x}  {}:{}",
                s.direction, s.peer, s.key_id, s.spi, s.epoch, s.seq
            );
        }
    }
    let _ = writeln!(o, "peers (VTEPs):");
    for p in c.peers(name) {
        let _ = writeln!(
            o,
            "  {:<8} {:<15} lb {}{}",
            p.name,
            p.vtep,
            p.lb.get(name).map(|a| a.to_string()).unwrap_or_default(),
            if p.name == node.plan.node {
                "  (this node)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(o, "endpoints:");
    for e in c.endpoints.iter().filter(|e| e.network == name) {
        let where_ = if e.node == node.plan.node {
            match &e.attach {
                Some(a) => format!(
                    "local port {} ({})",
                    e.name,
                    match a {
                        crate::config::Attach::Afxdp(i) => format!("afxdp:{i}"),
                        crate::config::Attach::Tap(i) => format!("tap:{i}"),
                    }
                ),
                None => "local".into(),
            }
        } else {
            format!("on {}", e.node)
        };
        let aliases = if e.aliases.is_empty() {
            String::new()
        } else {
            format!("  aliases {}", e.aliases.join(","))
        };
        let _ = writeln!(
            o,
            "  {:<8} {:<15} {}  {where_}{aliases}",
            e.name, e.ip, e.mac
        );
    }
    let svcs: Vec<_> = c.services.iter().filter(|s| s.network == name).collect();
    if !svcs.is_empty() {
        let _ = writeln!(o, "services:");
    }
    for s in svcs {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| {
                let mut t = format!("{}/{}->{}", p.protocol, p.port, p.target);
                if let Some(pb) = p.published {
                    let _ = write!(t, " published {pb}");
                }
                t
            })
            .collect();
        let backends: Vec<String> = s
            .backends
            .iter()
            .map(|(b, w)| {
                if *w == 1 {
                    b.clone()
                } else {
                    format!("{b}={w}")
                }
            })
            .collect();
        let _ = writeln!(
            o,
            "  {:<8} vip {:<15} {} ({}) backends {}",
            s.name,
            s.vip,
            ports.join(", "),
            s.scheduler,
            backends.join(" ")
        );
    }
    Ok(o)
}

fn key_json(n: &Node, k: &ServiceKey) -> Value {
    json!({
        "network": n.sw.env.nets.get(usize::from(k.net.0)).map(|x| x.name.clone()),
        "protocol": k.proto.name(),
        "addr": k.addr.to_string(),
        "port": k.port,
    })
}

/// `vxmesh lb show [--stats|--rate] [--json]`.
pub fn lb(node: &mut Node, stats: bool, rate: bool, as_json: bool) -> String {
    let services = node.lb().services();
    lb_of(node, &services, stats, rate, as_json)
}

/// [`lb()`] of a listing (a node's workers' services added up: `lb::listing::merge_services`);
/// `node` names the networks.
pub fn lb_of(
    node: &Node,
    services: &[lb::listing::ServiceInfo],
    stats: bool,
    rate: bool,
    as_json: bool,
) -> String {
    if !as_json {
        let mode = if rate {
            ListMode::Rate
        } else if stats {
            ListMode::Stats
        } else {
            ListMode::Plain
        };
        return lb::listing::format_services(services, mode);
    }
    let v: Vec<Value> = services
        .iter()
        .map(|s| {
            json!({
                "service": key_json(node, &s.key),
                "scheduler": s.scheduler.name(),
                "snat": s.snat.map(|a| a.to_string()),
                "stats": stats_of(&s.stats),
                "rates": rates_of(&s.rates),
                "backends": s.backends.iter().map(|b| json!({
                    "addr": b.addr.to_string(),
                    "port": b.port,
                    "forward": b.forward,
                    "weight": b.weight,
                    "active_conns": b.active_conns,
                    "inact_conns": b.inact_conns,
                    "stats": stats_of(&b.stats),
                    "rates": rates_of(&b.rates),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    pretty(&Value::Array(v))
}

fn stats_of(s: &lb::Stats) -> Value {
    json!({"conns": s.conns, "inpkts": s.inpkts, "outpkts": s.outpkts, "inbytes": s.inbytes, "outbytes": s.outbytes})
}

fn rates_of(r: &lb::Rates) -> Value {
    json!({"cps": r.cps, "inpps": r.inpps, "outpps": r.outpps, "inbps": r.inbps, "outbps": r.outbps})
}

/// `vxmesh conntrack show [--json]`.
pub fn conntrack(node: &mut Node, as_json: bool) -> String {
    let now = node.sw.env.now;
    conntrack_of(&node.lb().conns(now), as_json)
}

/// `vxmesh conntrack show` of connections already read (the daemon reads them a slice at a
/// time on the poll thread and renders them here, off it).
pub fn conntrack_of(conns: &[lb::listing::ConnInfo], as_json: bool) -> String {
    if !as_json {
        return lb::listing::format_conns(conns);
    }
    let ep = |a: (std::net::Ipv4Addr, u16)| format!("{}:{}", a.0, a.1);
    let v: Vec<Value> = conns
        .iter()
        .map(|c| {
            json!({
                "protocol": c.proto.name(),
                "expires_in": c.expires_in,
                "state": c.state,
                "client": ep(c.client),
                "virtual": ep(c.virtual_),
                "dest": ep(c.dest),
                "snat": c.snat.map(ep),
            })
        })
        .collect();
    pretty(&Value::Array(v))
}

/// `stats` of a node that follows the store: the store's counters after the switch's (a
/// `store` object in JSON, with the last error).
pub fn with_store(
    mut s: String,
    json: bool,
    url: &str,
    st: &crate::store::watch::StoreStats,
) -> String {
    let last = st.last_error.lock().map(|l| l.clone()).unwrap_or_default();
    if json {
        let Ok(mut v) = serde_json::from_str::<Value>(&s) else {
            return s;
        };
        let mut o = serde_json::Map::new();
        o.insert("url".into(), Value::from(url));
        for (k, n) in st.counters() {
            o.insert(k.into(), Value::from(n));
        }
        o.insert("last_error".into(), Value::from(last));
        v["store"] = Value::Object(o);
        return format!("{v}\n");
    }
    let _ = writeln!(s, "\nstore {url}");
    for (k, n) in st.counters() {
        let _ = writeln!(s, "  {k:<24} {n}");
    }
    if !last.is_empty() {
        let _ = writeln!(s, "  last error: {last}");
    }
    s
}
