use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use super::*;
use crate::port::MemPort;

const BUF: usize = 2048;

fn mac(last: u8) -> Mac {
    Mac([2, 0x42, 10, 0, 0, last])
}

/// An Ethernet frame from `src` to `dst` carrying an IPv4 header to `to` (enough for steering).
fn frame(dst: Mac, src: Mac, to: Ipv4Addr, tag: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[16..20].copy_from_slice(&to.octets());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[tag; 26]);
    f
}

fn pool_len(m: &Mesh) -> usize {
    m.pool.len()
}

fn steer(pairs: &[(Mac, usize)]) -> Arc<SteerMap> {
    let mut s = SteerMap::default();
    for &(m, w) in pairs {
        s.add_mac(m, w);
    }
    Arc::new(s)
}

#[test]
fn owner_is_stable_and_in_range() {
    for w in 1..5 {
        for name in ["c11", "c12", "c21", "ingress", ""] {
            let o = owner_of(name, w);
            assert!(o < w);
            assert_eq!(o, owner_of(name, w));
        }
    }
    assert_eq!(owner_of("c11", 0), 0);
    // Two workers: ports spread over both.
    let on0 = (0..16)
        .filter(|i| owner_of(&format!("c{i}"), 2) == 0)
        .count();
    assert!((1..16).contains(&on0), "{on0} of 16 on worker 0");
}

#[test]
fn steer_map_by_mac_then_address() {
    let mut s = SteerMap::default();
    assert!(s.is_empty());
    s.add_mac(mac(11), 1);
    s.add_addr(Ipv4Addr::new(10, 0, 9, 254), 0);
    let any = Ipv4Addr::new(10, 0, 0, 99);
    assert_eq!(s.worker_of(&frame(mac(11), mac(12), any, 0)), Some(1));
    assert_eq!(s.worker_of(&frame(mac(13), mac(12), any, 0)), None);
    let lb = Ipv4Addr::new(10, 0, 9, 254);
    assert_eq!(s.worker_of(&frame(mac(99), mac(12), lb, 0)), Some(0));
    // Broadcast and multicast stay where they arrive, whatever the address.
    assert_eq!(s.worker_of(&frame(Mac::BROADCAST, mac(12), lb, 0)), None);
    // Short or non-IPv4 frames are not read past their end.
    assert_eq!(s.worker_of(&[2, 0x42]), None);
    let mut arp = frame(mac(99), mac(12), lb, 0);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(s.worker_of(&arp), None);
    assert_eq!(s.worker_of(&arp[..20]), None);
}

/// Worker 1's stand-in transmits through worker 0, the owner: the frame leaves by the driver
/// when the owner next polls the port, and every buffer comes back to the pool.
#[test]
fn stand_in_transmits_through_the_owner() {
    let mesh = Mesh::new(2, BUF).unwrap();
    let full = pool_len(&mesh);
    let (drv, h) = MemPort::new();
    let mut own = mesh.port(
        0,
        "c12",
        Some(0),
        Some(Box::new(drv)),
        false,
        SteerAt::Ethernet,
    );
    let mut stand = mesh.port(1, "c12", Some(0), None, false, SteerAt::Ethernet);
    assert!(own.has_driver() && !stand.has_driver());

    let mut b = Batch::with_buf_size(BATCH_SIZE, BUF);
    for t in 0..3 {
        b.push_frame(&frame(mac(12), mac(11), Ipv4Addr::LOCALHOST, t))
            .unwrap();
    }
    assert_eq!(stand.tx_burst(&mut b), 3);
    // The frames wait in the ring, in one burst from the pool; the batch kept buffers.
    assert_eq!(b.len(), 3);
    assert_eq!(pool_len(&mesh), full - 1);
    assert!(!mesh.may_sleep(0), "frames wait for worker 0");
    mesh.awake(0);
    assert!(h.take_tx().is_empty());

    let mut rx = Batch::with_buf_size(BATCH_SIZE, BUF);
    assert_eq!(own.rx_burst(&mut rx), 0);
    let sent = h.take_tx();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2], frame(mac(12), mac(11), Ipv4Addr::LOCALHOST, 2));
    assert_eq!(pool_len(&mesh), full);
    assert!(mesh.may_sleep(0));
    let c: HashMap<_, _> = own.counters().into_iter().collect();
    assert_eq!(c["handoff_tx_in"], 3);
    let c: HashMap<_, _> = stand.counters().into_iter().collect();
    assert_eq!(c["handoff_tx_out"], 3);
}

/// A frame the owner receives for a destination of worker 1 is not processed on worker 0: it
/// comes out of worker 1's stand-in, in order, with its metadata (the underlay's peer).
#[test]
fn received_frames_go_to_the_worker_of_their_destination() {
    let mesh = Mesh::new(2, BUF).unwrap();
    let full = pool_len(&mesh);
    let (drv, h) = MemPort::new();
    let mut on0 = mesh.port(
        0,
        "underlay",
        None,
        Some(Box::new(drv)),
        false,
        SteerAt::Vxlan,
    );
    let (drv1, _h1) = MemPort::new();
    let mut on1 = mesh.port(
        1,
        "underlay",
        None,
        Some(Box::new(drv1)),
        false,
        SteerAt::Vxlan,
    );
    let map = steer(&[(mac(11), 1), (mac(12), 0)]);
    on0.set_steer(map.clone());
    on1.set_steer(map);
    let peer = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 2), 4789);
    let vx = |dst: Mac, tag: u8| {
        let mut f = vec![8, 0, 0, 0, 0, 0, 1, 0];
        f.extend(frame(dst, mac(21), Ipv4Addr::LOCALHOST, tag));
        f
    };
    h.inject_from(&vx(mac(11), 1), peer);
    h.inject_from(&vx(mac(12), 2), peer);
    h.inject_from(&vx(mac(11), 3), peer);
    h.inject_from(&vx(Mac::BROADCAST, 4), peer);

    // Worker 1 sleeps: the hand-off wakes it (its eventfd becomes readable).
    assert!(mesh.may_sleep(1));
    let mut b = Batch::with_buf_size(BATCH_SIZE, BUF);
    assert_eq!(on0.rx_burst(&mut b), 2);
    let tags: Vec<u8> = b.pkts().iter().map(|p| p.data()[60]).collect();
    assert_eq!(tags, [2, 4], "worker 0 keeps its own and the broadcast");
    let mut pfd = libc::pollfd {
        fd: mesh.waker(1).fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, no wait.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 1, "worker 1 woken");

    mesh.awake(1);
    let mut b1 = Batch::with_buf_size(BATCH_SIZE, BUF);
    assert_eq!(on1.rx_burst(&mut b1), 2);
    let got: Vec<(u8, Option<SocketAddrV4>)> = b1
        .pkts()
        .iter()
        .map(|p| (p.data()[60], p.meta.peer))
        .collect();
    assert_eq!(got, [(1, Some(peer)), (3, Some(peer))]);
    b.clear();
    b1.clear();
    assert_eq!(pool_len(&mesh), full, "every buffer back in the pool");
    let c: HashMap<_, _> = on0.counters().into_iter().collect();
    assert_eq!((c["handoff_rx_out"], c["handoff_ring_full"]), (2, 0));
    let c: HashMap<_, _> = on1.counters().into_iter().collect();
    assert_eq!(c["handoff_rx_in"], 2);
}

/// A worker that does not poll: its ring fills, and what does not fit is dropped and counted,
/// never queued without bound, and no buffer leaks.
#[test]
fn full_ring_drops_and_counts() {
    let mesh = Mesh::new(2, BUF).unwrap();
    let full = pool_len(&mesh);
    let mut stand = mesh.port(1, "c12", Some(0), None, false, SteerAt::Ethernet);
    let mut b = Batch::with_buf_size(BATCH_SIZE, BUF);
    let mut accepted = 0;
    for _ in 0..(RING + 2) {
        b.clear();
        while !b.is_full() {
            b.push_frame(&frame(mac(12), mac(11), Ipv4Addr::LOCALHOST, 0))
                .unwrap();
        }
        accepted += stand.tx_burst(&mut b);
    }
    assert_eq!(accepted, RING * BATCH_SIZE);
    let c: HashMap<_, _> = stand.counters().into_iter().collect();
    assert_eq!(c["handoff_ring_full"], 2 * BATCH_SIZE as u64);
    assert_eq!(pool_len(&mesh), full - RING);
    drop(stand);
    mesh.forget("c12");
    assert_eq!(
        pool_len(&mesh),
        full,
        "the dropped frames' buffers are back"
    );
    assert!(mesh.may_sleep(0), "nothing waits for the owner any more");
}

/// With an empty pool the frame is dropped and counted; the sender's batch keeps its buffer.
#[test]
fn empty_pool_drops_and_counts() {
    let mesh = Mesh::new(2, BUF).unwrap();
    while mesh.pool.pop().is_some() {}
    let mut stand = mesh.port(1, "c12", Some(0), None, false, SteerAt::Ethernet);
    let mut b = Batch::with_buf_size(BATCH_SIZE, BUF);
    b.push_frame(&frame(mac(12), mac(11), Ipv4Addr::LOCALHOST, 0))
        .unwrap();
    assert_eq!(stand.tx_burst(&mut b), 0);
    assert_eq!(
        b.pkts()[0].len(),
        frame(mac(12), mac(11), Ipv4Addr::LOCALHOST, 0).len()
    );
    let c: HashMap<_, _> = stand.counters().into_iter().collect();
    assert_eq!(c["handoff_no_buffer"], 1);
}

/// A worker whose ring for this port has no room for a whole batch holds the port's driver
/// back: frames wait in the device (`rx_pending`), none is read and dropped here.
#[test]
fn a_full_ring_holds_the_driver_back() {
    let mesh = Mesh::new(2, BUF).unwrap();
    let (drv, h) = MemPort::new();
    let mut own = mesh.port(
        0,
        "c11",
        Some(0),
        Some(Box::new(drv)),
        false,
        SteerAt::Ethernet,
    );
    let mut stand = mesh.port(1, "c11", Some(0), None, false, SteerAt::Ethernet);
    let map = steer(&[(mac(13), 1)]);
    own.set_steer(map.clone());
    stand.set_steer(map);
    let to13 = frame(mac(13), mac(11), Ipv4Addr::LOCALHOST, 0);
    for _ in 0..(RING + 2) * BATCH_SIZE {
        h.inject(&to13);
    }
    let mut b = Batch::with_buf_size(BATCH_SIZE, BUF);
    let mut rounds = 0;
    while h.rx_pending() > 0 && rounds < 100 {
        b.clear();
        assert_eq!(own.rx_burst(&mut b), 0, "every frame is worker 1's");
        rounds += 1;
    }
    // The ring filled (RING bursts), then the driver was left alone.
    assert_eq!(h.rx_pending(), 2 * BATCH_SIZE);
    let c: HashMap<_, _> = own.counters().into_iter().collect();
    assert_eq!(
        (c["handoff_rx_out"], c["handoff_ring_full"]),
        ((RING * BATCH_SIZE) as u64, 0)
    );
    assert!(c["handoff_rx_deferred"] > 0);
    // Worker 1 drains its ring; the driver is read again.
    let mut b1 = Batch::with_buf_size(BATCH_SIZE, BUF);
    assert_eq!(stand.rx_burst(&mut b1), BATCH_SIZE);
    b.clear();
    own.rx_burst(&mut b);
    assert_eq!(h.rx_pending(), BATCH_SIZE);
}
