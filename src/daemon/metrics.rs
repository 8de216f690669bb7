//! `vxmesh run --metrics ADDR:PORT`: the node's counters as a Prometheus scrape target
//! (`GET /metrics`, text exposition format 0.0.4). Control plane, off the packet path: a scrape
//! takes one snapshot on the poll thread between two batches (the same job `vxmesh stats --json`
//! and `lb show --stats` run: copies of the counters, the service listing and two table sizes)
//! and renders it here, on the control side's tokio runtime.
//!
//! The writer is hand-written rather than the `prometheus-client` crate: the counters already
//! live in the switch and the balancer and arrive as snapshots, so there is no registry to keep,
//! nothing to update per packet, and the format (HELP, TYPE, samples, three escapes) is a page
//! of code. The HTTP side is as small: one `GET` per connection, a bounded request head, a
//! read and a write timeout, a bounded number of connections at once; anything but
//! `GET /metrics` is answered 404.

use std::cell::Cell;
use std::fmt::{Display, Write as _};
use std::rc::Rc;
use std::time::Duration;

use lb::listing::ServiceInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vswitch::SwitchStats;

use super::Handle;
use crate::node::Node;

/// Longest request head read (request line and headers).
pub const MAX_REQUEST: usize = 8192;
/// How long a client has to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrape connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;
/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One service of the balancer, with the name the cluster gives it.
#[derive(Clone, Debug)]
pub struct Service {
    /// The cluster's name of the service (empty when none matches).
    pub name: String,
    /// The network the service key is on.
    pub network: String,
    /// The balancer's listing of it.
    pub info: ServiceInfo,
}

/// What one scrape shows, copied on the poll thread.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The switch's counters.
    pub sw: SwitchStats,
    /// FDB capacity: learned, static.
    pub fdb_capacity: (usize, usize),
    /// Connection table: live entries, capacity.
    pub conntrack: (usize, usize),
    /// The balancer's services.
    pub services: Vec<Service>,
    /// The store's counters, if the node follows a store.
    pub store: Option<Vec<(&'static str, i64)>>,
}

impl Snapshot {
    /// Copy the counters of `n` (on the poll thread, between batches).
    pub fn take(n: &mut Node) -> Snapshot {
        let sw = n.sw.stats();
        let cfg = n.sw.env.fdb.config();
        let fdb_capacity = (cfg.max_learned, cfg.max_static);
        let nets: Vec<String> = n.sw.env.nets.iter().map(|x| x.name.clone()).collect();
        let lb = n.lb();
        let conntrack = (lb.conn_table().len(), lb.conn_table().capacity());
        let services = lb
            .services()
            .into_iter()
            .map(|info| {
                let k = &info.key;
                let name = n
                    .cluster
                    .services
                    .iter()
                    .find(|s| {
                        s.ports.iter().any(|p| {
                            (s.vip == k.addr && p.port == k.port) || p.published == Some(k.port)
                        })
                    })
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                Service {
                    name,
                    network: nets.get(usize::from(k.net.0)).cloned().unwrap_or_default(),
                    info,
                }
            })
            .collect();
        Snapshot {
            sw,
            fdb_capacity,
            conntrack,
            services,
            store: None,
        }
    }

    /// Add another worker's snapshot: counters and connections summed, table capacities too
    /// (each worker has its own table), FDB capacity the same on every worker.
    pub fn add(&mut self, o: &Snapshot) {
        self.sw.add(&o.sw);
        self.conntrack.0 += o.conntrack.0;
        self.conntrack.1 += o.conntrack.1;
        for s in &mut self.services {
            if let Some(os) = o.services.iter().find(|x| x.info.key == s.info.key) {
                s.info.add(&os.info);
            }
        }
    }
}

/// Metric types of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A writer of the text exposition format: families (HELP and TYPE, once each) and their
/// samples, each with the `node` label first.
pub struct Writer {
    out: String,
    node: String,
    families: Vec<String>,
    current: String,
}

/// `s` escaped as a label value: backslash, double quote and line feed.
pub fn escape_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// `s` escaped as HELP text: backslash and line feed.
pub fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

impl Writer {
    /// A writer whose samples carry `node="NODE"`.
    pub fn new(node: &str) -> Writer {
        Writer {
            out: String::new(),
            node: node.to_string(),
            families: Vec::new(),
            current: String::new(),
        }
    }

    /// Start family `name` (its HELP and TYPE lines). A family is started once: starting it
    /// again is a bug of the caller (debug assertion); release builds skip the repeated lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(
            !self.families.iter().any(|f| f == name),
            "family {name} twice"
        );
        debug_assert!(
            (kind == Kind::Counter) == name.ends_with("_total"),
            "{name}: counters and only counters end in _total"
        );
        self.current = name.to_string();
        if self.families.iter().any(|f| f == name) {
            return;
        }
        self.families.push(name.to_string());
        let t = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {t}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        let _ = write!(
            self.out,
            "{}{{node=\"{}\"",
            self.current,
            escape_label(&self.node)
        );
        for (k, v) in labels {
            let _ = write!(self.out, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.out, "}} {value}");
    }

    /// A family of one sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(&[], value);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// What the store counters mean, for HELP, and whether each is a gauge.
fn store_help(name: &str) -> (Kind, &'static str) {
    match name {
        "store_revision" => (Kind::Gauge, "The store revision the node's state is at."),
        "store_connected" => (Kind::Gauge, "1 while the node's watch on the store is up."),
        "store_disconnects" => (Kind::Counter, "Times the connection to the store was lost."),
        "store_resyncs" => (
            Kind::Counter,
            "Full reads of the store after a compacted revision or a reconnection.",
        ),
        "store_changes_applied" => (Kind::Counter, "Changes applied from the store."),
        "store_changes_refused" => (Kind::Counter, "Changes from the store the node refused."),
        "store_skipped" => (
            Kind::Counter,
            "Objects of the store left out of the state (bad values, refused by the checks).",
        ),
        _ => (Kind::Counter, "A counter of the node's store watch."),
    }
}

/// Owned labels as the writer takes them.
fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The whole exposition of `s` for node `node`.
pub fn render(node: &str, s: &Snapshot) -> String {
    let mut w = Writer::new(node);
    w.family(
        "vxmesh_build_info",
        Kind::Gauge,
        "The running vxmesh: its version and git revision (always 1).",
    );
    w.sample(
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("git", crate::version::GIT_REV),
        ],
        1,
    );
    // Ports.
    type PortField = fn(&vswitch::PortStats) -> u64;
    let port_families: [(&str, &str, PortField); 5] = [
        (
            "vxmesh_port_rx_packets_total",
            "Frames received on the port.",
            |p| p.rx_packets,
        ),
        (
            "vxmesh_port_rx_bytes_total",
            "Bytes received on the port.",
            |p| p.rx_bytes,
        ),
        (
            "vxmesh_port_tx_packets_total",
            "Frames the port accepted for transmit.",
            |p| p.tx_packets,
        ),
        (
            "vxmesh_port_tx_bytes_total",
            "Bytes the port accepted for transmit.",
            |p| p.tx_bytes,
        ),
        (
            "vxmesh_port_tx_dropped_total",
            "Frames the port refused (ring or socket full).",
            |p| p.tx_dropped,
        ),
    ];
    for (name, help, f) in port_families {
        w.family(name, Kind::Counter, help);
        for p in &s.sw.ports {
            w.sample(&[("port", &p.name)], f(&p.stats));
        }
    }
    w.family(
        "vxmesh_port_driver_events_total",
        Kind::Counter,
        "The port driver's own counters (ring and socket errors, say), by name.",
    );
    for p in &s.sw.ports {
        for (k, v) in &p.port {
            w.sample(&[("port", &p.name), ("name", k)], v);
        }
    }
    // Stages.
    w.family(
        "vxmesh_stage_packets_total",
        Kind::Counter,
        "Packets a stage was given (outcome in) and what it decided (continue, output, flood, remote, dropped).",
    );
    for st in &s.sw.stages {
        for (outcome, v) in [
            ("in", st.rx),
            ("continue", st.cont),
            ("output", st.output),
            ("flood", st.flood),
            ("remote", st.remote),
            ("dropped", st.dropped()),
        ] {
            w.sample(&[("stage", st.name), ("outcome", outcome)], v);
        }
    }
    w.family(
        "vxmesh_drops_total",
        Kind::Counter,
        "Packets a stage dropped, by named reason (every reason, also at zero; drop_unnamed counts reasons a stage did not name).",
    );
    for st in &s.sw.stages {
        for (reason, v) in &st.drops {
            w.sample(&[("stage", st.name), ("reason", reason)], v);
        }
        w.sample(
            &[("stage", st.name), ("reason", "drop_unnamed")],
            st.drop_unnamed,
        );
    }
    w.family(
        "vxmesh_stage_events_total",
        Kind::Counter,
        "A stage's event counters that are not dispositions, by name.",
    );
    for st in &s.sw.stages {
        for (name, v) in &st.events {
            w.sample(&[("stage", st.name), ("name", name)], v);
        }
    }
    // Tables.
    w.family(
        "vxmesh_fdb_entries",
        Kind::Gauge,
        "Entries in the forwarding database, learned or static.",
    );
    w.sample(&[("kind", "learned")], s.sw.fdb_entries.0);
    w.sample(&[("kind", "static")], s.sw.fdb_entries.1);
    w.family(
        "vxmesh_fdb_capacity",
        Kind::Gauge,
        "Entries the forwarding database holds at most, learned or static.",
    );
    w.sample(&[("kind", "learned")], s.fdb_capacity.0);
    w.sample(&[("kind", "static")], s.fdb_capacity.1);
    w.family(
        "vxmesh_fdb_events_total",
        Kind::Counter,
        "Forwarding database events: learned, moves, refused_full (a MAC not learned, the table full), aged.",
    );
    let f = s.sw.fdb;
    for (event, v) in [
        ("learned", f.learned),
        ("moves", f.moves),
        ("refused_full", f.full),
        ("aged", f.aged),
    ] {
        w.sample(&[("event", event)], v);
    }
    w.single(
        "vxmesh_conntrack_entries",
        Kind::Gauge,
        "Live connections in the load balancer's connection table.",
        s.conntrack.0,
    );
    w.single(
        "vxmesh_conntrack_capacity",
        Kind::Gauge,
        "Connections the table holds at most (vxmesh run --max-conns); a full table drops new ones.",
        s.conntrack.1,
    );
    // The load balancer.
    let svc_labels = |sv: &Service| -> [(&'static str, String); 4] {
        let k = &sv.info.key;
        [
            ("service", sv.name.clone()),
            ("network", sv.network.clone()),
            ("protocol", k.proto.name().to_string()),
            ("vip", format!("{}:{}", k.addr, k.port)),
        ]
    };
    let with = |base: &[(&'static str, String)], more: &[(&'static str, String)]| {
        base.iter().chain(more).cloned().collect::<Vec<_>>()
    };
    // A sample's extra label (name, value) beside the service's or backend's own, if any.
    type Extra = Option<(&'static str, &'static str)>;
    let dir = |d: &'static str| Some(("direction", d));
    let state = |st: &'static str| Some(("state", st));
    let sample = |w: &mut Writer, base: &[(&'static str, String)], extra: Extra, v: u64| match extra
    {
        Some((k, val)) => w.sample(&refs(&with(base, &[(k, val.to_string())])), v),
        None => w.sample(&refs(base), v),
    };
    // One family over every service, `samples` giving each service's samples.
    let per_service = |w: &mut Writer,
                       name: &str,
                       kind: Kind,
                       help: &str,
                       samples: &dyn Fn(&Service) -> Vec<(Extra, u64)>| {
        w.family(name, kind, help);
        for sv in &s.services {
            let l = svc_labels(sv);
            for (extra, v) in samples(sv) {
                sample(w, &l, extra, v);
            }
        }
    };
    per_service(
        &mut w,
        "vxmesh_service_connections_total",
        Kind::Counter,
        "Connections the load balancer scheduled for a service.",
        &|sv| vec![(None, sv.info.stats.conns)],
    );
    per_service(
        &mut w,
        "vxmesh_service_packets_total",
        Kind::Counter,
        "Packets of a service's connections: direction in (client to backend) or out.",
        &|sv| {
            vec![
                (dir("in"), sv.info.stats.inpkts),
                (dir("out"), sv.info.stats.outpkts),
            ]
        },
    );
    per_service(
        &mut w,
        "vxmesh_service_bytes_total",
        Kind::Counter,
        "Bytes of a service's connections: direction in (client to backend) or out.",
        &|sv| {
            vec![
                (dir("in"), sv.info.stats.inbytes),
                (dir("out"), sv.info.stats.outbytes),
            ]
        },
    );
    let backend = |sv: &Service, b: &lb::listing::BackendInfo| {
        with(
            &svc_labels(sv),
            &[("backend", format!("{}:{}", b.addr, b.port))],
        )
    };
    // One family over every backend of every service, `samples` giving each backend's samples.
    let per_backend =
        |w: &mut Writer,
         name: &str,
         kind: Kind,
         help: &str,
         samples: &dyn Fn(&lb::listing::BackendInfo) -> Vec<(Extra, u64)>| {
            w.family(name, kind, help);
            for sv in &s.services {
                for b in &sv.info.backends {
                    let l = backend(sv, b);
                    for (extra, v) in samples(b) {
                        sample(w, &l, extra, v);
                    }
                }
            }
        };
    per_backend(
        &mut w,
        "vxmesh_backend_connections",
        Kind::Gauge,
        "A backend's connections now, as ipvsadm lists them: state active (established) or inactive.",
        &|b| {
            vec![
                (state("active"), u64::from(b.active_conns)),
                (state("inactive"), u64::from(b.inact_conns)),
            ]
        },
    );
    per_backend(
        &mut w,
        "vxmesh_backend_weight",
        Kind::Gauge,
        "A backend's scheduling weight (0 drains it).",
        &|b| vec![(None, u64::from(b.weight))],
    );
    per_backend(
        &mut w,
        "vxmesh_backend_connections_total",
        Kind::Counter,
        "Connections the load balancer scheduled to a backend.",
        &|b| vec![(None, b.stats.conns)],
    );
    per_backend(
        &mut w,
        "vxmesh_backend_packets_total",
        Kind::Counter,
        "Packets of a backend's connections: direction in (client to backend) or out.",
        &|b| vec![(dir("in"), b.stats.inpkts), (dir("out"), b.stats.outpkts)],
    );
    per_backend(
        &mut w,
        "vxmesh_backend_bytes_total",
        Kind::Counter,
        "Bytes of a backend's connections: direction in (client to backend) or out.",
        &|b| vec![(dir("in"), b.stats.inbytes), (dir("out"), b.stats.outbytes)],
    );
    // The store.
    if let Some(store) = &s.store {
        for (name, v) in store {
            let (kind, help) = store_help(name);
            let suffix = if kind == Kind::Counter { "_total" } else { "" };
            w.single(&format!("vxmesh_{name}{suffix}"), kind, help, v);
        }
    }
    w.finish()
}

/// Serve scrapes on `listener` until the runtime stops.
pub(super) async fn serve(listener: TcpListener, h: Handle, node: String) {
    let busy = Rc::new(Cell::new(0usize));
    let node = Rc::new(node);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if busy.get() >= MAX_CONNECTIONS {
            continue;
        }
        busy.set(busy.get() + 1);
        let (h, node, busy) = (h.clone(), node.clone(), busy.clone());
        tokio::task::spawn_local(async move {
            let _ = connection(stream, &h, &node).await;
            busy.set(busy.get() - 1);
        });
    }
}

/// Whether `head` asks for the metrics: `GET /metrics` (a query string allowed).
pub fn wants_metrics(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let path = target.split('?').next().unwrap_or_default();
    method == "GET" && path == "/metrics" && version.starts_with("HTTP/1.")
}

/// Read a request head (up to the blank line), at most [`MAX_REQUEST`] bytes; `None` if the
/// client closed first or sent more.
async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// One scrape connection: one request, one answer, then close.
async fn connection(mut s: TcpStream, h: &Handle, node: &str) -> std::io::Result<()> {
    let head = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut s)).await {
        Ok(Ok(Some(head))) => head,
        _ => return Ok(()),
    };
    let (status, ctype, body) = if wants_metrics(&head) {
        let taken = h.call_all(Snapshot::take).await.map(|all| {
            let mut it = all.into_iter();
            let mut snap = it.next().unwrap_or_default();
            for o in it {
                snap.add(&o);
            }
            snap
        });
        match taken {
            Ok(mut snap) => {
                snap.store = h.store.as_ref().map(|(_, st)| st.counters());
                ("200 OK", CONTENT_TYPE, render(node, &snap))
            }
            Err(e) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        }
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: this node serves GET /metrics\n".to_string(),
        )
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        s.write_all(answer.as_bytes()).await?;
        s.shutdown().await
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &'static str, drops: &[&'static str]) -> vswitch::stage::StageStats {
        vswitch::stage::StageStats {
            name,
            rx: 10,
            cont: 7,
            drops: drops.iter().map(|d| (*d, 0)).collect(),
            events: vec![("ev", 3)],
            ..Default::default()
        }
    }

    fn snapshot() -> Snapshot {
        let mut sw = SwitchStats::default();
        sw.ports.push(vswitch::switch::PortSnapshot {
            name: "we\"ird\\port\nx".into(),
            stats: vswitch::PortStats {
                rx_packets: 5,
                ..Default::default()
            },
            port: vec![("ring_full", 2)],
        });
        sw.stages.push(stage("l2", &["drop_no_route", "drop_vlan"]));
        sw.stages.push(stage("lb", &["drop_table_full"]));
        Snapshot {
            sw,
            fdb_capacity: (100, 10),
            conntrack: (1, 64),
            services: Vec::new(),
            store: Some(vec![("store_revision", 7), ("store_disconnects", 1)]),
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("a\\b\nc\"d"), "a\\\\b\\nc\"d");
        let text = render("n\"1", &snapshot());
        assert!(
            text.contains(
                "vxmesh_port_rx_packets_total{node=\"n\\\"1\",port=\"we\\\"ird\\\\port\\nx\"} 5\n"
            ),
            "{text}"
        );
        // Every sample is one line: no raw line feed inside a label.
        for l in text.lines() {
            assert!(l.starts_with("# ") || l.starts_with("vxmesh_"), "{l:?}");
        }
    }

    #[test]
    fn every_family_has_help_and_type_once_before_its_samples() {
        let text = render("n1", &snapshot());
        let mut typed: Vec<String> = Vec::new();
        let mut helped: Vec<String> = Vec::new();
        let mut current = String::new();
        for l in text.lines() {
            if let Some(r) = l.strip_prefix("# HELP ") {
                let name = r.split(' ').next().unwrap().to_string();
                assert!(!helped.contains(&name), "HELP {name} twice");
                helped.push(name);
            } else if let Some(r) = l.strip_prefix("# TYPE ") {
                let mut p = r.split(' ');
                let name = p.next().unwrap().to_string();
                let kind = p.next().unwrap();
                assert!(!typed.contains(&name), "TYPE {name} twice");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{l}");
                assert_eq!(helped.last(), Some(&name), "HELP before TYPE: {l}");
                typed.push(name.clone());
                current = name;
            } else {
                let name = l.split('{').next().unwrap();
                assert_eq!(name, current, "sample outside its family: {l}");
            }
        }
        for f in [
            "vxmesh_drops_total",
            "vxmesh_stage_packets_total",
            "vxmesh_fdb_entries",
            "vxmesh_conntrack_capacity",
            "vxmesh_service_connections_total",
            "vxmesh_backend_connections",
            "vxmesh_store_revision",
            "vxmesh_store_disconnects_total",
        ] {
            assert!(typed.iter().any(|t| t == f), "{f} missing");
        }
    }

    #[test]
    fn every_drop_reason_is_present_also_at_zero() {
        let text = render("n1", &snapshot());
        for (stage, reason) in [
            ("l2", "drop_no_route"),
            ("l2", "drop_vlan"),
            ("l2", "drop_unnamed"),
            ("lb", "drop_table_full"),
            ("lb", "drop_unnamed"),
        ] {
            let line = format!(
                "vxmesh_drops_total{{node=\"n1\",stage=\"{stage}\",reason=\"{reason}\"}} 0"
            );
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn only_get_metrics_is_served() {
        assert!(wants_metrics(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(wants_metrics(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"));
        assert!(!wants_metrics(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!wants_metrics(b"POST /metrics HTTP/1.1\r\n\r\n"));
        assert!(!wants_metrics(b"GET /metrics\r\n\r\n"));
        assert!(!wants_metrics(b""));
    }
}
