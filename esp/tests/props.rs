//! Properties of sealing and opening: round trips at every payload size, and every truncation
//! and every single flipped bit of a sealed packet refused.

use std::net::Ipv4Addr;

use esp::wire::{FRONT_LEN, packet_len_for};
use esp::{InboundSa, Key, OpenError, OutboundSa};
use proptest::prelude::*;

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn pair(k: [u8; 20], epoch: u32) -> (OutboundSa, InboundSa) {
    let key = Key::from_bytes(k);
    (
        OutboundSa::new(&key, A, B, epoch),
        InboundSa::new(&key, A, B),
    )
}

fn seal(out: &mut OutboundSa, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; packet_len_for(payload.len())];
    buf[FRONT_LEN..FRONT_LEN + payload.len()].copy_from_slice(payload);
    out.seal(&mut buf, payload.len(), 17).unwrap();
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_open_round_trip(k: [u8; 20], epoch: u32, payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 1..4)) {
        let (mut out, mut inb) = pair(k, epoch);
        for (i, payload) in payloads.iter().enumerate() {
            let mut pkt = seal(&mut out, payload);
            prop_assert_eq!(pkt.len() % 4, 0);
            if payload.len() >= 8 {
                prop_assert_ne!(&pkt[FRONT_LEN..FRONT_LEN + payload.len()], &payload[..]);
            }
            let o = inb.open(&mut pkt).unwrap();
            prop_assert_eq!((o.epoch, o.seq, o.payload_len, o.next_header), (epoch, i as u32 + 1, payload.len(), 17));
            prop_assert_eq!(&pkt[FRONT_LEN..FRONT_LEN + payload.len()], &payload[..]);
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_refused(k: [u8; 20], payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (mut out, _) = pair(k, 1);
        let pkt = seal(&mut out, &payload);
        for len in 0..pkt.len() {
            // a fresh SA each time: the refusal is the packet's, not the window's
            let (_, mut inb) = pair(k, 1);
            let mut cut = pkt[..len].to_vec();
            let e = inb.open(&mut cut).unwrap_err();
            prop_assert!(matches!(e, OpenError::Truncated | OpenError::BadIcv), "{} {:?}", len, e);
            prop_assert_eq!(inb.window().position(), None);
        }
        for bit in 0..pkt.len() * 8 {
            let (_, mut inb) = pair(k, 1);
            let mut bad = pkt.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let e = inb.open(&mut bad).unwrap_err();
            // a flipped sequence-number bit may make it seq 0 (too old); anything else fails the ICV
            prop_assert!(matches!(e, OpenError::BadIcv | OpenError::TooOld), "bit {} {:?}", bit, e);
            prop_assert_eq!(inb.window().position(), None, "bit {}", bit);
        }
        let (_, mut inb) = pair(k, 1);
        let mut good = pkt.clone();
        prop_assert!(inb.open(&mut good).is_ok());
        let mut again = pkt.clone();
        prop_assert_eq!(inb.open(&mut again), Err(OpenError::Replay));
    }

    /// A different key (another SA) never opens a packet.
    #[test]
    fn another_key_never_opens(k: [u8; 20], flip in 0usize..20, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (mut out, _) = pair(k, 1);
        let mut other = k;
        other[flip] ^= 0x80;
        let (_, mut inb) = pair(other, 1);
        let mut pkt = seal(&mut out, &payload);
        prop_assert_eq!(inb.open(&mut pkt), Err(OpenError::BadIcv));
    }
}
