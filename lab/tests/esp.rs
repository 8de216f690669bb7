//! Encrypted networks end to end (issue 18, SPEC.md "Encrypted networks"): two `vxmesh run`
//! nodes in a namespace lab with the shared fixture's plain network `appnet` and an encrypted
//! one, `secnet` (VNI 4098: an AF_XDP container on n1, a TAP container on n2, a service), and
//! an independent ESP implementation, scapy's `SecurityAssociation`, on the underlay:
//!
//! 1. Both networks carry traffic; tshark on the underlay (n1's bridge port) sees `secnet` only as ESP and
//!    `appnet` as VXLAN (VNI 4097).
//! 2. scapy decrypts what n1 sent (the SA key derived from the configured key as the `esp`
//!    crate documents) and finds VXLAN VNI 4098 around s11's ping inside.
//! 3. Plain VXLAN for VNI 4098 injected from n2's namespace is dropped and counted
//!    (`drop_plain_on_encrypted`), and a captured ESP packet sent again is dropped as a replay.
//! 4. iperf3 and the service's VIP work over the encrypted network.
//! 5. Key rotation under a continuous ping (add the new key second, reload both; move it first,
//!    reload both; remove the old one, reload both): no ping lost, no ICV or SPI failure.
//!    Then the transport moves to ESP in UDP (RFC 3948, port 4500) the same way, under a ping.
//! 6. scapy encrypts an echo request with the new key; n1 decrypts it and s11 answers.
//! 7. No key appears in `stats`, `network inspect` (which shows key ids) or the nodes' logs.
//!
//! Privileged: without root the test says so and passes. Namespaces carry a per-run prefix
//! (`vxe{pid}-`) and are removed by name when `Running` drops, also when a check panics; the
//! processes it starts (ping, iperf3, tshark) are waited for or killed by PID.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{HttpServer, Running, http_get, vxmesh_exe};

/// Two keys (base64 of 16 key and 4 salt bytes each): fixed, so a failure can be replayed.
const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhM=";
const K2: &str = "FBUWFxgZGhscHR4fICEiIyQlJic=";

fn run_in(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec")
}

fn ok_in(ns: &str, args: &[&str]) -> String {
    let o = run_in(ns, args);
    assert!(
        o.status.success(),
        "{ns}: {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A process killed by its PID when dropped (a check failed before it was waited for).
struct Reaped(Option<Child>);

impl Reaped {
    fn wait(mut self) -> Output {
        self.0.take().expect("a child").wait_with_output().unwrap()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// tshark in `ns`, returned once it captures (it says so on stderr; its start takes a while).
fn tshark_in(ns: &str, args: &[&str]) -> Reaped {
    use std::io::{BufRead, BufReader};
    let mut r = spawn_in(ns, &[&["tshark"][..], args].concat());
    let err = r.0.as_mut().and_then(|c| c.stderr.take()).expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("Capturing on")
                && let Some(t) = tx.take()
            {
                let _ = t.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("tshark in {ns} did not start capturing"));
    r
}

fn spawn_in(ns: &str, args: &[&str]) -> Reaped {
    Reaped(Some(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    ))
}

/// The python side: derive an SA as the `esp` crate does, and scapy for the rest.
const PY_COMMON: &str = r#"
import base64, socket, struct, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from scapy.all import IP, UDP, Ether, ICMP, raw, rdpcap, send, conf
from scapy.layers.ipsec import SecurityAssociation, ESP
from scapy.layers.vxlan import VXLAN
conf.verb = 0

def material(key_b64, src, dst):
    ks = base64.b64decode(key_b64)
    okm = HKDF(algorithm=hashes.SHA256(), length=24, salt=b"vxmesh-esp-v1",
               info=socket.inet_aton(src) + socket.inet_aton(dst)).derive(ks)
    spi = int.from_bytes(okm[20:24], "big")
    if spi < 256:
        spi |= 0x100
    return spi, okm[:16] + okm[16:20]

def sa(key_b64, src, dst, **kw):
    spi, key = material(key_b64, src, dst)
    return spi, SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key,
                                    auth_algo="NULL", **kw)
"#;

/// Debian's python3 (with python3-scapy), not a user's python3 earlier on PATH (pyenv).
fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn python(ns: &str, body: &str, args: &[&str]) -> String {
    let script = format!("{PY_COMMON}\n{body}");
    let mut a = vec![python3(), "-c", script.as_str()];
    a.extend_from_slice(args);
    ok_in(ns, &a)
}

fn counter(run: &Running, node: &str, stage: &str, name: &str) -> u64 {
    run.stage_counter(node, stage, name)
        .unwrap_or_else(|e| panic!("{node} {stage} {name}: {e:#}"))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waited for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster(prefix: &str, keys: &[&str]) -> String {
    cluster_over(prefix, keys, "esp")
}

/// [`cluster`] with ESP over `transport` ("esp": IP protocol 50; "udp": ESP in UDP 4500).
fn cluster_over(prefix: &str, keys: &[&str], transport: &str) -> String {
    let mut f = Fixture::new(prefix);
    f.push(
        "network",
        r#"name = "secnet"
vni = 4098
subnet = "10.0.10.0/24"
encrypted = true"#,
    );
    f.push(
        "endpoint",
        &format!(
            r#"name = "s11"
node = "n1"
network = "secnet"
ip = "10.0.10.11"
attach = "afxdp:vs11"
netns = "{prefix}s11""#
        ),
    );
    f.push(
        "endpoint",
        &format!(
            r#"name = "s21"
node = "n2"
network = "secnet"
ip = "10.0.10.21"
attach = "tap:eth0"
netns = "{prefix}s21""#
        ),
    );
    f.push(
        "service",
        r#"name = "sweb"
network = "secnet"
vip = "10.0.10.100"
backends = ["s21"]
ports = [{ protocol = "tcp", port = 80 }]"#,
    );
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "{}\n[encryption]\nkeys = [{}]\ntransport = {transport:?}\n",
        f.text(),
        keys.join(", ")
    )
}

/// Write the cluster with `keys` and reload both nodes.
fn reload(run: &Running, prefix: &str, keys: &[&str]) {
    std::fs::write(&run.config, cluster(prefix, keys)).unwrap();
    for n in ["n1", "n2"] {
        let out = run.ctl_ok(n, &["reload"]).unwrap();
        assert!(out.contains("encryption"), "{n}: {out}");
    }
}

fn tshark_count(pcap: &Path, filter: &str) -> usize {
    let o = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", filter])
        .output()
        .expect("tshark");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().count()
}

#[test]
fn encrypted_network_end_to_end() {
    if !is_root() {
        eprintln!("skipped: needs root (namespaces, AF_XDP, raw sockets)");
        return;
    }
    let exe = vxmesh_exe().unwrap();
    let prefix = format!("vxe{}-", std::process::id());
    let ns = |s: &str| format!("{prefix}{s}");
    let run = Running::start(&exe, &prefix, &cluster(&prefix, &[K1]), &["n1", "n2"])
        .unwrap_or_else(|e| panic!("starting the lab: {e:#}"));
    let dir = std::env::temp_dir().join(format!("{prefix}esp"));
    std::fs::create_dir_all(&dir).unwrap();
    struct Gone<'a>(&'a Path);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _gone = Gone(&dir);

    // 1. Both networks work; the wire shows secnet only as ESP.
    ok_in(&ns("s11"), &["ping", "-c", "2", "-W", "2", "10.0.10.21"]);
    ok_in(&ns("c11"), &["ping", "-c", "2", "-W", "2", "10.0.9.21"]);
    let pcap = dir.join("underlay.pcap");
    let pcap_s = pcap.to_str().unwrap().to_string();
    let cap = tshark_in(
        &run.lab.underlay_netns(),
        &["-i", "n0", "-a", "duration:4", "-w", &pcap_s],
    );
    // Five each: tshark may still miss the first packets after saying it captures.
    ok_in(&ns("s11"), &["ping", "-c", "5", "-i", "0.2", "10.0.10.21"]);
    ok_in(&ns("c11"), &["ping", "-c", "5", "-i", "0.2", "10.0.9.21"]);
    let o = cap.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        tshark_count(&pcap, "vxlan.vni == 4098"),
        0,
        "secnet in clear"
    );
    let esp = tshark_count(&pcap, "esp");
    assert!(
        esp >= 6,
        "secnet's pings as ESP: {esp} of {} packets; {}",
        tshark_count(&pcap, "frame"),
        String::from_utf8_lossy(
            &Command::new("tshark")
                .arg("-r")
                .arg(&pcap)
                .output()
                .unwrap()
                .stdout
        )
    );
    assert!(
        tshark_count(&pcap, "vxlan.vni == 4097 && icmp") >= 6,
        "appnet's pings as VXLAN"
    );

    // The node's own captures: ESP on the wire, and the same decrypted (plain VXLAN).
    for (decrypted, want_esp) in [(false, true), (true, false)] {
        let file = dir.join(format!("node-{decrypted}.pcap"));
        let mut args = vec!["capture", "--port", "underlay-esp", "--count", "4", "-w"];
        args.push(file.to_str().unwrap());
        if decrypted {
            args.push("--decrypted");
        }
        let (exe2, ctl) = (exe.clone(), run.control("n1"));
        let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let cap = std::thread::spawn(move || {
            Command::new(exe2)
                .arg("--control")
                .arg(ctl)
                .args(argv)
                .output()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        ok_in(&ns("s11"), &["ping", "-c", "3", "-i", "0.2", "10.0.10.21"]);
        let o = cap.join().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let esp = tshark_count(&file, "esp");
        let plain = tshark_count(&file, "vxlan.vni == 4098 && icmp");
        assert_eq!(
            (esp >= 4, plain >= 4),
            (want_esp, !want_esp),
            "{esp} {plain}"
        );
    }

    // 2. scapy decrypts what n1 sent to n2.
    let out = python(
        &ns("n1"),
        r#"
spi, s = sa(sys.argv[1], "198.18.0.1", "198.18.0.2")
n = 0
for p in rdpcap(sys.argv[2]):
    if IP in p and p[IP].proto == 50 and p[IP].src == "198.18.0.1":
        assert p[ESP].spi == spi, (hex(p[ESP].spi), hex(spi))
        inner = s.decrypt(p[IP])
        u = UDP(raw(inner[IP].payload))
        assert u.dport == 4789, u.dport
        vx = VXLAN(raw(u.payload))
        assert vx.vni == 4098, vx.vni
        if ICMP in vx and vx[IP].src == "10.0.10.11":
            n += 1
print("decrypted", n)
"#,
        &[K1, &pcap_s],
    );
    let n: usize = out
        .trim()
        .strip_prefix("decrypted ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(n >= 3, "{out}");

    // 3. Plain VXLAN for the encrypted VNI, and a replayed ESP packet, from n2's side.
    let plain = counter(&run, "n1", "vxlan-decap", "drop_plain_on_encrypted");
    python(
        &ns("n2"),
        r#"
send(IP(src="198.18.0.2", dst="198.18.0.1") / UDP(sport=4789, dport=4789) / VXLAN(flags=0x08, vni=4098)
     / Ether(src="02:42:0a:00:0a:15", dst="02:42:0a:00:0a:0b")
     / IP(src="10.0.10.21", dst="10.0.10.11") / ICMP(id=0x5555), count=3)
"#,
        &[],
    );
    let start = Instant::now();
    while counter(&run, "n1", "vxlan-decap", "drop_plain_on_encrypted") < plain + 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "drop_plain_on_encrypted: {}",
            run.ctl_ok("n1", &["stats"]).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let replay = counter(&run, "n1", "esp-decrypt", "drop_esp_replay");
    python(
        &ns("n2"),
        r#"
sent = 0
for p in rdpcap(sys.argv[1]):
    if IP in p and p[IP].proto == 50 and p[IP].src == "198.18.0.2" and sent < 2:
        send(IP(raw(p[IP])))
        sent += 1
assert sent == 2
"#,
        &[&pcap_s],
    );
    wait_for("drop_esp_replay", || {
        counter(&run, "n1", "esp-decrypt", "drop_esp_replay") >= replay + 2
    });
    // The network goes on working after both.
    ok_in(&ns("s11"), &["ping", "-c", "1", "-W", "2", "10.0.10.21"]);

    // 4. iperf3 and the VIP over the encrypted network.
    let server = spawn_in(&ns("s21"), &["iperf3", "-s", "-1", "-p", "5201"]);
    std::thread::sleep(Duration::from_millis(500));
    let out = ok_in(
        &ns("s11"),
        &["iperf3", "-c", "10.0.10.21", "-t", "2", "-J", "-p", "5201"],
    );
    drop(server.wait());
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    eprintln!("iperf3 over secnet: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 0.0, "{out}");
    let _web = HttpServer::start(&ns("s21"), 80, "s21").unwrap();
    let body = http_get(&ns("s11"), SocketAddr::from(([10, 0, 10, 100], 80))).unwrap();
    assert!(body.contains("s21"), "{body}");

    // 5. Rotation under a continuous ping: nothing lost, nothing refused.
    let pinger = spawn_in(
        &ns("s11"),
        &["ping", "-i", "0.01", "-c", "600", "-W", "1", "10.0.10.21"],
    );
    std::thread::sleep(Duration::from_millis(500));
    for keys in [&[K1, K2][..], &[K2, K1][..], &[K2][..]] {
        reload(&run, &prefix, keys);
        std::thread::sleep(Duration::from_millis(800));
    }
    let o = pinger.wait();
    let text = String::from_utf8_lossy(&o.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("{text}"));
    eprintln!("ping during the rotation: {summary}");
    assert!(summary.contains("600 received"), "{summary}");
    for n in ["n1", "n2"] {
        for d in [
            "drop_esp_unknown_spi",
            "drop_esp_bad_icv",
            "drop_esp_too_old",
        ] {
            assert_eq!(counter(&run, n, "esp-decrypt", d), 0, "{n} {d}");
        }
        assert_eq!(counter(&run, n, "esp-encrypt", "drop_esp_no_sa"), 0, "{n}");
    }

    // 5b. The transport moves to ESP in UDP (port 4500) under a ping: nothing lost, and the
    // wire then carries secnet only as UDP 4500 (still never as plain VXLAN).
    let pinger = spawn_in(
        &ns("s11"),
        &["ping", "-i", "0.01", "-c", "300", "-W", "1", "10.0.10.21"],
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&run.config, cluster_over(&prefix, &[K2], "udp")).unwrap();
    for n in ["n1", "n2"] {
        let out = run.ctl_ok(n, &["reload"]).unwrap();
        assert!(out.contains("transport udp"), "{n}: {out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let pcap_udp = dir.join("udp.pcap");
    let cap = tshark_in(
        &run.lab.underlay_netns(),
        &[
            "-i",
            "n0",
            "-a",
            "duration:1",
            "-w",
            pcap_udp.to_str().unwrap(),
        ],
    );
    drop(cap.wait());
    let o = pinger.wait();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("300 received"), "{text}");
    assert!(tshark_count(&pcap_udp, "udp.port == 4500 && esp") >= 20);
    assert_eq!(tshark_count(&pcap_udp, "ip.proto == 50"), 0);
    assert_eq!(tshark_count(&pcap_udp, "vxlan.vni == 4098"), 0);
    // scapy's ESP in UDP (RFC 3948) decrypts them too.
    let out = python(
        &ns("n1"),
        r#"
spi, s = sa(sys.argv[1], "198.18.0.1", "198.18.0.2", nat_t_header=UDP(sport=4500, dport=4500))
n = 0
for p in rdpcap(sys.argv[2]):
    if UDP in p and p[IP].src == "198.18.0.1" and p[UDP].dport == 4500:
        inner = s.decrypt(p[IP])
        vx = VXLAN(raw(UDP(raw(inner[IP].payload)).payload))
        assert vx.vni == 4098, vx.vni
        n += 1
print("decrypted", n)
"#,
        &[K2, pcap_udp.to_str().unwrap()],
    );
    assert!(
        out.trim()
            .strip_prefix("decrypted ")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n >= 10),
        "{out}"
    );

    // 6. scapy encrypts with the key in force; n1 takes it and s11 answers.
    let decrypted = counter(&run, "n1", "esp-decrypt", "decrypted");
    let sniff = tshark_in(
        &ns("s11"),
        &[
            "-i",
            "eth0",
            "-a",
            "duration:6",
            "-c",
            "2",
            "-f",
            "icmp and icmp[4:2] == 0x7777",
            "-T",
            "fields",
            "-e",
            "icmp.type",
        ],
    );
    python(
        &ns("n2"),
        r#"
spi, s = sa(sys.argv[1], "198.18.0.2", "198.18.0.1")
inner = (IP(src="198.18.0.2", dst="198.18.0.1") / UDP(sport=4789, dport=4789) / VXLAN(flags=0x08, vni=4098)
         / Ether(src="02:42:0a:00:0a:15", dst="02:42:0a:00:0a:0b")
         / IP(src="10.0.10.21", dst="10.0.10.11") / ICMP(id=0x7777, seq=1))
# A later epoch than n2's own: n1's window moves to it (a restarted sender, to n1).
epoch, seq = 0xfffffff0, 1
send(s.encrypt(inner, seq_num=seq, iv=struct.pack("!II", epoch, seq)))
"#,
        &[K2],
    );
    let o = sniff.wait();
    let types = String::from_utf8_lossy(&o.stdout);
    assert!(
        types.lines().any(|l| l.trim() == "8") && types.lines().any(|l| l.trim() == "0"),
        "s11 got the request and answered: {types:?}"
    );
    assert!(counter(&run, "n1", "esp-decrypt", "decrypted") > decrypted);

    // 7. Keys never shown: key ids only.
    let mut shown = String::new();
    for n in ["n1", "n2"] {
        shown += &run.ctl_ok(n, &["stats"]).unwrap();
        shown += &run.ctl_ok(n, &["stats", "--json"]).unwrap();
        let inspect = run.ctl_ok(n, &["network", "inspect", "secnet"]).unwrap();
        assert!(inspect.contains("encrypted"), "{inspect}");
        shown += &inspect;
        shown += &run
            .ctl_ok(n, &["network", "inspect", "secnet", "--json"])
            .unwrap();
    }
    shown += &run.log_tail();
    for k in [K1, K2] {
        let raw = base64_decode(k);
        assert!(!shown.contains(k), "key {k} shown");
        assert!(!shown.contains(&hex(&raw)), "key {k} shown in hex");
        assert!(!shown.contains(&hex(&raw[..16])), "key {k} shown in hex");
    }
    eprintln!(
        "esp-decrypt on n1: {} decrypted",
        counter(&run, "n1", "esp-decrypt", "decrypted")
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The test's own decoder for its two fixed keys (standard alphabet, padded).
fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
