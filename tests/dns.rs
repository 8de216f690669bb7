//! Service discovery through the real pipeline of a node built from a cluster file, with
//! in-memory ports (SPEC.md, "Service discovery (DNS)"): a table of queries from a container's
//! port and the answers that come back to that port only, read by smoltcp's DNS parser; a table
//! of bad queries, each dropped under its own counter with nothing sent anywhere; ARP for the
//! resolver; TC and EDNS0; and answers that follow reloads at the next query.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use smoltcp::wire::{DnsPacket, DnsQuestion, DnsRecord, DnsRecordData};
use vswitch::wire::arp::{OP_REPLY, Repr as ArpRepr};
use vswitch::wire::dns::{self, CLASS_IN, TYPE_A, TYPE_AAAA, TYPE_PTR, rcode};
use vswitch::wire::{ethernet, ipv4, udp};
use vswitch::{Mac, MemHandle, MemPort, Port, Time, frames};
use vxmesh::config::Cluster;
use vxmesh::node::{Node, PortOpener, PortPlan};

const RESOLVER: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 1);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

fn mac(addr: Ipv4Addr) -> Mac {
    Mac::docker_default(addr)
}

/// In-memory ports whose other ends the test keeps, by port name.
#[derive(Default)]
struct Handles(HashMap<String, MemHandle>);

impl PortOpener for Handles {
    fn open(&mut self, p: &PortPlan, _: bool) -> anyhow::Result<Box<dyn Port>> {
        let (port, handle) = MemPort::new();
        self.0.insert(p.name.clone(), handle);
        Ok(Box::new(port))
    }
    fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        let (port, handle) = MemPort::new();
        self.0.insert("underlay".into(), handle);
        Ok(Box::new(port))
    }
}

/// The shared fixture, c11 with the alias `api`, and a second network `db` (d1 on n1, d2 on
/// n2, service `store`) whose names appnet's containers must not see.
fn file() -> String {
    let f = include_str!("fixtures/cluster.toml").replace("{P}", "");
    let cut = f.find("# The ingresses stay last").unwrap();
    let (head, tail) = f.split_at(cut);
    let head = head.replacen("netns = \"c11\"", "netns = \"c11\"\naliases = [\"api\"]", 1);
    format!(
        "{head}
[[network]]
name = \"db\"
vni = 4098
subnet = \"10.0.10.0/24\"

[[endpoint]]
name = \"d1\"
node = \"n1\"
network = \"db\"
ip = \"10.0.10.5\"
attach = \"afxdp:vd1\"

[[endpoint]]
name = \"d2\"
node = \"n2\"
network = \"db\"
ip = \"10.0.10.6\"

[[service]]
name = \"store\"
network = \"db\"
vip = \"10.0.10.100\"
backends = [\"d1\", \"d2\"]

{tail}"
    )
}

fn cluster(text: &str) -> Cluster {
    Cluster::parse(Path::new("dns.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

struct Lab {
    node: Node,
    ports: Handles,
    now: u64,
}

impl Lab {
    fn new(text: &str) -> Lab {
        let mut ports = Handles::default();
        let node = Node::build(cluster(text), "n1", &mut ports).unwrap();
        Lab {
            node,
            ports,
            now: 1,
        }
    }

    fn reload(&mut self, text: &str) -> String {
        self.node.reload(cluster(text), &mut self.ports).unwrap()
    }

    /// Send `frame` from `port`; what every port transmitted, by name (empty ones left out).
    fn send(&mut self, port: &str, frame: &[u8]) -> HashMap<String, Vec<Vec<u8>>> {
        self.ports.0[port].inject(frame);
        self.now += 1;
        self.node.sw.poll(Time::from_secs(self.now));
        self.ports
            .0
            .iter()
            .map(|(n, h)| (n.clone(), h.take_tx()))
            .filter(|(_, f)| !f.is_empty())
            .collect()
    }

    /// One query from `port` (whose endpoint has `src`): the one frame that came back to that
    /// port (nothing anywhere else), checked down to the UDP checksum; its DNS message.
    fn ask(&mut self, port: &str, src: Ipv4Addr, msg: &[u8]) -> Vec<u8> {
        let frame = frames::udp(mac(src), mac(RESOLVER), src, RESOLVER, 33333, 53, msg);
        let mut out = self.send(port, &frame);
        let back = out.remove(port).unwrap_or_default();
        assert!(out.is_empty(), "sent elsewhere: {:?}", out.keys());
        assert_eq!(back.len(), 1, "one answer to {port}");
        let f = &back[0];
        let eth = ethernet::Packet::new_checked(&f[..]).unwrap();
        assert_eq!((eth.src_addr(), eth.dst_addr()), (mac(RESOLVER), mac(src)));
        let ip = ipv4::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (RESOLVER, src));
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(RESOLVER, src));
        assert_eq!((u.src_port(), u.dst_port()), (53, 33333));
        u.payload().to_vec()
    }

    /// The stage's count of a drop reason.
    fn drops(&self, reason: &str) -> u64 {
        self.node
            .sw
            .stats()
            .stage("dns")
            .unwrap()
            .drop_count(reason)
    }
}

/// A query for `name` of `qtype`, with an OPT record advertising `edns` if given.
fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut m = vec![0x5a, 0xa5, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns::encode_name(name, &mut m).unwrap();
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(size) = edns {
        m[11] = 1;
        m.extend_from_slice(&[0, 0, 41]);
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&[0; 6]);
    }
    m
}

/// A response as smoltcp reads it: rcode, TC, and each answer as `name TTL data`.
fn read(msg: &[u8]) -> (u8, bool, Vec<String>) {
    let p = DnsPacket::new_checked(msg).unwrap();
    let name = |b: &[u8]| {
        p.parse_name(b)
            .map(|l| String::from_utf8_lossy(l.unwrap()).into_owned())
            .collect::<Vec<_>>()
            .join(".")
    };
    let (mut rest, _) = DnsQuestion::parse(p.payload()).unwrap();
    let mut answers = Vec::new();
    for _ in 0..p.answer_record_count() {
        let (r, rec) = DnsRecord::parse(rest).unwrap();
        rest = r;
        let data = match rec.data {
            DnsRecordData::A(a) => a.to_string(),
            DnsRecordData::Other(_, d) => name(d),
            other => format!("{other:?}"),
        };
        answers.push(format!("{} {} {data}", name(rec.name), rec.ttl));
    }
    let h = dns::Packet::new_checked(msg).unwrap();
    assert_eq!(h.id(), 0x5aa5);
    (h.rcode(), h.truncated(), answers)
}

#[test]
fn every_kind_of_name_is_answered_to_the_asking_port_only() {
    let mut lab = Lab::new(&file());
    let cases: &[(&str, u16, u8, &[&str])] = &[
        ("c11", TYPE_A, rcode::NOERROR, &["c11 2 10.0.9.11"]),
        ("api", TYPE_A, rcode::NOERROR, &["api 2 10.0.9.11"]),
        ("c21", TYPE_A, rcode::NOERROR, &["c21 2 10.0.9.21"]),
        // Case is kept in the answer as asked, and ignored in the lookup.
        ("WeB", TYPE_A, rcode::NOERROR, &["WeB 2 10.0.9.100"]),
        (
            "tasks.web",
            TYPE_A,
            rcode::NOERROR,
            &[
                "tasks.web 2 10.0.9.12",
                "tasks.web 2 10.0.9.21",
                "tasks.web 2 10.0.9.22",
            ],
        ),
        (
            "21.9.0.10.in-addr.arpa",
            TYPE_PTR,
            rcode::NOERROR,
            &["21.9.0.10.in-addr.arpa 2 c21"],
        ),
        (
            "100.9.0.10.in-addr.arpa",
            TYPE_PTR,
            rcode::NOERROR,
            &["100.9.0.10.in-addr.arpa 2 web"],
        ),
        ("web", TYPE_AAAA, rcode::NOERROR, &[]),
        ("c11", TYPE_AAAA, rcode::NOERROR, &[]),
        // The other network's names, and addresses, are invisible.
        ("d1", TYPE_A, rcode::REFUSED, &[]),
        ("store", TYPE_A, rcode::REFUSED, &[]),
        ("5.10.0.10.in-addr.arpa", TYPE_PTR, rcode::REFUSED, &[]),
        ("example.com", TYPE_A, rcode::REFUSED, &[]),
        ("tasks.c11", TYPE_A, rcode::REFUSED, &[]),
    ];
    for &(name, qtype, want_rcode, want) in cases {
        let msg = lab.ask("c11", ip(11), &query(name, qtype, None));
        let (rc, tc, answers) = read(&msg);
        assert_eq!((rc, tc), (want_rcode, false), "{name} type {qtype}");
        assert_eq!(answers, want, "{name} type {qtype}");
    }
    // A TAP port of the same network, and a port of the other network with its own resolver.
    let msg = lab.ask("c12", ip(12), &query("api", TYPE_A, None));
    assert_eq!(read(&msg).2, ["api 2 10.0.9.11"]);
    let db = |last| Ipv4Addr::new(10, 0, 10, last);
    let frame = frames::udp(
        mac(db(5)),
        mac(db(1)),
        db(5),
        db(1),
        4444,
        53,
        &query("tasks.store", TYPE_A, None),
    );
    let out = lab.send("d1", &frame);
    let back = &out["d1"][0];
    let msg = &back[ethernet::HEADER_LEN + 28..];
    assert_eq!(
        read(msg).2,
        ["tasks.store 2 10.0.10.5", "tasks.store 2 10.0.10.6"]
    );
    let msg = {
        let frame = frames::udp(
            mac(db(5)),
            mac(db(1)),
            db(5),
            db(1),
            4444,
            53,
            &query("web", TYPE_A, None),
        );
        lab.send("d1", &frame).remove("d1").unwrap().remove(0)
    };
    assert_eq!(read(&msg[ethernet::HEADER_LEN + 28..]).0, rcode::REFUSED);
    let st = lab.node.sw.stats();
    let dns = st.stage("dns").unwrap();
    assert_eq!(dns.outcomes(), dns.rx);
}

#[test]
fn the_switch_answers_arp_for_the_resolver_and_drops_anything_else_sent_to_it() {
    let mut lab = Lab::new(&file());
    let out = lab.send("c11", &frames::arp_request(mac(ip(11)), ip(11), RESOLVER));
    let reply = &out["c11"][0];
    let arp = ArpRepr::parse(&reply[ethernet::HEADER_LEN..]).unwrap();
    assert_eq!(
        (arp.op, arp.spa, arp.sha),
        (OP_REPLY, RESOLVER, mac(RESOLVER))
    );
    // A ping to the resolver is not flooded: own-addr drops it.
    let ping = frames::icmp_echo(mac(ip(11)), mac(RESOLVER), ip(11), RESOLVER, 1, 1);
    assert!(lab.send("c11", &ping).is_empty());
    let st = lab.node.sw.stats();
    assert_eq!(
        st.stage("own-addr")
            .unwrap()
            .drop_count("drop_to_switch_addr"),
        1
    );
}

#[test]
fn every_bad_query_is_dropped_under_its_own_name_and_answered_to_no_one() {
    let mut lab = Lab::new(&file());
    let ok = query("web", TYPE_A, None);
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut m = ok.clone();
        f(&mut m);
        m
    };
    let mut long_label = ok[..12].to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut long_name = ok[..12].to_vec();
    for _ in 0..5 {
        long_name.push(60);
        long_name.extend_from_slice(&[b'a'; 60]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut pointer = ok[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("drop_dns_truncated", ok[..7].to_vec()),
        ("drop_dns_truncated", ok[..ok.len() - 1].to_vec()),
        ("drop_dns_qdcount", edit(&|m| m[5] = 2)),
        ("drop_dns_qdcount", edit(&|m| m[5] = 0)),
        ("drop_dns_label_too_long", long_label),
        ("drop_dns_name_too_long", long_name),
        ("drop_dns_compression", pointer),
        // STATUS and NOTIFY.
        ("drop_dns_opcode", edit(&|m| m[2] = 2 << 3)),
        ("drop_dns_opcode", edit(&|m| m[2] = 4 << 3)),
        ("drop_dns_response", edit(&|m| m[2] |= 0x80)),
        ("drop_dns_malformed", edit(&|m| m[7] = 1)),
        ("drop_dns_malformed", edit(&|m| m.extend_from_slice(b"xx"))),
    ];
    for (reason, msg) in &cases {
        let before = lab.drops(reason);
        let frame = frames::udp(mac(ip(11)), mac(RESOLVER), ip(11), RESOLVER, 1000, 53, msg);
        let out = lab.send("c11", &frame);
        assert!(out.is_empty(), "{reason}: sent {:?}", out.keys());
        assert_eq!(lab.drops(reason), before + 1, "{reason}");
    }
    // From c11's port with another source address: the answer would go to someone else.
    // Port security refuses those before the resolver sees them.
    for src in [ip(12), ip(99), RESOLVER] {
        let frame = frames::udp(mac(ip(11)), mac(RESOLVER), src, RESOLVER, 1000, 53, &ok);
        assert!(lab.send("c11", &frame).is_empty(), "from {src}");
    }
    let st = lab.node.sw.stats();
    let sec = st.stage("l2-parse").unwrap();
    assert_eq!(sec.drop_count("drop_src_ip_spoofed"), 3);
    // Nothing was ever answered.
    let st = lab.node.sw.stats();
    assert_eq!(st.stage("dns").unwrap().output, 0);
}

#[test]
fn answers_fit_the_clients_size_else_tc_is_set() {
    // 40 more backends of web on n2: 40 A records are 640 bytes, over 512.
    let mut text = file();
    let mut names = Vec::new();
    for i in 0..40 {
        let last = 150 + i;
        text.push_str(&format!(
            "\n[[endpoint]]\nname = \"w{i}\"\nnode = \"n2\"\nnetwork = \"appnet\"\nip = \"10.0.9.{last}\"\n"
        ));
        names.push(format!("\"w{i}\""));
    }
    let text = text.replace(
        r#"backends = ["c12", "c21", "c22"]"#,
        &format!("backends = [{}]", names.join(", ")),
    );
    let mut lab = Lab::new(&text);
    let msg = lab.ask("c11", ip(11), &query("tasks.web", TYPE_A, None));
    assert!(msg.len() <= dns::MIN_UDP_PAYLOAD);
    let (rc, tc, answers) = read(&msg);
    assert_eq!((rc, tc), (rcode::NOERROR, true));
    assert_eq!(answers.len(), (512 - 12 - 15) / dns::A_RECORD_LEN);
    // With EDNS0 at 4096 all of them fit (the network's MTU allows 1422 bytes).
    let msg = lab.ask("c11", ip(11), &query("tasks.web", TYPE_A, Some(4096)));
    let (rc, tc, answers) = read(&msg);
    assert_eq!((rc, tc, answers.len()), (rcode::NOERROR, false, 40));
    assert!(msg.len() > dns::MIN_UDP_PAYLOAD);
    // The OPT record comes back, advertising the network's path: 1450 - 28.
    let opt = &msg[msg.len() - dns::OPT_RECORD_LEN..];
    assert_eq!(&opt[..5], &[0, 0, 41, (1422u16 >> 8) as u8, 1422u16 as u8]);
    let h = dns::Packet::new_checked(&msg[..]).unwrap();
    assert_eq!(h.arcount(), 1);
}

#[test]
fn answers_follow_reloads_at_the_next_query() {
    let file = file();
    let mut lab = Lab::new(&file);
    let tasks = |lab: &mut Lab| read(&lab.ask("c11", ip(11), &query("tasks.web", TYPE_A, None))).2;
    assert_eq!(tasks(&mut lab).len(), 3);
    // c12 drained: gone from tasks.web, still known by name.
    let drained = file.replace(
        r#"backends = ["c12", "c21", "c22"]"#,
        r#"backends = ["c12=0", "c21", "c22"]"#,
    );
    let log = lab.reload(&drained);
    assert!(log.contains("network appnet: names updated"), "{log}");
    assert_eq!(
        tasks(&mut lab),
        ["tasks.web 2 10.0.9.21", "tasks.web 2 10.0.9.22"]
    );
    let msg = lab.ask("c11", ip(11), &query("c12", TYPE_A, None));
    assert_eq!(read(&msg).2, ["c12 2 10.0.9.12"]);
    // Every backend drained: the name is known, with no address.
    let none = file.replace(
        r#"backends = ["c12", "c21", "c22"]"#,
        r#"backends = ["c12=0", "c21=0", "c22=0"]"#,
    );
    lab.reload(&none);
    let (rc, _, answers) = read(&lab.ask("c11", ip(11), &query("tasks.web", TYPE_A, None)));
    assert_eq!((rc, answers.len()), (rcode::NOERROR, 0));
    // An endpoint attached with an alias: its port gets answers, everyone resolves it.
    let attached = format!(
        "{drained}\n[[endpoint]]\nname = \"c13\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.13\"\nattach = \"afxdp:vc13\"\naliases = [\"cache\"]\n"
    );
    let log = lab.reload(&attached);
    assert!(log.contains("endpoint c13: attached"), "{log}");
    let msg = lab.ask("c13", ip(13), &query("cache", TYPE_A, None));
    assert_eq!(read(&msg).2, ["cache 2 10.0.9.13"]);
    let msg = lab.ask(
        "c11",
        ip(11),
        &query("13.9.0.10.in-addr.arpa", TYPE_PTR, None),
    );
    assert_eq!(read(&msg).2, ["13.9.0.10.in-addr.arpa 2 c13"]);
    // Detached again: its name is gone, and its port with it.
    lab.reload(&drained);
    let msg = lab.ask("c11", ip(11), &query("cache", TYPE_A, None));
    assert_eq!(read(&msg).0, rcode::REFUSED);
    // A resolver moved by reload: the old address no longer answers (its frame is switched as
    // any to an unknown MAC), the new one does.
    let moved = drained.replacen("mtu = 1450", "mtu = 1450\ndns = \"10.0.9.53\"", 1);
    lab.reload(&moved);
    let frame = frames::udp(
        mac(ip(11)),
        mac(RESOLVER),
        ip(11),
        RESOLVER,
        1000,
        53,
        &query("web", TYPE_A, None),
    );
    assert!(!lab.send("c11", &frame).contains_key("c11"));
    let new = Ipv4Addr::new(10, 0, 9, 53);
    let frame = frames::udp(
        mac(ip(11)),
        mac(new),
        ip(11),
        new,
        1000,
        53,
        &query("web", TYPE_A, None),
    );
    let out = lab.send("c11", &frame);
    assert_eq!(out["c11"].len(), 1);
}

#[test]
fn a_change_that_fails_halfway_leaves_the_names_as_they_were() {
    let file = file();
    let mut ports = Handles::default();
    // appnet: c11, c12, c21, c22 and n2's LB MAC; db: d1, d2 and n2's LB MAC.
    let fdb = vswitch::FdbConfig {
        max_static: 8,
        ..Default::default()
    };
    let node = Node::build_sized(
        cluster(&file),
        "n1",
        &mut ports,
        vxmesh::node::MAX_CONNS,
        fdb,
    )
    .unwrap();
    let mut lab = Lab {
        node,
        ports,
        now: 1,
    };
    // A drain and a new endpoint: its static FDB entry does not fit, so neither may stay.
    let changed = format!(
        "{}\n[[endpoint]]\nname = \"c23\"\nnode = \"n2\"\nnetwork = \"appnet\"\nip = \"10.0.9.23\"\n",
        file.replace(
            r#"backends = ["c12", "c21", "c22"]"#,
            r#"backends = ["c12=0", "c21", "c22"]"#,
        )
    );
    let err = lab
        .node
        .reload(cluster(&changed), &mut lab.ports)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("nothing of it was applied"),
        "{err:#}"
    );
    let msg = lab.ask("c11", ip(11), &query("tasks.web", TYPE_A, None));
    assert_eq!(read(&msg).2.len(), 3);
    let msg = lab.ask("c11", ip(11), &query("c23", TYPE_A, None));
    assert_eq!(read(&msg).0, rcode::REFUSED);
}
