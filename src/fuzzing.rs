//! One entry point per fuzz target: what `fuzz/` (cargo-fuzz, on the nightly toolchain) feeds
//! arbitrary bytes to, and what `tests/fuzz_corpora.rs` replays every committed corpus input
//! through on the stable toolchain, so that a finding stays fixed. Not part of the node.
//!
//! The parsers each take the bytes as their input is read: the cluster file, a control
//! request line, the trace filter language, the virtio-net header with its frame (and the
//! segmentation it asks for), the coalescing of segments for a TAP ([`gro`]), ARP, DNS. [`lb_nat`] runs the load balancer alone; [`pipeline`] runs the whole node of the test fixture
//! (n1: an AF_XDP-style endpoint, a TAP-style endpoint, an ingress and the VXLAN underlay, as
//! in-memory ports), its tables and connection state kept from one input to the next: the first
//! byte picks where the rest arrives.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use vswitch::{MemHandle, MemPort, Port, Time};

use crate::config::Cluster;
use crate::node::{Node, PortOpener, PortPlan};

/// What a fuzz target runs on one input.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the folders under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("cluster_file", cluster_file),
    ("control_line", control_line),
    ("trace_filter", trace_filter),
    ("vnet", vnet),
    ("arp", arp),
    ("dns", dns),
    ("pipeline", pipeline),
    ("lb_nat", lb_nat),
    ("gro", gro),
];

/// The cluster file's parser and checks.
pub fn cluster_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Cluster::parse(Path::new("fuzz.toml"), text);
    }
}

/// The control socket's request reader and the request's JSON.
pub fn control_line(data: &[u8]) {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
    }
    let line = RT.with(|rt| rt.block_on(crate::control::read_request(data)));
    if let Ok(line) = line {
        let _ = serde_json::from_str::<crate::daemon::Request>(&line);
    }
}

/// The trace filter language.
pub fn trace_filter(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vswitch::trace::TraceFilter::parse(text);
    }
}

/// A TAP's virtio-net header with its frame, and the segments a TCP super-frame is cut into.
pub fn vnet(data: &[u8]) {
    use vswitch::offload;
    use vswitch::wire::vnet::HEADER_LEN;
    let Some((h, frame)) = data.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let Ok(o) = offload::from_vnet(h, frame, 1514) else {
        return;
    };
    if o.gso_size > 0
        && let Ok(g) = offload::Tcp4Gso::new(frame, &o)
    {
        let mut out = vec![0u8; offload::GSO_MAX_FRAME];
        for k in 0..g.segments() {
            let _ = g.write(frame, k, &mut out);
        }
    }
}

/// Receive coalescing for a TAP with offloads: the input is frames, each after a 2-byte
/// length; the runs `gro_run` finds are merged as the TAP's transmit path merges them.
pub fn gro(data: &[u8]) {
    use vswitch::offload;
    let mut batch = vswitch::Batch::with_buf_size(vswitch::BATCH_SIZE, 2048);
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (frame, tail) = tail.split_at(n);
        if batch.push_frame(frame).is_err() {
            break;
        }
        rest = tail;
    }
    let mut out = vec![0u8; offload::GSO_MAX_FRAME];
    let mut k = 0;
    let pkts = batch.pkts();
    while k < pkts.len() {
        let run = offload::gro_run(&pkts[k..]);
        if run >= 2 {
            let _ = offload::gro_merge(&pkts[k..k + run], &mut out);
            k += run;
        } else {
            k += 1;
        }
    }
}

/// ARP.
pub fn arp(data: &[u8]) {
    let _ = vswitch::wire::arp::Repr::parse(data);
}

/// A DNS query as the resolver reads it.
pub fn dns(data: &[u8]) {
    let _ = vswitch::wire::dns::Query::parse(data);
}

/// In-memory ports whose other ends are kept, by port name (the underlay as `underlay`).
#[derive(Default)]
struct Handles(HashMap<String, MemHandle>);

impl PortOpener for Handles {
    fn open(&mut self, p: &PortPlan, _: bool) -> anyhow::Result<Box<dyn Port>> {
        let (port, h) = MemPort::new();
        self.0.insert(p.name.clone(), h);
        Ok(Box::new(port))
    }
    fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let (port, h) = MemPort::new();
        self.0.insert("underlay".into(), h);
        Ok(Box::new(port))
    }
}

/// The fixture's node n1 and its ports' other ends, and the clock.
struct Fixture {
    node: Node,
    ports: Handles,
    now: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let text = include_str!("../tests/fixtures/cluster.toml").replace("{P}", "fuzz");
        let cluster = Cluster::parse(Path::new("fuzz.toml"), &text).expect("the fixture");
        let mut ports = Handles::default();
        let node = Node::build(cluster, "n1", &mut ports).expect("the fixture's node n1");
        Fixture {
            node,
            ports,
            now: 1,
        }
    }
}

/// The load balancer alone (the fixture node's: service web at 10.0.9.100:80, published on
/// 8080): the first byte says how the frame came (bit 0: from the underlay, bit 1: a partial
/// checksum), the rest is an Ethernet frame with its IPv4 header at 14; connections kept from
/// one input to the next.
pub fn lb_nat(data: &[u8]) {
    thread_local! {
        static FIX: RefCell<Fixture> = RefCell::new(Fixture::new());
    }
    let Some((&how, bytes)) = data.split_first() else {
        return;
    };
    let rx = lb::Rx {
        underlay: how & 1 != 0,
        csum_partial: how & 2 != 0,
    };
    let mut frame = bytes.to_vec();
    FIX.with(|f| {
        let f = &mut *f.borrow_mut();
        f.now += 1;
        let now = Time(f.now * 1_000_000);
        let _ = f
            .node
            .lb()
            .process_rx(&mut frame, 14, vswitch::NetId(0), now, rx);
    });
}

/// The whole pipeline of a node: the first byte picks the way in (a container's AF_XDP port,
/// a container's TAP, the ingress, the underlay from the other node's VTEP or from an unknown
/// address), the rest is the frame (or, from the underlay, the UDP payload); then a poll.
pub fn pipeline(data: &[u8]) {
    thread_local! {
        static FIX: RefCell<Fixture> = RefCell::new(Fixture::new());
    }
    let Some((&way, bytes)) = data.split_first() else {
        return;
    };
    FIX.with(|f| {
        let f = &mut *f.borrow_mut();
        let h = &f.ports.0;
        match way % 5 {
            0 => h["c11"].inject(bytes),
            1 => h["c12"].inject(bytes),
            2 => h["ext0"].inject(bytes),
            3 => h["underlay"]
                .inject_from(bytes, SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 4789)),
            _ => h["underlay"].inject_from(
                bytes,
                SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 4789),
            ),
        }
        // Time moves a little with every input (aging and timers run too).
        f.now += 1;
        f.node.sw.poll(Time(f.now * 1_000_000));
        for h in f.ports.0.values() {
            let _ = h.take_tx_to();
        }
    });
}
