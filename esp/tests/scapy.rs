//! Interop with an independent ESP implementation: scapy's `SecurityAssociation` (AES-GCM,
//! transport mode) decrypts what `esp-encrypt` sends, and `esp-decrypt` accepts what scapy
//! encrypts, with the SA key, salt and SPI of vxmesh's derivation.
//!
//! Needs python3 with scapy (Debian `python3-scapy`, which scripts/test.sh installs) and its
//! `cryptography`. Without them the test fails under `CI=true` and is skipped (with a message)
//! otherwise.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;

use esp::{EspSas, Key, SaMaterial, derive, stages};
use vswitch::stage::{StageStats, mask_of, run_stage};
use vswitch::{Batch, Env, FdbConfig, Next};

const N1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const EPOCH: u32 = 1_765_000_000;

/// A python3 that imports scapy's IPsec layer (the PATH's first, then Debian's own, which is
/// where `python3-scapy` installs when the PATH's python3 is another one).
fn python_with_scapy() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import scapy.layers.ipsec, cryptography"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A VXLAN datagram with an inner frame of `len` bytes.
fn vxlan(len: usize, fill: u8) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0x10, 0x01, 0];
    v.extend((0..len).map(|i| fill.wrapping_add((i as u8).wrapping_mul(7))));
    v
}

/// The temporary folder of this run (removed on drop, also on failure).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("vxmesh-esp-scapy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The SA's parameters as the script reads them.
fn sa_line(m: &SaMaterial) -> String {
    format!("{} {} {}\n", m.spi, hex(m.key()), hex(m.salt()))
}

const SCRIPT: &str = r#"
import sys
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import SecurityAssociation, ESP
from scapy.packet import Raw

d = sys.argv[1]
def sa_of(name):
    spi, key, salt = open(f"{d}/{name}").read().split()
    return SecurityAssociation(ESP, spi=int(spi), crypt_algo='AES-GCM',
                               crypt_key=bytes.fromhex(key) + bytes.fromhex(salt), auth_algo='NULL')

# vxmesh -> scapy: decrypt each ESP packet (behind the IPv4 header the kernel would add)
sa = sa_of("sa_1to2")
with open(f"{d}/decrypted", "w") as out:
    for line in open(f"{d}/sealed"):
        esp = bytes.fromhex(line.strip())
        pkt = IP(bytes(IP(src="198.18.0.1", dst="198.18.0.2", proto=50) / Raw(esp)))
        dec = sa.decrypt(pkt)
        raw = bytes(dec)
        out.write(f"{dec.proto} {raw[dec.ihl * 4:].hex()}\n")

# scapy -> vxmesh: encrypt each VXLAN datagram, explicit IV = epoch || seq
sa = sa_of("sa_2to1")
epoch = int(open(f"{d}/epoch").read())
with open(f"{d}/encrypted", "w") as out:
    for seq, line in enumerate(open(f"{d}/plain"), start=1):
        vx = bytes.fromhex(line.strip())
        p = IP(src="198.18.0.2", dst="198.18.0.1") / UDP(sport=4789, dport=4789, chksum=0) / Raw(vx)
        iv = epoch.to_bytes(4, "big") + seq.to_bytes(4, "big")
        e = sa.encrypt(p, seq_num=seq, iv=iv)
        out.write(bytes(e).hex() + "\n")
"#;

fn run_script(py: &str, dir: &Path) {
    let out = Command::new(py)
        .args(["-c", SCRIPT])
        .arg(dir)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "scapy script failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scapy_decrypts_what_vxmesh_sends_and_vxmesh_opens_what_scapy_sends() {
    let Some(py) = python_with_scapy() else {
        let why = "python3 with scapy (Debian python3-scapy; scripts/test.sh installs it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("needs {why}");
        }
        eprintln!("skipped: needs {why}");
        return;
    };
    let key = Key::from_bytes(core::array::from_fn(|i| 0x90 ^ i as u8));
    let peers = [N1, N2];
    let mut sas1 = EspSas::new(N1);
    sas1.set(std::slice::from_ref(&key), &peers, EPOCH);
    let (mut enc1, mut dec1) = stages(sas1);
    let sizes = [0usize, 1, 2, 3, 4, 5, 50, 1450 + 14];
    let plain: Vec<Vec<u8>> = sizes.iter().map(|&n| vxlan(n, n as u8)).collect();

    // vxmesh (n1) encrypts toward n2
    let mut env = Env::new(FdbConfig::default());
    let mut batch = Batch::new(plain.len());
    for vx in &plain {
        batch.push_frame(vx).unwrap().meta.peer = Some(SocketAddrV4::new(N2, 4789));
    }
    let mut st = StageStats::for_stage(&enc1);
    run_stage(
        &mut enc1,
        &mut st,
        &mut batch,
        &mut env,
        mask_of(plain.len()),
    );
    assert_eq!(st.cont, plain.len() as u64);

    let dir = TempDir::new();
    let write = |name: &str, s: String| std::fs::write(dir.0.join(name), s).unwrap();
    write("sa_1to2", sa_line(&derive(&key, N1, N2)));
    write("sa_2to1", sa_line(&derive(&key, N2, N1)));
    write("epoch", EPOCH.to_string());
    write(
        "sealed",
        batch.pkts().iter().map(|p| hex(p.data()) + "\n").collect(),
    );
    write("plain", plain.iter().map(|p| hex(p) + "\n").collect());
    run_script(py, &dir.0);

    // scapy's plaintext: next header 17, the UDP header vxmesh wrote, then the VXLAN datagram
    let decrypted = std::fs::read_to_string(dir.0.join("decrypted")).unwrap();
    let lines: Vec<&str> = decrypted.lines().collect();
    assert_eq!(lines.len(), plain.len());
    for (line, vx) in lines.iter().zip(&plain) {
        let (proto, hexed) = line.split_once(' ').unwrap();
        assert_eq!(proto, "17");
        let udp = unhex(hexed);
        let len = (8 + vx.len()) as u16;
        let want_hdr = [0x12, 0xb5, 0x12, 0xb5, (len >> 8) as u8, len as u8, 0, 0];
        assert_eq!(&udp[..8], &want_hdr);
        assert_eq!(&udp[8..], &vx[..]);
    }

    // vxmesh (n1) decrypts what scapy (as n2) encrypted: the raw socket's view, outer IPv4 first
    let encrypted = std::fs::read_to_string(dir.0.join("encrypted")).unwrap();
    let mut rx = Batch::new(plain.len());
    for line in encrypted.lines() {
        rx.push_frame(&unhex(line)).unwrap();
    }
    assert_eq!(rx.len(), plain.len());
    let mut st = StageStats::for_stage(&dec1);
    run_stage(&mut dec1, &mut st, &mut rx, &mut env, mask_of(plain.len()));
    for (p, vx) in rx.pkts().iter().zip(&plain) {
        assert_eq!(p.meta.next, Next::Continue, "{:?}", st.drops);
        assert_eq!(p.data(), &vx[..]);
        assert_eq!(p.meta.peer, Some(SocketAddrV4::new(N2, 4789)));
    }
    let inbound = dec1.list();
    assert_eq!(
        (inbound[0].epoch, inbound[0].seq),
        (EPOCH, plain.len() as u32)
    );
}
