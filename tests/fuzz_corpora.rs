//! Every committed fuzz corpus input (`fuzz/corpus/TARGET/`, found by cargo-fuzz on the nightly
//! toolchain, findings included) replayed through its target (`vxmesh::fuzzing`) on the stable
//! toolchain: what the fuzzers found stays fixed. The seeds the corpora started from are written
//! by the ignored test below (`cargo test --test fuzz_corpora -- --ignored`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use etherparse::PacketBuilder;
use vswitch::Mac;
use vswitch::frames::{self, TcpFlags};
use vswitch::wire::dns;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_input_runs_through_its_target() {
    let mut total = 0;
    for (name, run) in vxmesh::fuzzing::TARGETS {
        let dir = corpus(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has a corpus)", dir.display()));
        let mut n = 0;
        for e in entries {
            let path = e.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "{}: empty corpus", dir.display());
        total += n;
    }
    eprintln!("{total} corpus inputs replayed");
}

/// The seeds: one valid input of each kind a target takes.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let fixture = include_str!("fixtures/cluster.toml").replace("{P}", "");
    let ip = |d: u8| Ipv4Addr::new(10, 0, 9, d);
    let (c11, c21, vip, dns_ip) = (ip(11), ip(21), ip(100), ip(1));
    let mac = Mac::docker_default;
    let mut dnsq = vec![0x5a, 0xa5, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns::encode_name("web", &mut dnsq).unwrap();
    dnsq.extend_from_slice(&[0, 1, 0, 1]);
    let syn = TcpFlags {
        syn: true,
        ..TcpFlags::default()
    };
    let to_vip = frames::tcp(mac(c11), mac(vip), c11, vip, 40000, 80, syn, 1, 0, b"");
    let arp = frames::arp_request(mac(c11), c11, c21);
    let to_dns = frames::udp(mac(c11), mac(dns_ip), c11, dns_ip, 5353, 53, &dnsq);
    let echo = frames::icmp_echo(mac(c11), mac(c21), c11, c21, 1, 1);
    let from_c21 = frames::icmp_echo(mac(c21), mac(c11), c21, c11, 1, 1);
    let mut vxlan = vec![0x08, 0, 0, 0, 0, 0x10, 0x01, 0];
    vxlan.extend_from_slice(&from_c21);
    let ingress_client = Ipv4Addr::new(192, 0, 2, 50);
    let ing = Ipv4Addr::new(192, 0, 2, 1);
    let to_ingress = frames::tcp(
        mac(ingress_client),
        mac(ing),
        ingress_client,
        ing,
        40000,
        8080,
        syn,
        1,
        0,
        b"",
    );
    // A TCP super-frame of 4 segments with its virtio-net header (NEEDS_CSUM, GSO_TCPV4).
    let payload = vec![0x61u8; 4 * 1400];
    let b = PacketBuilder::ethernet2(mac(c11).0, mac(c21).0)
        .ipv4(c11.octets(), c21.octets(), 64)
        .tcp(40000, 80, 1, 64240)
        .ack(1);
    let mut big = Vec::new();
    b.write(&mut big, &payload).unwrap();
    let total = (big.len() - 14) as u16;
    big[16..18].copy_from_slice(&total.to_be_bytes());
    let mut vnet = vec![1u8, 1, 54, 0, 0x78, 0x05, 34, 0, 16, 0, 1, 0];
    vnet.truncate(vswitch::wire::vnet::HEADER_LEN);
    vnet.extend_from_slice(&big);
    let mut plain = vec![0u8; vswitch::wire::vnet::HEADER_LEN];
    plain.extend_from_slice(&echo);
    let way = |w: u8, f: &[u8]| [&[w][..], f].concat();
    vec![
        ("cluster_file", fixture.into_bytes()),
        (
            "control_line",
            b"{\"cmd\":\"stats\",\"json\":true}\n".to_vec(),
        ),
        (
            "control_line",
            b"{\"cmd\":\"fdb-show\",\"network\":\"appnet\",\"json\":false}\n".to_vec(),
        ),
        ("trace_filter", b"udp and dst port 53".to_vec()),
        ("trace_filter", b"tcp and host 10.0.9.11".to_vec()),
        ("vnet", plain),
        ("vnet", vnet),
        ("arp", arp[14..].to_vec()),
        ("dns", dnsq.clone()),
        ("pipeline", way(0, &echo)),
        ("pipeline", way(0, &to_vip)),
        ("pipeline", way(0, &arp)),
        ("pipeline", way(0, &to_dns)),
        ("pipeline", way(1, &to_dns)),
        ("pipeline", way(2, &to_ingress)),
        ("pipeline", way(3, &vxlan)),
        ("pipeline", way(4, &vxlan)),
        ("lb_nat", way(0, &to_vip)),
        ("lb_nat", way(2, &to_vip)),
        ("lb_nat", way(1, &to_vip)),
        ("gro", segments(mac(c11), mac(c21), c11, c21)),
    ]
}

/// Four in-order segments of one TCP flow, each after its 2-byte length (the `gro` target's
/// input).
fn segments(src: Mac, dst: Mac, sip: Ipv4Addr, dip: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..4u32 {
        let ack = TcpFlags {
            ack: true,
            ..TcpFlags::default()
        };
        let f = frames::tcp(
            src,
            dst,
            sip,
            dip,
            40000,
            80,
            ack,
            1 + k * 1000,
            1,
            &[0x61; 1000],
        );
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(&f);
    }
    out
}

#[test]
#[ignore = "writes the seed corpora (run by hand before fuzzing)"]
fn write_seeds() {
    for (k, (target, bytes)) in seeds().into_iter().enumerate() {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{k:02}")), bytes).unwrap();
    }
}

#[test]
fn the_seeds_run_through_their_targets() {
    for (target, bytes) in seeds() {
        let (_, run) = vxmesh::fuzzing::TARGETS
            .iter()
            .find(|(n, _)| *n == target)
            .expect("a target");
        run(&bytes);
    }
}
