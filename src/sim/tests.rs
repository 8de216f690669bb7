//! Tests of the simulator: the same bytes every run, the virtual wire (plain and ESP), the
//! virtual clock, stepping and the per-stage capture.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vswitch::Mac;
use vswitch::frames::{self, TcpFlags};

use super::cli::{STAGES_FILE, SimOptions, run_with};
use super::debug::Console;
use super::io::{InputSpec, read_capture};
use crate::pcap::PcapWriter;

const T0: u64 = 1_700_000_000 * 1_000_000_000;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, last)
}

fn mac(last: u8) -> Mac {
    Mac::docker_default(ip(last))
}

/// A directory of its own under the system's temporary one, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("vxmesh-sim-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (t, f) in frames {
        w.frame(*t, f).unwrap();
    }
    w.flush().unwrap();
}

/// c11's traffic: pings to c21 (other node), an ARP request for the VIP, SYNs to the VIP.
fn c11_frames() -> Vec<(u64, Vec<u8>)> {
    let mut v = Vec::new();
    for s in 0..3 {
        v.push((
            T0 + u64::from(s) * 500_000_000,
            frames::icmp_echo(mac(11), mac(21), ip(11), ip(21), 7, s),
        ));
    }
    v.push((
        T0 + 2_000_000_000,
        frames::arp_request(mac(11), ip(11), ip(100)),
    ));
    for k in 0..3u16 {
        v.push((
            T0 + 3_000_000_000 + u64::from(k) * 100_000_000,
            frames::tcp(
                mac(11),
                mac(100),
                ip(11),
                ip(100),
                40000 + k,
                80,
                TcpFlags::SYN,
                1000,
                0,
                b"",
            ),
        ));
    }
    v
}

fn cluster_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("cluster.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn fixture() -> String {
    include_str!("../../tests/fixtures/cluster.toml").replace("{P}", "")
}

fn opts(dir: &Path, config: PathBuf, input: &Path, out: &str) -> SimOptions {
    SimOptions {
        config,
        inputs: vec![InputSpec {
            file: input.to_path_buf(),
            node: "n1".into(),
            port: "c11".into(),
        }],
        out: dir.join(out),
        seed: 7,
        break_on: None,
        pcapng: false,
        max_conns: crate::node::MAX_CONNS,
    }
}

fn quiet() -> Console {
    Console {
        input: Box::new(std::io::empty()),
        out: Box::new(std::io::sink()),
        interactive: false,
    }
}

/// Every file of `dir`, sorted by name, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn frames_of(path: &Path) -> Vec<Vec<u8>> {
    read_capture(path)
        .unwrap()
        .into_iter()
        .map(|(_, f)| f)
        .collect()
}

#[test]
fn the_same_inputs_and_seed_give_byte_identical_outputs() {
    let d = Dir::new("same");
    let input = d.0.join("c11.pcap");
    write_pcap(&input, &c11_frames());
    let cfg = cluster_file(&d.0, &fixture());
    let mut a = opts(&d.0, cfg.clone(), &input, "a");
    a.pcapng = true;
    let mut b = a.clone();
    b.out = d.0.join("b");
    let sa = run_with(&a, quiet()).unwrap();
    let sb = run_with(&b, quiet()).unwrap();
    assert_eq!(sa, sb);
    assert_eq!(sa.frames, 7);
    let (fa, fb) = (files(&a.out), files(&b.out));
    assert_eq!(
        fa.len(),
        2 * 6 + 2 + 1,
        "a pcap per port, a json per node, stages"
    );
    assert_eq!(fa, fb, "byte for byte");
    // Not trivially equal: the pings crossed to c21, the SYNs went round robin (c12 here,
    // c21 and c22 on n2), the ARP request for the VIP was answered to c11.
    let c21 = frames_of(&a.out.join("n2-c21.pcap"));
    assert_eq!(c21.len(), 4);
    assert_eq!(c21[0], c11_frames()[0].1, "the ping arrives byte for byte");
    assert_eq!(frames_of(&a.out.join("n1-c12.pcap")).len(), 1);
    assert_eq!(frames_of(&a.out.join("n2-c22.pcap")).len(), 1);
    let arp = frames_of(&a.out.join("n1-c11.pcap"));
    assert_eq!(arp.len(), 1);
    assert_eq!(&arp[0][6..12], &mac(100).0, "the VIP's MAC answers");
    let ul = frames_of(&a.out.join("n1-underlay.pcap"));
    assert_eq!(ul.len(), 5, "3 pings and 2 SYNs crossed");
    assert_eq!(
        &ul[0][36..38],
        &4789u16.to_be_bytes(),
        "as UDP to 4789 on the wire"
    );
    // Another seed changes hash seeds only: the forwarding is the same.
    let mut c = a.clone();
    c.out = d.0.join("c");
    c.seed = 8;
    run_with(&c, quiet()).unwrap();
    let pcaps = |v: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        v.into_iter()
            .filter(|(n, _)| n.ends_with(".pcap"))
            .collect()
    };
    assert_eq!(pcaps(files(&c.out)), pcaps(fa));
}

#[test]
fn an_encrypted_network_crosses_the_virtual_underlay_as_esp_only() {
    let d = Dir::new("esp");
    let input = d.0.join("c11.pcap");
    write_pcap(&input, &c11_frames()[..3]);
    let text = format!(
        "{}\n[encryption]\nkeys = [\"AAECAwQFBgcICQoLDA0ODxAREhM=\"]\n",
        fixture().replace("mtu = 1450", "mtu = 1408\nencrypted = true")
    );
    let cfg = cluster_file(&d.0, &text);
    let mut o = opts(&d.0, cfg, &input, "out");
    o.pcapng = true;
    run_with(&o, quiet()).unwrap();
    // The per-stage capture shows the packet as ESP after esp-encrypt (IPv4 protocol 50
    // between the VTEPs) and as VXLAN again after esp-decrypt.
    let mut r =
        pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(o.out.join(STAGES_FILE)).unwrap())
            .unwrap();
    let (mut encrypted, mut decrypted) = (0, 0);
    while let Some(b) = r.next_block() {
        let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() else {
            continue;
        };
        let p = p.into_owned();
        let name = format!("{:?}", r.packet_interface(&p).unwrap().options[0]);
        let d = &p.data;
        if name.contains("n1/esp-encrypt") {
            assert_eq!(
                (d[14 + 9], &d[26..34]),
                (50, &[198, 18, 0, 1, 198, 18, 0, 2][..])
            );
            encrypted += 1;
        }
        if name.contains("n2/esp-decrypt") {
            assert_eq!((d[14 + 9], &d[36..38]), (17, &4789u16.to_be_bytes()[..]));
            decrypted += 1;
        }
    }
    assert_eq!((encrypted, decrypted), (3, 3));
    assert!(
        frames_of(&o.out.join("n1-underlay.pcap")).is_empty(),
        "no plain VXLAN"
    );
    let esp = frames_of(&o.out.join("n1-underlay-esp.pcap"));
    assert_eq!(esp.len(), 3);
    assert_eq!(esp[0][14 + 9], 50, "IP protocol 50");
    let c21 = frames_of(&o.out.join("n2-c21.pcap"));
    assert_eq!(c21.len(), 3, "decrypted on n2");
    assert_eq!(c21[2], c11_frames()[2].1);
}

#[test]
fn connections_expire_on_the_inputs_clock() {
    let d = Dir::new("clock");
    let syn = c11_frames()[4].1.clone();
    let ping = c11_frames()[0].1.clone();
    let cfg = cluster_file(&d.0, &fixture());
    let json = |gap_secs: u64| {
        let input = d.0.join(format!("in-{gap_secs}.pcap"));
        write_pcap(
            &input,
            &[
                (T0, syn.clone()),
                (T0 + gap_secs * 1_000_000_000, ping.clone()),
            ],
        );
        let o = opts(&d.0, cfg.clone(), &input, &format!("out-{gap_secs}"));
        run_with(&o, quiet()).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(o.out.join("n1.json")).unwrap()).unwrap();
        v["conntrack"].as_array().unwrap().len()
    };
    // SYN_RECV lives 60 s (IPVS's timeout), on the pcap's time, not the machine's.
    assert_eq!(json(30), 1);
    assert_eq!(json(3600), 0);
}

#[test]
fn stepping_stops_at_each_stage_and_quit_ends_the_run() {
    let d = Dir::new("step");
    let input = d.0.join("c11.pcap");
    write_pcap(&input, &c11_frames());
    let cfg = cluster_file(&d.0, &fixture());
    let mut o = opts(&d.0, cfg, &input, "out");
    o.break_on = Some("tcp port 80".into());
    o.pcapng = true;
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let script = "step\nstep\nstep\nstep\nstep\nshow conntrack\nbogus\nnext\nquit\n";
    let console = Console {
        input: Box::new(std::io::Cursor::new(script)),
        out: Box::new(Shared(out.clone())),
        interactive: false,
    };
    let s = run_with(&o, console).unwrap();
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    // The first SYN: stopped at its receive, then after each of five stages; lb-nat shows
    // the DNAT with the headers before and after and the connection it made.
    assert!(text.contains("break 1: node n1"), "{text}");
    assert!(text.contains("n1 l2-parse"), "{text}");
    assert!(text.contains("n1 lb-nat"), "{text}");
    assert!(
        text.contains(
            "before   02:42:0a:00:09:0b > 02:42:0a:00:09:64 tcp 10.0.9.11:40000 > 10.0.9.100:80"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "after    02:42:0a:00:09:0b > 02:42:0a:00:09:0c tcp 10.0.9.11:40000 > 10.0.9.12:80"
        ),
        "{text}"
    );
    assert!(
        text.contains("SYN_RECV    10.0.9.11:40000"),
        "conntrack shows the connection: {text}"
    );
    assert!(text.contains("unknown command \"bogus\""), "{text}");
    // `next` ran the first SYN to the end; the second stopped at its receive; `quit` ended.
    assert!(text.contains("break 7: node n1, packet 2"), "{text}");
    assert!(
        !text.contains("l2-fwd"),
        "never stopped after lb-nat: {text}"
    );
    assert!(s.quit);
    assert_eq!(
        s.frames, 6,
        "the second SYN, stopped at, still ran; quit before the third"
    );
    // The per-stage capture has what ran of the marked packets: the first SYN's every step.
    let stages = read_capture(&o.out.join(STAGES_FILE)).unwrap();
    assert!(stages.len() >= 9, "{}", stages.len());
}

/// `examples/sim/c11.pcap` is `workload::demo_c11` (`VXMESH_UPDATE_EXAMPLES=1` writes it), and
/// `examples/sim/cluster.toml` the shared fixture: the example's input never drifts from them.
#[test]
fn the_shipped_example_input_is_the_workload() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sim");
    let frames: Vec<(u64, Vec<u8>)> = super::workload::demo_c11()
        .into_iter()
        .map(|(t, _, f)| (t, f))
        .collect();
    let d = Dir::new("shipped");
    let made = d.0.join("c11.pcap");
    write_pcap(&made, &frames);
    let made = std::fs::read(&made).unwrap();
    if std::env::var_os("VXMESH_UPDATE_EXAMPLES").is_some() {
        std::fs::write(dir.join("c11.pcap"), &made).unwrap();
    }
    assert!(
        std::fs::read(dir.join("c11.pcap")).unwrap() == made,
        "examples/sim/c11.pcap is not the workload: VXMESH_UPDATE_EXAMPLES=1 cargo test -p vxmesh --lib shipped"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("cluster.toml")).unwrap(),
        fixture(),
        "examples/sim/cluster.toml is tests/fixtures/cluster.toml without {{P}}"
    );
}
