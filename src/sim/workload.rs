//! A small workload for the demo cluster (`tests/fixtures/cluster.toml`): what container c11
//! sends in `examples/sim/c11.pcap`, the simulated example's input, and what the lab test that
//! compares the simulator with live nodes sends from c11's namespace. One frame for each kind
//! of decision the pipeline makes from a local port: proxy ARP, L2 to the other node (AF_XDP
//! and TAP containers), L2 on the node, a DNS query the switch answers, three connections to
//! the service's VIP (round robin over c12, c21, c22), and a spoofed source (dropped).

use std::net::Ipv4Addr;

use vswitch::Mac;
use vswitch::frames::{self, TcpFlags};

/// The workload's first timestamp: 2026-12-06 00:00:00 UTC, in nanoseconds.
pub const START_NS: u64 = 1_796_515_200 * 1_000_000_000;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}

/// A DNS query for `name` (type A) with id `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q[..2].copy_from_slice(&id.to_be_bytes());
    // A fixed, short name: it always encodes.
    let _ = vswitch::wire::dns::encode_name(name, &mut q);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// c11's frames with their timestamps (nanoseconds since the Unix epoch), 100 ms apart, and
/// what each one is.
pub fn demo_c11() -> Vec<(u64, &'static str, Vec<u8>)> {
    let (c11, resolver) = (mac(11), Mac::docker_default(ip(1)));
    let syn = |port: u16| {
        frames::tcp(
            c11,
            mac(100),
            ip(11),
            ip(100),
            port,
            80,
            TcpFlags::SYN,
            1000,
            0,
            b"",
        )
    };
    let v: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "ARP who-has c21: answered by the switch (proxy ARP)",
            frames::arp_request(c11, ip(11), ip(21)),
        ),
        (
            "ping c21 (other node, AF_XDP)",
            frames::icmp_echo(c11, mac(21), ip(11), ip(21), 0x5155, 1),
        ),
        (
            "ping c21 again",
            frames::icmp_echo(c11, mac(21), ip(11), ip(21), 0x5155, 2),
        ),
        (
            "ping c22 (other node, TAP)",
            frames::icmp_echo(c11, mac(22), ip(11), ip(22), 0x5155, 3),
        ),
        (
            "UDP to c12 (same node, TAP)",
            frames::udp(c11, mac(12), ip(11), ip(12), 40001, 9, b"vxmesh sim"),
        ),
        (
            "DNS query for web: answered by the switch",
            frames::udp(
                c11,
                resolver,
                ip(11),
                ip(1),
                40002,
                53,
                &dns_query(7, "web"),
            ),
        ),
        ("SYN to the VIP: to c12", syn(41001)),
        ("SYN to the VIP: to c21", syn(41002)),
        ("SYN to the VIP: to c22", syn(41003)),
        (
            "UDP from a spoofed source: dropped (drop_src_ip_spoofed)",
            frames::udp(c11, mac(21), ip(99), ip(21), 40003, 9, b"spoofed"),
        ),
    ];
    v.into_iter()
        .enumerate()
        .map(|(i, (what, f))| (START_NS + i as u64 * 100_000_000, what, f))
        .collect()
}
