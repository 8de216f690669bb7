//! The SA tables: lookups, fail-closed defaults, and reloads that keep the state of the SAs
//! still wanted (key rotation loses no packet).

use std::net::Ipv4Addr;

use esp::wire::{FRONT_LEN, packet_len_for};
use esp::{Direction, EspSas, Key, OpenError, SaPlan, derive};

const N1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const N3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

fn key(b: u8) -> Key {
    Key::from_bytes([b; 20])
}

/// Seal `payload` from `from` toward `to`; the ESP packet.
fn send(from: &mut EspSas, to: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; packet_len_for(payload.len())];
    buf[FRONT_LEN..FRONT_LEN + payload.len()].copy_from_slice(payload);
    let sa = from.outbound.find_mut(to).expect("an outbound SA");
    sa.seal(&mut buf, payload.len(), 17).unwrap();
    buf
}

/// Open a packet that `from` sent at `at`; the payload.
fn receive(at: &mut EspSas, from: Ipv4Addr, mut pkt: Vec<u8>) -> Result<Vec<u8>, OpenError> {
    let spi = u32::from_be_bytes(pkt[..4].try_into().unwrap());
    let sa = at.inbound.find_mut(from, spi).ok_or(OpenError::BadIcv)?;
    let o = sa.open(&mut pkt)?;
    Ok(pkt[FRONT_LEN..FRONT_LEN + o.payload_len].to_vec())
}

fn node(local: Ipv4Addr, keys: &[Key], epoch: u32) -> EspSas {
    let mut sas = EspSas::new(local);
    sas.set(keys, &[N1, N2, N3], epoch);
    sas
}

#[test]
fn empty_tables_refuse_everything() {
    let mut sas = EspSas::new(N1);
    assert!(sas.outbound.find_mut(N2).is_none());
    assert!(sas.inbound.find_mut(N2, 0x1234).is_none());
    // peers but no keys: still nothing (fail closed)
    sas.set(&[], &[N2, N3], 5);
    assert!(sas.outbound.find_mut(N2).is_none());
    assert!(sas.list().is_empty());
}

#[test]
fn one_outbound_per_peer_from_the_first_key_and_inbound_per_peer_and_key() {
    let (k1, k2) = (key(1), key(2));
    let mut sas = node(N1, &[k1.clone(), k2.clone()], 100);
    // the local VTEP among the peers is skipped
    assert_eq!(sas.outbound.iter().count(), 2);
    assert_eq!(sas.inbound.iter().count(), 4);
    let out = sas.outbound.find_mut(N2).unwrap();
    assert_eq!(out.key_id(), k1.id());
    assert_eq!(out.spi(), derive(&k1, N1, N2).spi);
    assert_eq!(out.position(), (100, 0));
    for k in [&k1, &k2] {
        let spi = derive(k, N3, N1).spi;
        let sa = sas.inbound.find_mut(N3, spi).unwrap();
        assert_eq!((sa.peer(), sa.key_id(), sa.spi()), (N3, k.id(), spi));
    }
    assert!(sas.inbound.find_mut(N2, derive(&k1, N3, N1).spi).is_none());
    let list = sas.list();
    assert_eq!(list.len(), 6);
    assert_eq!(list[0].direction, Direction::Outbound);
    assert_eq!(list[5].direction, Direction::Inbound);
    let shown = format!("{list:?} {sas:?}");
    assert!(!shown.contains("[1, 1, 1"), "{shown}");
}

#[test]
fn the_two_ends_agree_and_a_reload_keeps_counters_and_windows() {
    let keys = [key(1)];
    let mut a = node(N1, &keys, 1000);
    let mut b = node(N2, &keys, 2000);
    let p1 = send(&mut a, N2, b"one");
    let p2 = send(&mut a, N2, b"two");
    assert_eq!(receive(&mut b, N1, p2.clone()).unwrap(), b"two");
    // reload both with the same keys and a new epoch: nothing moves
    a.set(&keys, &[N1, N2, N3], 5000);
    b.set(&keys, &[N1, N2, N3], 6000);
    assert_eq!(a.outbound.find_mut(N2).unwrap().position(), (1000, 2));
    assert_eq!(receive(&mut b, N1, p2), Err(OpenError::Replay));
    assert_eq!(receive(&mut b, N1, p1).unwrap(), b"one");
    let p3 = send(&mut a, N2, b"three");
    assert_eq!(receive(&mut b, N1, p3).unwrap(), b"three");
    // dropping a peer drops its SAs; adding it back starts a new SA above every used epoch
    a.set(&keys, &[N1, N3], 5000);
    assert!(a.outbound.find_mut(N2).is_none());
    a.set(&keys, &[N1, N2, N3], 900);
    assert_eq!(a.outbound.find_mut(N2).unwrap().position(), (1001, 0));
    let p4 = send(&mut a, N2, b"four");
    assert_eq!(receive(&mut b, N1, p4).unwrap(), b"four");
}

#[test]
fn key_rotation_loses_no_packet() {
    let (old, new) = (key(1), key(2));
    let mut a = node(N1, std::slice::from_ref(&old), 10);
    let mut b = node(N2, std::slice::from_ref(&old), 20);
    let mut n = 0u32;
    let mut exchange = |a: &mut EspSas, b: &mut EspSas| {
        for _ in 0..3 {
            n += 1;
            let msg = n.to_be_bytes();
            let ab = send(a, N2, &msg);
            assert_eq!(receive(b, N1, ab).unwrap(), msg);
            let ba = send(b, N1, &msg);
            assert_eq!(receive(a, N2, ba).unwrap(), msg);
        }
    };
    exchange(&mut a, &mut b);
    // 1. add the new key second, node by node (traffic flows in between)
    let both = [old.clone(), new.clone()];
    a.set(&both, &[N1, N2], 30);
    exchange(&mut a, &mut b);
    b.set(&both, &[N1, N2], 40);
    exchange(&mut a, &mut b);
    // 2. move it first, node by node: a sends under the new key, b still accepts it
    let swapped = [new.clone(), old.clone()];
    a.set(&swapped, &[N1, N2], 50);
    assert_eq!(a.outbound.find_mut(N2).unwrap().key_id(), new.id());
    exchange(&mut a, &mut b);
    b.set(&swapped, &[N1, N2], 60);
    exchange(&mut a, &mut b);
    // 3. remove the old one
    let only_new = [new.clone()];
    a.set(&only_new, &[N1, N2], 70);
    exchange(&mut a, &mut b);
    b.set(&only_new, &[N1, N2], 80);
    exchange(&mut a, &mut b);
    assert!(a.list().iter().all(|s| s.key_id == new.id()));
    // the inbound SA under the new key kept its window through the reloads
    let spi = derive(&new, N1, N2).spi;
    let w = b.inbound.find_mut(N1, spi).unwrap().window().position();
    assert_eq!(w, Some((50, 12)));
}

#[test]
fn a_plan_derived_ahead_applies_like_set() {
    let keys = [key(1), key(2)];
    let mut a = node(N1, &keys, 10);
    let mut b = node(N2, &keys, 20);
    let p1 = send(&mut a, N2, b"one");
    assert_eq!(receive(&mut b, N1, p1.clone()).unwrap(), b"one");
    // derived elsewhere (another thread), with duplicate and local peers in the list
    let plan = std::thread::spawn(move || SaPlan::new(N2, &keys, &[N3, N1, N2, N1], 30))
        .join()
        .unwrap();
    assert_eq!(plan.outbound.len(), 2);
    assert_eq!(plan.inbound.len(), 4);
    b.apply(plan);
    assert_eq!(
        receive(&mut b, N1, p1),
        Err(OpenError::Replay),
        "window kept"
    );
    assert_eq!(b.outbound.find_mut(N1).unwrap().position(), (20, 0), "kept");
    assert_eq!(b.list().len(), 6);
    // the stages take their halves the same way
    let (mut enc, mut dec) = esp::stages(EspSas::new(N2));
    let plan = SaPlan::new(N2, &[key(1)], &[N1], 40);
    enc.apply(plan.outbound);
    dec.apply(plan.inbound);
    assert_eq!(enc.list().len() + dec.list().len(), 2);
}
