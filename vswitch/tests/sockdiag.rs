//! `sock_diag` against real UDP sockets, in a network namespace this test makes: a socket
//! nobody reads fills up and drops, and the dump made from outside the namespace (the netlink
//! socket was made inside it) shows the queued memory reaching the buffer and the drops. A
//! lookup of a socket the dump found answers for that socket alone, and says it is gone once
//! it is closed. What a dump and a lookup cost here is printed (`--nocapture`), not checked.
//!
//! Needs root (CI runs as root); without it the test says why and returns. Needs `ip`
//! (iproute2). The namespace carries a per-run prefix (`vxd<pid>-`); the datagrams go over its
//! own loopback; nothing is added to the root namespace; the guard deletes the namespace, on
//! failure too.

use std::net::UdpSocket;

use nslab::{has_tool, in_netns};
use vswitch::port::sockdiag::UdpDiag;

#[test]
fn a_full_socket_shows_its_memory_and_drops_from_outside_its_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping sockdiag: it makes a network namespace (root)");
        return;
    }
    assert!(has_tool("ip"), "the sockdiag test needs `ip` (iproute2)");
    let mut lab = nslab::Lab::new(format!("vxd{}-", std::process::id()));
    let ns = lab.add_netns("c");
    let mut diag = UdpDiag::open_in(&ns).expect("a sock_diag socket in the namespace");
    // The sockets live inside; this thread stays where it is.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<u16>();
    let (six_tx, six) = std::sync::mpsc::channel::<u16>();
    let inside = in_netns(&ns, move || {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = sink.local_addr().expect("addr").port();
        let src = UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Far more than any receive buffer holds: the socket fills and drops.
        for _ in 0..5000 {
            let _ = src.send_to(&[0u8; 64], ("127.0.0.1", port));
        }
        ready_tx.send(port).expect("report");
        let dual = UdpSocket::bind("[::]:0").expect("bind ::");
        six_tx
            .send(dual.local_addr().expect("addr").port())
            .expect("report");
        let _ = rx.recv(); // keep the sockets until the dump is read
    });
    let port = ready_rx.recv().expect("the namespace's sockets");
    let mut socks = Vec::new();
    diag.dump(&mut socks).expect("dump");
    let s = socks
        .iter()
        .find(|s| s.port == port)
        .unwrap_or_else(|| panic!("port {port} in {socks:?}"));
    assert!(s.rcvbuf > 0, "{s:?}");
    assert!(
        s.drops > 0,
        "5000 datagrams unread: some were dropped ({s:?})"
    );
    assert!(
        s.rmem * 2 >= s.rcvbuf,
        "the buffer is at least half full ({s:?})"
    );
    assert!(s.inode != 0, "{s:?}");
    // A second dump on the same socket answers again (sequence numbers advance), and a
    // dual-stack socket (AF_INET6 on `::`, which takes IPv4 too) is in it.
    let six = six.recv().expect("the dual-stack socket's port");
    diag.dump(&mut socks).expect("dump again");
    assert!(socks.iter().any(|s| s.port == port));
    assert!(socks.iter().any(|s| s.port == six), "{six} in {socks:?}");
    // Lookups: the full socket and the dual-stack one, each as the dump has it.
    let full = *socks.iter().find(|s| s.port == port).unwrap();
    let dual = *socks.iter().find(|s| s.port == six).unwrap();
    let now = diag
        .lookup(&full)
        .expect("lookup")
        .expect("the full socket");
    assert_eq!((now.port, now.inode), (full.port, full.inode));
    assert!(now.drops > 0 && now.rmem * 2 >= now.rcvbuf, "{now:?}");
    let now = diag
        .lookup(&dual)
        .expect("lookup")
        .expect("the dual-stack socket");
    assert_eq!((now.port, now.inode), (dual.port, dual.inode));
    // What each costs here, for receivers.rs's LOOKUP_MAX (printed, never asserted).
    let rounds = 200;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        diag.dump(&mut socks).expect("dump");
    }
    let per_dump = t.elapsed() / rounds;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        diag.lookup(&full).expect("lookup").expect("there");
    }
    let per_lookup = t.elapsed() / rounds;
    eprintln!("sock_diag here: a dump (IPv4 and IPv6) {per_dump:?}, a lookup {per_lookup:?}");
    drop(tx);
    inside.join().expect("thread").expect("in the namespace");
    // Closed: gone, not an error.
    assert_eq!(diag.lookup(&full).expect("lookup"), None);
    assert_eq!(diag.lookup(&dual).expect("lookup"), None);
    drop(lab);
}
