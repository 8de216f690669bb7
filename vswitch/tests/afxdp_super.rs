//! The AF_XDP port's super-frame path on a real veth: in-order TCP segments of one flow reach
//! the container as one `sk_buff` (what the container's kernel sees, read by a packet socket
//! with a virtio-net header on its `eth0`), a super-frame handed to the port arrives whole, a
//! partial checksum is finished, and the rest goes, in order, through the TX ring. With
//! `super_frames` off, the run arrives one frame per segment. With `rx_super_frames`, a
//! super-frame the container sends reaches the port whole, and the ring's frames come with
//! their checksums in partial form.
//!
//! ```text
//!  node (netns)                                   c1 (netns)
//!  AfxdpPort on vh1 ─ TX ring / packet socket ══veth══ eth0 ─► AF_PACKET socket (PACKET_VNET_HDR)
//! ```
//!
//! Needs root (CI runs as root); without it the test says why and returns. Needs `ip`. The
//! namespaces carry a per-run prefix (`vxs<pid>-`), nothing is added to the root namespace,
//! every wait is bounded, no assertion is about time, and the lab deletes exactly the
//! namespaces it created, on failure too.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nslab::{in_netns, ip};
use vswitch::frames::{self, TcpFlags};
use vswitch::offload::Offload;
use vswitch::port::Port;
use vswitch::port::afxdp::{AfxdpConfig, AfxdpPort, XdpMode};
use vswitch::wire::{checksum, vnet};
use vswitch::{Batch, Mac};

const MTU: u16 = 1450;
const HOST_IF: &str = "vh1";
const CIF: &str = "eth0";
const SRC_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 12);
const DST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 11);
/// Segments in the run, and their payload (the MSS the super-frame carries).
const SEGMENTS: usize = 8;
const MSS: usize = 1000;
const SEQ: u32 = 0x1000_0000;
/// Bound on waiting for the frames at the container.
const WAIT: Duration = Duration::from_secs(5);
/// `ETH_P_ALL`, `ETH_P_IP`, `PACKET_VNET_HDR`, `PACKET_OUTGOING`.
const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_OUTGOING: u8 = 4;

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

/// A frame as the container's `eth0` received it: its virtio-net header and bytes.
struct Seen {
    vnet: [u8; vnet::HEADER_LEN],
    frame: Vec<u8>,
}

impl Seen {
    fn gso_type(&self) -> u8 {
        self.vnet[vnet::field::GSO_TYPE]
    }
    fn gso_size(&self) -> usize {
        usize::from(u16::from_le_bytes([self.vnet[4], self.vnet[5]]))
    }
    fn needs_csum(&self) -> bool {
        self.vnet[vnet::field::FLAGS] & vnet::F_NEEDS_CSUM != 0
    }
}

/// A packet socket on `eth0` of the calling thread's namespace that reads every frame with
/// its virtio-net header.
fn sniffer() -> OwnedFd {
    // SAFETY: plain socket(2), owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    assert!(raw >= 0, "packet socket: {}", io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: an int option, by pointer with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "PACKET_VNET_HDR: {}", io::Error::last_os_error());
    let name = std::ffi::CString::new(CIF).unwrap();
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0);
    // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set.
    let mut sll: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
    fd
}

/// Incoming IPv4 frames from [`SRC_IP`] the sniffer has, until `want` of them or [`WAIT`].
fn read_frames(fd: &OwnedFd, want: usize) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let start = Instant::now();
    while out.len() < want && start.elapsed() < WAIT {
        // SAFETY: all-zero is a valid sockaddr_ll to be filled in.
        let mut from: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are valid for writes of the lengths given.
        let rc = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if rc < 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let got = rc as usize;
        let frame = &buf[vnet::HEADER_LEN..got];
        let ipv4 = frame.len() >= 34 && frame[12..14] == ETH_P_IP.to_be_bytes();
        if from.sll_pkttype == PACKET_OUTGOING || !ipv4 || frame[26..30] != SRC_IP.octets() {
            continue;
        }
        out.push(Seen {
            vnet: buf[..vnet::HEADER_LEN].try_into().unwrap(),
            frame: frame.to_vec(),
        });
    }
    out
}

/// The batch: a UDP frame, a run of in-order TCP segments (the last pushed), a UDP frame with
/// its checksum left partial, and (`whole`) a TCP super-frame of another flow, as a TAP with
/// offloads hands them over. Returns it with the run's payload bytes, in order.
fn batch(src: Mac, dst: Mac, whole: bool) -> (Batch, Vec<u8>) {
    let mut b = Batch::with_buf_size(64, 16_384);
    let udp = frames::udp(src, dst, SRC_IP, DST_IP, 5000, 5001, b"before the run");
    b.push_frame(&udp).unwrap();
    let chunk = |k: usize| -> Vec<u8> { (0..MSS).map(|i| (k * 7 + i) as u8).collect() };
    let mut payload = Vec::new();
    for k in 0..SEGMENTS {
        let flags = if k + 1 == SEGMENTS {
            TcpFlags {
                psh: true,
                ..TcpFlags::ACK
            }
        } else {
            TcpFlags::ACK
        };
        let seq = SEQ.wrapping_add((k * MSS) as u32);
        let f = frames::tcp(
            src,
            dst,
            SRC_IP,
            DST_IP,
            40000,
            8080,
            flags,
            seq,
            1,
            &chunk(k),
        );
        b.push_frame(&f).unwrap();
        payload.extend_from_slice(&chunk(k));
    }
    // A partial checksum: the field holds the pseudo-header sum, the rest is left to the device.
    let mut partial = frames::udp(src, dst, SRC_IP, DST_IP, 5000, 5002, b"partial");
    let p = checksum::pseudo_sum_addrs(SRC_IP, DST_IP, 17, partial.len() - 34);
    partial[40..42].copy_from_slice(&p.to_be_bytes());
    b.push_frame(&partial).unwrap().meta.offload = Offload {
        needs_csum: true,
        csum_start: 34,
        csum_offset: 6,
        gso_size: 0,
    };
    if whole {
        let body: Vec<u8> = (0..3).flat_map(chunk).collect();
        let f = partial_tcp(src, dst, 40001, &body);
        b.push_frame(&f).unwrap().meta.offload = Offload {
            needs_csum: true,
            csum_start: 34,
            csum_offset: 16,
            gso_size: MSS as u16,
        };
    }
    (b, payload)
}

/// Opens the port on the host end (super-frames on or off), sends the batch, and returns what
/// the container received and the port's counters.
fn send(node: &str, c1: &str, super_frames: bool) -> (Vec<Seen>, Vec<(&'static str, u64)>) {
    let sniff = in_netns(c1, sniffer).join().unwrap().unwrap();
    let cfg = AfxdpConfig {
        super_frames,
        ..AfxdpConfig::new(HOST_IF, XdpMode::Drv)
    };
    let mut port = in_netns(node, move || AfxdpPort::open(&cfg))
        .join()
        .unwrap()
        .unwrap()
        .expect("opening the port");
    assert_eq!(port.super_frames(), super_frames);
    assert_eq!(port.offloads(), super_frames);
    let (src, dst) = (mac("02:42:0a:00:09:0c"), mac("02:42:0a:00:09:0b"));
    let (mut b, payload) = batch(src, dst, super_frames);
    let n = b.len();
    assert_eq!(port.tx_burst(&mut b), n, "{:?}", port.counters());
    // On: the UDP frame, the run, the partial one, the super-frame. Off: one each.
    let want = if super_frames { 4 } else { n };
    let seen = read_frames(&sniff, want);
    assert_eq!(seen.len(), want, "frames at the container");
    let hdr = 14 + 20 + 20;
    if super_frames {
        let run = &seen[1];
        assert_eq!(run.frame[hdr..], payload[..], "the run's payload, in order");
        assert_eq!(run.gso_type(), vnet::GSO_TCPV4);
        assert_eq!(run.gso_size(), MSS);
        // The IPv4 total length covers the whole run; the TCP flags are the last segment's.
        let total = u16::from_be_bytes([run.frame[16], run.frame[17]]);
        assert_eq!(usize::from(total), 40 + SEGMENTS * MSS);
        assert_eq!(run.frame[14 + 20 + 13], 0x18, "ACK|PSH");
        // The partial checksum arrives finished.
        let udp = &seen[2].frame[34..];
        assert!(!seen[2].needs_csum());
        let p = checksum::pseudo_sum_addrs(SRC_IP, DST_IP, 17, udp.len());
        assert_eq!(checksum::add(p, checksum::sum(udp)), 0xffff, "UDP checksum");
        // The super-frame arrives whole, still to be segmented or summed by whoever needs it.
        let whole = &seen[3];
        assert_eq!(whole.gso_type(), vnet::GSO_TCPV4);
        assert_eq!(whole.gso_size(), MSS);
        assert_eq!(whole.frame.len(), hdr + 3 * MSS);
        assert!(whole.needs_csum());
    } else {
        for s in &seen[1..=SEGMENTS] {
            assert_eq!(s.gso_type(), vnet::GSO_NONE);
            assert_eq!(s.frame.len(), hdr + MSS);
        }
        assert!(seen[want - 1].frame.ends_with(b"partial"));
    }
    // The order: the UDP frame before the run first.
    assert_eq!(seen[0].gso_type(), vnet::GSO_NONE);
    assert!(seen[0].frame.ends_with(b"before the run"));
    (seen, port.counters())
}

/// Send `frame` from the container's `eth0` behind virtio-net header `h`, as its kernel's TCP
/// would hand a super-frame (or a frame with a partial checksum) to the veth.
fn send_from_container(fd: &OwnedFd, h: vnet::Repr, frame: &[u8]) {
    let mut buf = h.to_bytes().to_vec();
    buf.extend_from_slice(frame);
    // SAFETY: `buf` is valid for reads of its length; the socket is bound to eth0.
    let rc = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    assert_eq!(
        rc,
        buf.len() as isize,
        "send: {}",
        io::Error::last_os_error()
    );
}

/// The container keeps its offloads: a TCP super-frame reaches the port whole with its MSS,
/// through the packet socket beside the ring, and the ring's frames come with their checksums
/// in partial form, whether the container left them partial or complete.
fn receive_super_frames(node: &str, c1: &str) {
    let sock = in_netns(c1, sniffer).join().unwrap().unwrap();
    let cfg = AfxdpConfig {
        rx_super_frames: true,
        ..AfxdpConfig::new(HOST_IF, XdpMode::Auto)
    };
    // Forwarding on for the interface beforehand (as on a node with ip_forward=1), so that
    // putting it back is seen.
    let on = format!("net.ipv4.conf.{HOST_IF}.forwarding=1");
    ip(&["netns", "exec", node, "sysctl", "-qw", &on]);
    let mut port = in_netns(node, move || AfxdpPort::open(&cfg))
        .join()
        .unwrap()
        .unwrap()
        .expect("opening the port");
    assert_eq!(
        port.mode(),
        XdpMode::Skb,
        "generic XDP leaves the peer's TSO on"
    );
    // Each flow steered to one CPU, on the node's own interface (read through its own sysfs),
    // and IPv4 forwarding off there.
    let read = |path: &str| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", node, "cat", path])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().replace(',', "")
    };
    let rps_path = format!("/sys/class/net/{HOST_IF}/queues/rx-0/rps_cpus");
    let fwd_path = format!("/proc/sys/net/ipv4/conf/{HOST_IF}/forwarding");
    let rps = || u64::from_str_radix(&read(&rps_path), 16).expect("rps_cpus");
    assert_ne!(rps(), 0, "RPS on");
    assert_eq!(read(&fwd_path), "0", "forwarding off");
    let (src, dst) = (mac("02:42:0a:00:09:0c"), mac("02:42:0a:00:09:0b"));
    // The super-frame: three segments' worth, its checksum partial.
    let body: Vec<u8> = (0..3 * MSS).map(|i| (i % 251) as u8).collect();
    let sf = partial_tcp(src, dst, 40002, &body);
    send_from_container(
        &sock,
        vnet::Repr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: 54,
            gso_size: MSS as u16,
            csum_start: 34,
            csum_offset: 16,
        },
        &sf,
    );
    // A UDP frame with its checksum left partial, and one with it complete.
    let mut partial = frames::udp(src, dst, SRC_IP, DST_IP, 5000, 5003, b"left partial");
    let p = checksum::pseudo_sum_addrs(SRC_IP, DST_IP, 17, partial.len() - 34);
    partial[40..42].copy_from_slice(&p.to_be_bytes());
    send_from_container(
        &sock,
        vnet::Repr {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..vnet::Repr::default()
        },
        &partial,
    );
    let complete = frames::udp(src, dst, SRC_IP, DST_IP, 5000, 5004, b"complete");
    send_from_container(&sock, vnet::Repr::default(), &complete);

    let mut got: Vec<(Vec<u8>, Offload)> = Vec::new();
    let start = Instant::now();
    while got.len() < 3 && start.elapsed() < WAIT {
        let mut b = Batch::with_buf_size(64, vswitch::offload::GSO_BUF_SIZE);
        port.rx_burst(&mut b);
        for p in b.pkts() {
            // Only our frames (the kernel may send its own, IPv6 router solicitations).
            if p.len() >= 34 && p.data()[26..30] == SRC_IP.octets() {
                got.push((p.data().to_vec(), p.meta.offload));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = port.counters();
    assert_eq!(got.len(), 3, "frames at the port: {c:?}");
    let (whole, o) = got
        .iter()
        .find(|(f, _)| f.len() > 1500)
        .expect("the super-frame, whole");
    assert_eq!(whole.len(), sf.len());
    assert_eq!(whole[54..], body[..], "its payload");
    assert_eq!(usize::from(o.gso_size), MSS);
    assert!(o.needs_csum);
    for (f, o) in got.iter().filter(|(f, _)| f.len() < 1500) {
        let (mut f, mut o) = (f.clone(), *o);
        assert!(o.needs_csum, "the ring's frame is in partial form");
        vswitch::offload::finish_checksum(&mut f, &mut o);
        let udp = &f[34..];
        let p = checksum::pseudo_sum_addrs(SRC_IP, DST_IP, 17, udp.len());
        assert_eq!(checksum::add(p, checksum::sum(udp)), 0xffff, "UDP checksum");
    }
    assert_eq!(counter(&c, "rx_gso_frames"), 1, "{c:?}");
    assert!(counter(&c, "rx_csum_partial") >= 2, "{c:?}");
    assert_eq!(counter(&c, "rx_super_lost"), 0);
    assert_eq!(counter(&c, "rx_bad_vnet_hdr"), 0);
    // Closed, the port puts the interface back as it found it.
    in_netns(node, move || drop(port)).join().unwrap().unwrap();
    assert_eq!(rps(), 0, "RPS put back");
    assert_eq!(read(&fwd_path), "1", "forwarding put back");
}

/// A TCP frame (SRC_IP -> DST_IP:8080, from `sport`, at SEQ) carrying `body`, its checksum in
/// partial form: the field holds the pseudo-header sum.
fn partial_tcp(src: Mac, dst: Mac, sport: u16, body: &[u8]) -> Vec<u8> {
    let mut f = frames::tcp(
        src,
        dst,
        SRC_IP,
        DST_IP,
        sport,
        8080,
        TcpFlags::ACK,
        SEQ,
        1,
        body,
    );
    let p = checksum::pseudo_sum_addrs(SRC_IP, DST_IP, 6, f.len() - 34);
    f[50..52].copy_from_slice(&p.to_be_bytes());
    f
}

fn counter(c: &[(&'static str, u64)], name: &str) -> u64 {
    c.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap()
}

#[test]
fn a_run_of_segments_reaches_the_container_as_one_super_frame() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping afxdp_super: it builds network namespaces, veths and XDP (root)");
        return;
    }
    let mut lab = nslab::Lab::new(format!("vxs{}-", std::process::id()));
    let node = lab.add_netns("node");
    let c1 = lab.add_netns("c1");
    let mtu = MTU.to_string();
    ip(&[
        "-n", &node, "link", "add", HOST_IF, "type", "veth", "peer", "name", CIF, "netns", &c1,
    ]);
    ip(&["-n", &node, "link", "set", HOST_IF, "mtu", &mtu, "up"]);
    ip(&["-n", &c1, "link", "set", CIF, "mtu", &mtu, "up"]);

    let (_, c) = send(&node, &c1, true);
    assert_eq!(counter(&c, "tx_gro_frames"), 1, "{c:?}");
    assert_eq!(counter(&c, "tx_gro_segments"), SEGMENTS as u64);
    assert_eq!(counter(&c, "tx_gso_frames"), 1);
    assert_eq!(counter(&c, "tx_csum_finished"), 1);
    assert_eq!(counter(&c, "tx_packets"), SEGMENTS as u64 + 3);
    assert_eq!(counter(&c, "tx_packet_errors"), 0);

    // The port is closed (its XDP link with it): the same interface again, without.
    let (_, c) = send(&node, &c1, false);
    assert_eq!(counter(&c, "tx_gro_frames"), 0);
    assert_eq!(counter(&c, "tx_csum_finished"), 0);
    assert_eq!(counter(&c, "tx_packets"), SEGMENTS as u64 + 2);

    receive_super_frames(&node, &c1);
}
