//! Bad input from a container and from the underlay (issue 17, port security): malformed and
//! hostile frames built here in Rust and sent through the real nodes of a two-node namespace
//! lab — raw `AF_PACKET` frames from inside the containers (c11 on AF_XDP, c12 on a TAP) and the
//! routing-mesh client, and UDP datagrams to n1's VTEP from n2's underlay address (what anyone
//! on the underlay can forge) or from an address that is no VTEP.
//!
//! Each input names the counter of `vxmesh stats --json` that must move on n1 (a stage's drop or
//! event, or the underlay port's own counter); then no state changed (n1's and n2's FDB as
//! `fdb show` lists them, ages aside; every container's neighbour entries still map each address
//! to its owner's MAC: no ARP poisoning took) and traffic still flows (pings across the lab).
//!
//! One lab for the whole suite; the inputs go one after the other, each waited for (bounded)
//! by its counter. Privileged: without root the test says so and passes. Namespaces carry a
//! per-run prefix (`vxbad{pid}-`) and are removed by name when `Running` drops, also when a
//! check fails.

use std::ffi::CString;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use vswitch::Mac;
use vswitch::frames::{self, TcpFlags};
use vswitch::wire::arp::{OP_REPLY, OP_REQUEST, Repr as Arp};
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{Running, in_netns, vxmesh_exe};

fn ip(l: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, l)
}
fn mac(l: u8) -> Mac {
    Mac::docker_default(ip(l))
}

const VIP: u8 = 100;
const RESOLVER: u8 = 1;
const LB_N1: u8 = 254;
const INGRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VNI: [u8; 3] = [0x00, 0x10, 0x01];
/// How long one input may take to show in its counter.
const WAIT: Duration = Duration::from_secs(5);

/// Run `argv` in namespace `ns`: its output, and whether it succeeded.
fn in_ns(ns: &str, argv: &[&str]) -> (bool, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .expect("ip netns exec");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Send whole Ethernet frames out of `ifname` through a raw `AF_PACKET` socket, in the calling
/// thread's namespace; paced (a short pause every 32 frames) so a long run fits the port's ring.
/// How many the kernel took.
fn raw_send(ifname: &str, frames: &[Vec<u8>]) -> usize {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(ifname).unwrap();
    // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "no interface {ifname}");
    // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    let mut sent = 0;
    for (k, f) in frames.iter().enumerate() {
        if k % 32 == 31 {
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: the buffer is valid for f.len() bytes and sll is a sockaddr_ll of that size.
        let r = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r >= 0 {
            sent += 1;
        }
    }
    sent
}

/// Where an input comes from.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// A container, raw frames on its `eth0`.
    Container(&'static str),
    /// n1's routing-mesh client, raw frames on its `eth0` (n1's ingress `ext0`).
    Client,
    /// UDP to n1's VTEP from n2's VTEP address (a spoofed VTEP source: anyone on the underlay
    /// can forge it).
    Vtep2,
    /// UDP to n1's VTEP from 198.18.0.99, no VTEP.
    Stranger,
}

/// One hostile input: what it is, where from, the frames (or datagrams), and the counter of
/// n1 that must move by at least `n` (`port:NAME` for a port's own counter, else a stage).
struct Case {
    what: &'static str,
    from: Src,
    frames: Vec<Vec<u8>>,
    at: &'static str,
    counter: &'static str,
    n: u64,
}

fn case(what: &'static str, from: Src, f: Vec<u8>, at: &'static str, c: &'static str) -> Case {
    Case {
        what,
        from,
        frames: vec![f],
        at,
        counter: c,
        n: 1,
    }
}

/// A counter of a `vxmesh stats --json` document.
fn counter(v: &serde_json::Value, at: &str, name: &str) -> u64 {
    if let Some(port) = at.strip_prefix("port:") {
        return v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port)
            .and_then(|p| p["counters"][name].as_u64())
            .unwrap_or_else(|| panic!("no counter {name} on port {port}"));
    }
    let st = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == at)
        .unwrap_or_else(|| panic!("no stage {at}"));
    st["drops"][name]
        .as_u64()
        .or_else(|| st["events"][name].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {at}"))
}

fn stats(run: &Running, node: &str) -> serde_json::Value {
    let out = run.ctl_ok(node, &["stats", "--json"]).unwrap();
    serde_json::from_str(&out).expect("stats --json parses")
}

/// `fdb show` of `node` for appnet, ages left out (they tick). (The ingress network learns
/// whatever external clients send.)
fn fdb(run: &Running, node: &str) -> String {
    let out = run
        .ctl_ok(node, &["fdb", "show", "--network", "appnet"])
        .unwrap();
    out.lines()
        .map(|l| match l.find(", age ") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A VXLAN datagram of appnet carrying `inner`.
fn vxlan(inner: &[u8]) -> Vec<u8> {
    let mut d = vec![0x08, 0, 0, 0, VNI[0], VNI[1], VNI[2], 0];
    d.extend_from_slice(inner);
    d
}

/// An ARP packet in a frame from `src` to `dst`.
fn arp(src: Mac, dst: Mac, op: u16, sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = frames::arp(
        dst,
        Arp {
            op,
            sha,
            spa,
            tha: Mac::ZERO,
            tpa,
        },
    );
    f[6..12].copy_from_slice(&src.0);
    f
}

/// `f` with `edit` applied.
fn with(f: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = f.to_vec();
    edit(&mut v);
    v
}

/// A frame to `dst` with EtherType `et` and `body`, from `src`.
fn eth(dst: Mac, src: Mac, et: u16, body: &[u8]) -> Vec<u8> {
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Every input of the suite.
fn cases(client_mac: Mac) -> Vec<Case> {
    use Src::*;
    let c11 = Container("c11");
    let c12 = Container("c12");
    let (m11, m12, m21) = (mac(11), mac(12), mac(21));
    let udp = frames::udp(m11, m12, ip(11), ip(12), 40000, 7, b"hostile");
    let udp12 = frames::udp(m12, m11, ip(12), ip(11), 40000, 7, b"hostile");
    let stp = Mac([0x01, 0x80, 0xc2, 0, 0, 0]);
    let pause = Mac([0x01, 0x80, 0xc2, 0, 0, 1]);
    let eapol = Mac([0x01, 0x80, 0xc2, 0, 0, 3]);
    let lldp = Mac([0x01, 0x80, 0xc2, 0, 0, 0x0e]);
    // An STP configuration BPDU: LLC 42 42 03, then 35 bytes of BPDU.
    let mut bpdu_body = vec![0x42, 0x42, 0x03, 0, 0, 0, 0];
    bpdu_body.resize(38, 0);
    let bpdu = |src: Mac| {
        let mut f = eth(stp, src, bpdu_body.len() as u16, &bpdu_body);
        f.resize(60, 0);
        f
    };
    let pause_f = eth(pause, m11, 0x8808, &[0, 1, 0xff, 0xff, 0, 0, 0, 0]);
    let lldp_f = eth(
        lldp,
        m11,
        0x88cc,
        &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let eapol_f = eth(eapol, m11, 0x888e, &[0x01, 0x01, 0, 0]);
    let ipv6 = eth(
        Mac([0x33, 0x33, 0, 0, 0, 1]),
        m11,
        0x86dd,
        &[
            0x60, 0, 0, 0, 0, 8, 58, 255, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ],
    );
    let vlan = |inner: &[u8]| {
        let mut f = inner[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        f.extend_from_slice(&inner[12..]);
        f
    };
    let syn_spoofed = frames::tcp(
        m11,
        mac(VIP),
        ip(22),
        ip(VIP),
        40001,
        80,
        TcpFlags::SYN,
        1,
        0,
        b"",
    );
    let dhcp = frames::udp(
        m11,
        Mac::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        &[1u8; 240],
    );
    // From n2: frames of its endpoint c21 (its MAC, so vxlan-decap lets them through).
    let udp21 = frames::udp(m21, m11, ip(21), ip(11), 40000, 7, b"hostile");
    let mac_flood: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let b = i.to_be_bytes();
            let src = Mac([0x02, 0x66, b[0], b[1], b[2], b[3]]);
            frames::udp(src, m12, ip(11), ip(12), 40000, 7, b"flood")
        })
        .collect();
    let arp_storm: Vec<Vec<u8>> = (0..500)
        .map(|_| frames::arp_request(m11, ip(11), ip(12)))
        .collect();
    let mut oversize = frames::udp(m12, m11, ip(12), ip(11), 40000, 7, &[0u8; 1500]);
    oversize.truncate(14 + 1450 + 40);
    let ingress_mac = Mac::docker_default(INGRESS);
    let mut v = vec![
        // 802.1D reserved group addresses.
        case(
            "STP BPDU from c11",
            c11,
            bpdu(m11),
            "l2-parse",
            "drop_reserved_multicast",
        ),
        case(
            "PAUSE from c11",
            c11,
            pause_f,
            "l2-parse",
            "drop_reserved_multicast",
        ),
        case(
            "LLDP from c11",
            c11,
            lldp_f,
            "l2-parse",
            "drop_reserved_multicast",
        ),
        case(
            "EAPOL from c11",
            c11,
            eapol_f,
            "l2-parse",
            "drop_reserved_multicast",
        ),
        case(
            "STP BPDU from c12 (TAP)",
            c12,
            bpdu(m12),
            "l2-parse",
            "drop_reserved_multicast",
        ),
        case(
            "STP BPDU from the ingress client",
            Client,
            bpdu(client_mac),
            "l2-parse",
            "drop_reserved_multicast",
        ),
        case(
            "STP BPDU over VXLAN from n2",
            Vtep2,
            vxlan(&bpdu(m21)),
            "l2-parse",
            "drop_reserved_multicast",
        ),
        // Spoofed source MACs, own MACs.
        case(
            "c11 as c12's MAC",
            c11,
            with(&udp, |f| f[6..12].copy_from_slice(&m12.0)),
            "l2-parse",
            "drop_src_mac_spoofed",
        ),
        case(
            "c11 as a made-up MAC",
            c11,
            with(&udp, |f| f[6..12].copy_from_slice(&[2, 0x99, 0, 0, 0, 1])),
            "l2-parse",
            "drop_src_mac_spoofed",
        ),
        case(
            "c12 (TAP) as c11's MAC",
            c12,
            with(&udp12, |f| f[6..12].copy_from_slice(&m11.0)),
            "l2-parse",
            "drop_src_mac_spoofed",
        ),
        case(
            "c11 as the VIP's MAC",
            c11,
            with(&udp, |f| f[6..12].copy_from_slice(&mac(VIP).0)),
            "l2-parse",
            "drop_own_mac_learn",
        ),
        case(
            "c11 as the resolver's MAC",
            c11,
            with(&udp, |f| f[6..12].copy_from_slice(&mac(RESOLVER).0)),
            "l2-parse",
            "drop_own_mac_learn",
        ),
        case(
            "c11 as n1's load-balancer MAC",
            c11,
            with(&udp, |f| f[6..12].copy_from_slice(&mac(LB_N1).0)),
            "l2-parse",
            "drop_own_mac_learn",
        ),
        case(
            "the ingress client as the ingress MAC",
            Client,
            frames::udp(ingress_mac, client_mac, INGRESS, INGRESS, 1, 2, b"x"),
            "l2-parse",
            "drop_own_mac_learn",
        ),
        Case {
            what: "MAC flood from c11: 1000 source MACs (none reaches the FDB)",
            from: c11,
            frames: mac_flood,
            at: "l2-parse",
            counter: "drop_src_mac_spoofed",
            n: 1000,
        },
        // Spoofed IPv4 sources.
        case(
            "c11 with c22's address",
            c11,
            frames::udp(m11, m12, ip(22), ip(12), 1, 2, b"x"),
            "l2-parse",
            "drop_src_ip_spoofed",
        ),
        case(
            "c11 with the VIP as source",
            c11,
            frames::udp(m11, m12, ip(VIP), ip(12), 1, 2, b"x"),
            "l2-parse",
            "drop_src_ip_spoofed",
        ),
        case(
            "SYN to the VIP from c11 as c22",
            c11,
            syn_spoofed,
            "l2-parse",
            "drop_src_ip_spoofed",
        ),
        case(
            "DHCP discover from c11",
            c11,
            dhcp,
            "l2-parse",
            "drop_src_ip_spoofed",
        ),
        case(
            "c12 (TAP) with c21's address",
            c12,
            frames::udp(m12, m11, ip(21), ip(11), 1, 2, b"x"),
            "l2-parse",
            "drop_src_ip_spoofed",
        ),
        // ARP poisoning, locally and across nodes.
        case(
            "gratuitous ARP from c11 claiming c12",
            c11,
            arp(m11, Mac::BROADCAST, OP_REQUEST, m11, ip(12), ip(12)),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP reply from c11 claiming c21 (remote), to c12",
            c11,
            arp(m11, m12, OP_REPLY, m11, ip(21), ip(12)),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP from c11 claiming the VIP",
            c11,
            arp(m11, Mac::BROADCAST, OP_REPLY, m11, ip(VIP), ip(VIP)),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP from c11 claiming the resolver",
            c11,
            arp(
                m11,
                Mac::BROADCAST,
                OP_REPLY,
                m11,
                ip(RESOLVER),
                ip(RESOLVER),
            ),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP from c11 claiming n1's load-balancer address",
            c11,
            arp(m11, Mac::BROADCAST, OP_REPLY, m11, ip(LB_N1), ip(LB_N1)),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP from c11 with c12's sender MAC",
            c11,
            arp(m11, Mac::BROADCAST, OP_REQUEST, m12, ip(11), ip(21)),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP from c12 (TAP) claiming c11",
            c12,
            arp(m12, Mac::BROADCAST, OP_REPLY, m12, ip(11), ip(11)),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP from the ingress client claiming the ingress address",
            Client,
            arp(
                client_mac,
                Mac::BROADCAST,
                OP_REPLY,
                client_mac,
                INGRESS,
                INGRESS,
            ),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "gratuitous ARP over VXLAN from n2 (c21's MAC) claiming c12",
            Vtep2,
            vxlan(&arp(m21, Mac::BROADCAST, OP_REQUEST, m21, ip(12), ip(12))),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP over VXLAN from n2 claiming c11 with c21's MAC",
            Vtep2,
            vxlan(&arp(m21, Mac::BROADCAST, OP_REPLY, m21, ip(11), ip(11))),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        case(
            "ARP over VXLAN from n2 claiming the VIP with the VIP's MAC",
            Vtep2,
            vxlan(&arp(
                mac(VIP),
                Mac::BROADCAST,
                OP_REPLY,
                mac(VIP),
                ip(VIP),
                ip(VIP),
            )),
            "l2-parse",
            "drop_arp_spoofed",
        ),
        // Malformed ARP.
        case(
            "short ARP from c11 (20 bytes)",
            c11,
            frames::arp_request(m11, ip(11), ip(12))[..34].to_vec(),
            "l2-parse",
            "drop_arp_malformed",
        ),
        case(
            "ARP with hardware type 6 from c11",
            c11,
            with(&frames::arp_request(m11, ip(11), ip(12)), |f| f[15] = 6),
            "l2-parse",
            "drop_arp_malformed",
        ),
        case(
            "short ARP over VXLAN from n2",
            Vtep2,
            vxlan(&frames::arp_request(m21, ip(21), ip(11))[..30]),
            "l2-parse",
            "drop_arp_malformed",
        ),
        // Owner announcements for known addresses: absorbed, never flooded.
        case(
            "ARP probe from c11 for its own address",
            c11,
            frames::arp_request(m11, Ipv4Addr::UNSPECIFIED, ip(11)),
            "arp-proxy",
            "drop_arp_announce",
        ),
        case(
            "gratuitous ARP from c11 for its own address",
            c11,
            frames::arp_request(m11, ip(11), ip(11)),
            "arp-proxy",
            "drop_arp_announce",
        ),
        Case {
            what: "ARP storm from c11: 500 requests for c12, each answered, none flooded",
            from: c11,
            frames: arp_storm,
            at: "arp-proxy",
            counter: "arp_replies",
            n: 500,
        },
        // Truncations and bad headers from a container.
        case(
            "802.1Q EtherType without room for the tag, from c11",
            c11,
            eth(m12, m11, 0x8100, &[0]),
            "l2-parse",
            "drop_vlan_truncated",
        ),
        case(
            "VLAN-tagged IPv4 from c11",
            c11,
            vlan(&udp),
            "l2-parse",
            "drop_vlan_tagged",
        ),
        case(
            "802.1ad (QinQ) EtherType from c11",
            c11,
            eth(m12, m11, 0x88a8, &[0, 5, 8, 0, 0x45, 0, 0, 20]),
            "l2-parse",
            "drop_ethertype",
        ),
        case("IPv6 from c11", c11, ipv6.clone(), "l2-parse", "drop_ipv6"),
        case(
            "unknown EtherType 0x1234 from c11",
            c11,
            eth(m12, m11, 0x1234, &[0; 46]),
            "l2-parse",
            "drop_ethertype",
        ),
        case(
            "IPv4 header of 10 bytes from c11",
            c11,
            udp[..24].to_vec(),
            "l2-parse",
            "drop_ipv4_truncated",
        ),
        case(
            "IPv4 IHL 4 from c11",
            c11,
            with(&udp, |f| f[14] = 0x44),
            "l2-parse",
            "drop_ipv4_bad_header",
        ),
        case(
            "IPv4 EtherType, version 6, from c11",
            c11,
            with(&udp, |f| f[14] = 0x65),
            "l2-parse",
            "drop_ipv4_bad_header",
        ),
        case(
            "IPv4 IHL 15 on a 40-byte packet from c11",
            c11,
            with(
                &frames::udp(m11, m12, ip(11), ip(12), 1, 2, &[0; 12]),
                |f| f[14] = 0x4f,
            ),
            "l2-parse",
            "drop_ipv4_truncated",
        ),
        case(
            "IPv4 total length beyond the frame from c11",
            c11,
            with(&udp, |f| f[16..18].copy_from_slice(&1400u16.to_be_bytes())),
            "l2-parse",
            "drop_ipv4_bad_length",
        ),
        case(
            "IPv4 total length below the header from c11",
            c11,
            with(&udp, |f| f[16..18].copy_from_slice(&12u16.to_be_bytes())),
            "l2-parse",
            "drop_ipv4_bad_length",
        ),
        // The underlay.
        case(
            "zero-length UDP datagram",
            Vtep2,
            Vec::new(),
            "port:underlay",
            "rx_empty",
        ),
        case(
            "4-byte datagram (short VXLAN header)",
            Vtep2,
            vec![0x08, 0, 0, 0],
            "vxlan-decap",
            "drop_vxlan_truncated",
        ),
        case(
            "VXLAN without the I flag",
            Vtep2,
            with(&vxlan(&udp21), |d| d[0] = 0),
            "vxlan-decap",
            "drop_vxlan_no_i_flag",
        ),
        case(
            "VXLAN with reserved flags",
            Vtep2,
            with(&vxlan(&udp21), |d| d[0] = 0x0c),
            "vxlan-decap",
            "drop_vxlan_reserved_flags",
        ),
        case(
            "VXLAN with reserved bits",
            Vtep2,
            with(&vxlan(&udp21), |d| d[7] = 1),
            "vxlan-decap",
            "drop_vxlan_reserved_bits",
        ),
        case(
            "VXLAN with an unknown VNI",
            Vtep2,
            with(&vxlan(&udp21), |d| d[6] = 0x99),
            "vxlan-decap",
            "drop_unknown_vni",
        ),
        case(
            "VXLAN from an address that is no VTEP",
            Stranger,
            vxlan(&udp21),
            "vxlan-decap",
            "drop_unknown_vtep",
        ),
        case(
            "VXLAN with a 10-byte inner frame",
            Vtep2,
            vxlan(&udp21[..10]),
            "vxlan-decap",
            "drop_inner_runt",
        ),
        case(
            "VXLAN in outer IPv4 fragments: an inner frame of 1600 bytes",
            Vtep2,
            vxlan(&frames::udp(m21, m11, ip(21), ip(11), 1, 2, &[0u8; 1558])),
            "vxlan-decap",
            "drop_inner_oversize",
        ),
        case(
            "VXLAN from n2 with c11's MAC as inner source",
            Vtep2,
            vxlan(&frames::udp(m11, m12, ip(11), ip(12), 1, 2, b"x")),
            "vxlan-decap",
            "drop_inner_src_spoofed",
        ),
        case(
            "VLAN-tagged inner frame over VXLAN",
            Vtep2,
            vxlan(&vlan(&udp21)),
            "l2-parse",
            "drop_vlan_tagged",
        ),
        case(
            "IPv6 inner frame over VXLAN",
            Vtep2,
            vxlan(&with(&ipv6, |f| f[6..12].copy_from_slice(&m21.0))),
            "l2-parse",
            "drop_ipv6",
        ),
        case(
            "inner IPv4 IHL 3 over VXLAN",
            Vtep2,
            vxlan(&with(&udp21, |f| f[14] = 0x43)),
            "l2-parse",
            "drop_ipv4_bad_header",
        ),
        case(
            "inner IPv4 total length beyond the frame over VXLAN",
            Vtep2,
            vxlan(&with(&udp21, |f| {
                f[16..18].copy_from_slice(&1000u16.to_be_bytes())
            })),
            "l2-parse",
            "drop_ipv4_bad_length",
        ),
        case(
            "inner short IPv4 header over VXLAN",
            Vtep2,
            vxlan(&udp21[..30]),
            "l2-parse",
            "drop_ipv4_truncated",
        ),
    ];
    // Oversize from the TAP: the test raises c12's MTU around this one (see the loop).
    v.push(case(
        "oversize frame from c12 (TAP, 1504 bytes on a 1450 MTU network)",
        c12,
        oversize,
        "l2-parse",
        "drop_oversize",
    ));
    v
}

#[test]
fn hostile_input_is_dropped_by_name_changes_nothing_and_traffic_flows() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    let prefix = format!("vxbad{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let text = Fixture::new(&prefix).text();
    let run =
        Running::start(&exe, &prefix, &text, &["n1", "n2"]).unwrap_or_else(|e| panic!("{e:#}"));
    let ns = |e: &str| run.lab.endpoint_netns(e);
    let ping = |from: &str, to: u8| {
        let to = ip(to).to_string();
        in_ns(&ns(from), &["ping", "-c", "1", "-W", "2", &to])
    };
    // Traffic flows, and every container has neighbour entries to keep.
    for (from, to) in [
        ("c11", 12),
        ("c11", 21),
        ("c21", 12),
        ("c12", 22),
        ("c22", 11),
    ] {
        let (ok, out) = ping(from, to);
        assert!(ok, "{from} -> {to} before: {out}\n{}", run.log_tail());
    }
    let fdb_before = (fdb(&run, "n1"), fdb(&run, "n2"));
    let client_ns = run.lab.client_netns("n1");
    let client_mac = {
        let (ok, out) = in_ns(&client_ns, &["cat", "/sys/class/net/eth0/address"]);
        assert!(ok, "{out}");
        let b: Vec<u8> = out
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        Mac([b[0], b[1], b[2], b[3], b[4], b[5]])
    };
    let ul = run.lab.underlay_netns();
    let (ok, out) = in_ns(&ul, &["ip", "addr", "add", "198.18.0.99/24", "dev", "br0"]);
    assert!(ok, "{out}");

    let cases = cases(client_mac);
    assert!(cases.len() >= 45, "{} inputs", cases.len());
    let mut st = stats(&run, "n1");
    let flooded_before = counter(&st, "l2-fwd", "group_flooded");
    let mut failed = Vec::new();
    for c in &cases {
        let before = counter(&st, c.at, c.counter);
        let oversize = c.counter == "drop_oversize";
        if oversize {
            let (ok, out) = in_ns(&ns("c12"), &["ip", "link", "set", "eth0", "mtu", "1600"]);
            assert!(ok, "{out}");
        }
        let frames = c.frames.clone();
        let sent = match c.from {
            Src::Container(e) => in_netns(&ns(e), move || raw_send("eth0", &frames)),
            Src::Client => in_netns(&client_ns, move || raw_send("eth0", &frames)),
            Src::Vtep2 | Src::Stranger => {
                let (netns, src) = match c.from {
                    Src::Vtep2 => (run.lab.node_netns("n2"), "198.18.0.2:0"),
                    _ => (ul.clone(), "198.18.0.99:0"),
                };
                in_netns(&netns, move || {
                    let s = UdpSocket::bind(src).unwrap();
                    frames
                        .iter()
                        .filter(|d| s.send_to(d, "198.18.0.1:4789").is_ok())
                        .count()
                })
            }
        }
        .unwrap()
        .join()
        .unwrap();
        if oversize {
            let (ok, out) = in_ns(&ns("c12"), &["ip", "link", "set", "eth0", "mtu", "1450"]);
            assert!(ok, "{out}");
        }
        assert_eq!(sent, c.frames.len(), "{}: not all sent", c.what);
        let deadline = Instant::now() + WAIT;
        let mut moved;
        loop {
            st = stats(&run, "n1");
            moved = counter(&st, c.at, c.counter) - before;
            if moved >= c.n || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{:<70} {}/{:<26} +{moved}", c.what, c.at, c.counter);
        if moved < c.n {
            failed.push(format!(
                "{}: {} {} moved by {moved}, want {}",
                c.what, c.at, c.counter, c.n
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // Nothing hostile was flooded (the storm was answered; a few frames of the containers'
    // own may have been).
    let flooded = counter(&st, "l2-fwd", "group_flooded") - flooded_before;
    assert!(flooded < 50, "{flooded} frames flooded during the suite");

    // No state changed: the FDBs, and every neighbour entry still maps to its owner's MAC.
    assert_eq!((fdb(&run, "n1"), fdb(&run, "n2")), fdb_before);
    let owner = |a: Ipv4Addr| -> Option<Mac> {
        run.cluster
            .endpoints
            .iter()
            .find(|e| e.ip == a)
            .map(|e| e.mac)
            .or_else(|| (a.octets()[3] >= 100).then(|| Mac::docker_default(a)))
    };
    for e in ["c11", "c12", "c21", "c22"] {
        let (ok, out) = in_ns(&ns(e), &["ip", "-4", "neigh", "show"]);
        assert!(ok, "{out}");
        for l in out.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (Some(a), Some(i)) = (w.first(), w.iter().position(|x| *x == "lladdr")) else {
                continue;
            };
            let a: Ipv4Addr = a.parse().unwrap();
            let got = w[i + 1];
            if let Some(m) = owner(a) {
                assert_eq!(got, m.to_string(), "{e}'s neighbour entry for {a}: {l}");
            }
        }
    }
    // And traffic still flows.
    for (from, to) in [
        ("c11", 12),
        ("c11", 21),
        ("c21", 12),
        ("c12", 22),
        ("c22", 11),
    ] {
        let (ok, out) = ping(from, to);
        assert!(ok, "{from} -> {to} after: {out}\n{}", run.log_tail());
    }
}
