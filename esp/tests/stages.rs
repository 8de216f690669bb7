//! `esp-encrypt` then `esp-decrypt` on vswitch batches, as two nodes' ESP underlay ports run
//! them: the VXLAN datagram comes back byte for byte with the sender in `meta.peer`, and every
//! refusal is its named drop.

use std::net::{Ipv4Addr, SocketAddrV4};

use esp::sa::Gcm;
use esp::wire::{self, FRONT_LEN, PROTO_ESP, packet_len_for};
use esp::{EspDecrypt, EspEncrypt, EspSas, Key, derive, iv_of, seal_packet, stages};
use vswitch::stage::{StageStats, mask_of, run_stage};
use vswitch::wire::{ipv4, udp};
use vswitch::{Batch, Env, FdbConfig, HEADROOM, Next, Packet, Stage};

const N1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const N3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const EPOCH: u32 = 1_800_000_000;

fn key() -> Key {
    Key::from_bytes(core::array::from_fn(|i| 0x40 + i as u8))
}

fn node(local: Ipv4Addr) -> (EspEncrypt, EspDecrypt) {
    let mut sas = EspSas::new(local);
    sas.set(&[key()], &[N1, N2], EPOCH);
    stages(sas)
}

/// A VXLAN datagram (header, then an inner frame of `len` bytes).
fn vxlan(len: usize, fill: u8) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0x10, 0x01, 0];
    v.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
    v
}

/// Run `stage` over packets made from `frames` (each with its `meta.peer`); the packets and
/// the stats.
fn run(
    stage: &mut dyn Stage,
    frames: &[(Option<SocketAddrV4>, Vec<u8>)],
) -> (Vec<Packet>, StageStats) {
    let mut env = Env::new(FdbConfig::default());
    let mut stats = StageStats::for_stage(stage);
    let mut batch = Batch::new(frames.len());
    for (peer, f) in frames {
        batch.push_frame(f).unwrap().meta.peer = *peer;
    }
    run_stage(
        stage,
        &mut stats,
        &mut batch,
        &mut env,
        mask_of(frames.len()),
    );
    assert_eq!(stats.rx, stats.outcomes());
    let out = batch
        .pkts()
        .iter()
        .map(|p| {
            let mut q = Packet::from_frame(p.data());
            q.meta = p.meta;
            q
        })
        .collect();
    (out, stats)
}

/// What a raw IPv4 socket for protocol 50 on `dst` receives for `esp` from `src`.
fn outer(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, esp: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; ipv4::HEADER_LEN + esp.len()];
    let mut ip = ipv4::Packet::new_unchecked(&mut v[..]);
    ip.set_version(4);
    ip.set_header_len(ipv4::HEADER_LEN);
    ip.set_total_len((ipv4::HEADER_LEN + esp.len()) as u16);
    ip.set_ttl(64);
    ip.set_protocol(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    v[ipv4::HEADER_LEN..].copy_from_slice(esp);
    v
}

fn peer(ip: Ipv4Addr) -> Option<SocketAddrV4> {
    Some(SocketAddrV4::new(ip, 4789))
}

fn drop_name(stage: &dyn Stage, p: &Packet) -> &'static str {
    match p.meta.next {
        Next::Drop(r) => stage.drop_names()[usize::from(r.0)],
        n => panic!("not dropped: {n:?}"),
    }
}

#[test]
fn encrypt_then_decrypt_gives_the_vxlan_datagram_back() {
    let (mut enc1, _) = node(N1);
    let (_, mut dec2) = node(N2);
    let frames: Vec<_> = [0, 1, 2, 3, 50, 1450 + 14]
        .iter()
        .map(|&n| (peer(N2), vxlan(n, n as u8)))
        .collect();
    let (sealed, st) = run(&mut enc1, &frames);
    assert_eq!((st.cont, st.dropped()), (frames.len() as u64, 0));
    assert_eq!(enc1.encrypted, frames.len() as u64);
    assert_eq!(enc1.counters(), vec![("encrypted", frames.len() as u64)]);
    let spi = derive(&key(), N1, N2).spi;
    for (i, (p, (_, f))) in sealed.iter().zip(&frames).enumerate() {
        let e = wire::Packet::new_checked(p.data()).unwrap();
        assert_eq!(e.spi(), spi);
        assert_eq!(e.seq_number(), i as u32 + 1);
        assert_eq!(e.iv(), iv_of(EPOCH, i as u32 + 1));
        assert_eq!(p.len(), packet_len_for(8 + f.len()));
        assert_eq!(p.meta.peer, peer(N2), "left for the port to send to");
    }
    let received: Vec<_> = sealed
        .iter()
        .map(|p| (None, outer(N1, N2, PROTO_ESP, p.data())))
        .collect();
    let (opened, st) = run(&mut dec2, &received);
    assert_eq!((st.cont, st.dropped()), (frames.len() as u64, 0));
    assert_eq!(dec2.counters(), vec![("decrypted", frames.len() as u64)]);
    for (p, (_, f)) in opened.iter().zip(&frames) {
        assert_eq!(p.data(), &f[..]);
        assert_eq!(p.meta.peer, peer(N1));
    }
    // the listing follows
    let out = enc1.list();
    assert_eq!(
        (out[0].peer, out[0].spi, out[0].epoch, out[0].seq),
        (N2, spi, EPOCH, 6)
    );
    let inb = dec2.list();
    assert_eq!((inb[0].peer, inb[0].spi, inb[0].seq), (N1, spi, 6));
    // and the same packets again are replays
    let (_, st) = run(&mut dec2, &received);
    assert_eq!(st.drop_count("drop_esp_replay"), frames.len() as u64);
}

#[test]
fn encrypt_fails_closed_and_needs_room() {
    let (mut enc, _) = node(N1);
    let mut unconfigured = EspEncrypt::new(N1);
    let frames = vec![(peer(N3), vxlan(10, 0)), (None, vxlan(10, 0))];
    let (out, st) = run(&mut enc, &frames);
    for p in &out {
        assert_eq!(drop_name(&enc, p), "drop_esp_no_sa");
    }
    assert_eq!(
        out[0].data(),
        &frames[0].1[..],
        "a refused frame is untouched"
    );
    assert_eq!(st.drop_count("drop_esp_no_sa"), 2);
    let (out, _) = run(&mut unconfigured, &[(peer(N2), vxlan(10, 0))]);
    assert_eq!(drop_name(&unconfigured, &out[0]), "drop_esp_no_sa");

    // a buffer with no tailroom left, and one with too little headroom
    let mut stats = StageStats::for_stage(&enc);
    let mut env = Env::new(FdbConfig::default());
    let mut batch = Batch::with_buf_size(2, HEADROOM + 64);
    let full = vxlan(56, 0);
    batch.push_frame(&full).unwrap().meta.peer = peer(N2);
    let p = batch.push_frame(&vxlan(8, 0)).unwrap();
    p.meta.peer = peer(N2);
    assert!(p.push_front(HEADROOM - 10).is_some());
    run_stage(&mut enc, &mut stats, &mut batch, &mut env, mask_of(2));
    assert_eq!(stats.drop_count("drop_esp_no_room"), 2);
    assert_eq!(batch.pkts()[0].data(), &full[..]);
}

/// An ESP packet from N1 to N2 under the real SA, with a chosen payload, padding, next
/// header and sequence number (to build the refusals that need a valid ICV).
fn crafted(payload: &[u8], pad: &[u8], next_header: u8, seq: u32) -> Vec<u8> {
    let m = derive(&key(), N1, N2);
    let gcm = Gcm::for_sa(&m);
    let enc_len = payload.len() + pad.len() + 2;
    let mut v = vec![0u8; FRONT_LEN + enc_len + 16];
    v[..4].copy_from_slice(&m.spi.to_be_bytes());
    v[4..8].copy_from_slice(&seq.to_be_bytes());
    v[8..16].copy_from_slice(&iv_of(EPOCH, seq));
    let e = &mut v[FRONT_LEN..FRONT_LEN + enc_len];
    e[..payload.len()].copy_from_slice(payload);
    e[payload.len()..payload.len() + pad.len()].copy_from_slice(pad);
    e[enc_len - 2] = pad.len() as u8;
    e[enc_len - 1] = next_header;
    let (front, rest) = v.split_at_mut(FRONT_LEN);
    let (enc, icv) = rest.split_at_mut(enc_len);
    let tag = gcm.seal(iv_of(EPOCH, seq), &front[..8], enc).unwrap();
    icv.copy_from_slice(&tag);
    v
}

/// A UDP header for a VXLAN datagram of `vx` bytes.
fn udp_hdr(dst: u16, len: u16) -> [u8; 8] {
    let mut h = [0u8; 8];
    let mut u = udp::Packet::new_unchecked(&mut h[..]);
    u.set_src_port(4789);
    u.set_dst_port(dst);
    u.set_len(len);
    h
}

#[test]
fn decrypt_drops_each_refusal_by_name() {
    let (mut enc1, _) = node(N1);
    let (sealed, _) = run(
        &mut enc1,
        &[(peer(N2), vxlan(20, 1)), (peer(N2), vxlan(20, 2))],
    );
    let good = sealed[0].data().to_vec();
    let good2 = sealed[1].data().to_vec();
    let ok_payload = [&udp_hdr(4789, 36)[..], &vxlan(20, 3)].concat();
    let mut bad_icv = good.clone();
    bad_icv[FRONT_LEN + 3] ^= 1;
    let mut fragment = outer(N1, N2, PROTO_ESP, &good);
    fragment[6] = 0x20; // more fragments
    let mut bad_len = outer(N1, N2, PROTO_ESP, &good);
    bad_len[3] = bad_len[3].wrapping_add(1); // total length beyond the frame
    let table: Vec<(&str, Vec<u8>, &str)> = vec![
        ("valid", outer(N1, N2, PROTO_ESP, &good2), ""),
        ("not ESP", outer(N1, N2, 17, &good), "drop_esp_bad_ip"),
        ("a fragment", fragment, "drop_esp_bad_ip"),
        ("IP length past the frame", bad_len, "drop_esp_bad_ip"),
        (
            "19 bytes",
            outer(N1, N2, PROTO_ESP, &good)[..19].to_vec(),
            "drop_esp_bad_ip",
        ),
        (
            "ESP of 33 bytes",
            outer(N1, N2, PROTO_ESP, &good[..33]),
            "drop_esp_truncated",
        ),
        (
            "unknown sender",
            outer(N3, N2, PROTO_ESP, &good),
            "drop_esp_unknown_spi",
        ),
        (
            "replayed",
            outer(N1, N2, PROTO_ESP, &good2),
            "drop_esp_replay",
        ),
        (
            "bad ICV",
            outer(N1, N2, PROTO_ESP, &bad_icv),
            "drop_esp_bad_icv",
        ),
        (
            "seq 0",
            outer(N1, N2, PROTO_ESP, &crafted(&ok_payload, &[1, 2], 17, 0)),
            "drop_esp_too_old",
        ),
        (
            "padding 1, 3",
            outer(N1, N2, PROTO_ESP, &crafted(&ok_payload, &[1, 3], 17, 10)),
            "drop_esp_bad_trailer",
        ),
        (
            "empty payload",
            outer(N1, N2, PROTO_ESP, &crafted(&[], &[1, 2], 17, 11)),
            "drop_esp_inner_udp",
        ),
        (
            "next header 4",
            outer(N1, N2, PROTO_ESP, &crafted(&ok_payload, &[1, 2], 4, 12)),
            "drop_esp_next_header",
        ),
        (
            "UDP to 4790",
            outer(
                N1,
                N2,
                PROTO_ESP,
                &crafted(
                    &[&udp_hdr(4790, 36)[..], &vxlan(20, 3)].concat(),
                    &[1, 2],
                    17,
                    13,
                ),
            ),
            "drop_esp_inner_udp",
        ),
        (
            "UDP length wrong",
            outer(
                N1,
                N2,
                PROTO_ESP,
                &crafted(
                    &[&udp_hdr(4789, 35)[..], &vxlan(20, 3)].concat(),
                    &[1, 2],
                    17,
                    14,
                ),
            ),
            "drop_esp_inner_udp",
        ),
        (
            "UDP header cut",
            outer(N1, N2, PROTO_ESP, &crafted(&[1, 2], &[], 17, 15)),
            "drop_esp_inner_udp",
        ),
        (
            "crafted but valid",
            outer(N1, N2, PROTO_ESP, &crafted(&ok_payload, &[1, 2], 17, 16)),
            "",
        ),
    ];
    let (_, mut dec2) = node(N2);
    for (what, frame, want) in &table {
        let (out, _) = run(&mut dec2, &[(None, frame.clone())]);
        if want.is_empty() {
            assert_eq!(out[0].meta.next, Next::Continue, "{what}");
        } else {
            assert_eq!(drop_name(&dec2, &out[0]), *want, "{what}");
        }
    }
}

#[test]
fn an_impossible_pad_length_is_a_bad_trailer() {
    // 4 encrypted bytes claiming 200 bytes of padding
    let m = derive(&key(), N1, N2);
    let gcm = Gcm::for_sa(&m);
    let mut esp = vec![0u8; packet_len_for(2)];
    seal_packet(&gcm, m.spi, 1, iv_of(EPOCH, 1), 17, &mut esp, 2).unwrap();
    // re-seal with a trailer byte that no packet may carry
    let mut plain = vec![0u8; 4];
    plain[2] = 200;
    plain[3] = 17;
    let mut v = esp[..FRONT_LEN].to_vec();
    let tag = gcm.seal(iv_of(EPOCH, 1), &esp[..8], &mut plain).unwrap();
    v.extend_from_slice(&plain);
    v.extend_from_slice(&tag);
    let (_, mut dec2) = node(N2);
    let (out, _) = run(&mut dec2, &[(None, outer(N1, N2, PROTO_ESP, &v))]);
    assert_eq!(drop_name(&dec2, &out[0]), "drop_esp_bad_trailer");
}

#[test]
fn traced_packets_show_the_spi_and_sequence_number() {
    let (mut enc1, _) = node(N1);
    let (_, mut dec2) = node(N2);
    let mut env = Env::new(FdbConfig::default());
    let mut batch = Batch::new(2);
    for t in [0, 7] {
        let p = batch.push_frame(&vxlan(20, 0)).unwrap();
        p.meta.peer = peer(N2);
        p.meta.trace = t;
    }
    batch.traced = true;
    let mut st = StageStats::for_stage(&enc1);
    run_stage(&mut enc1, &mut st, &mut batch, &mut env, mask_of(2));
    let rec: Vec<_> = env.tracer.drain();
    assert_eq!(rec.len(), 1);
    let spi = derive(&key(), N1, N2).spi;
    assert_eq!(rec[0].stage, "esp-encrypt");
    assert_eq!(
        rec[0].detail,
        format!(
            "spi 0x{spi:08x} seq {EPOCH}:2 to 198.18.0.2, {} bytes",
            batch.pkts()[1].len()
        )
    );
    // the receiving side
    let mut rx = Batch::new(2);
    for (i, t) in [(0, 0), (1, 9)] {
        let f = outer(N1, N2, PROTO_ESP, batch.pkts()[i].data());
        rx.push_frame(&f).unwrap().meta.trace = t;
    }
    rx.traced = true;
    let mut st = StageStats::for_stage(&dec2);
    run_stage(&mut dec2, &mut st, &mut rx, &mut env, mask_of(2));
    let rec: Vec<_> = env.tracer.drain();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].id, 9);
    assert_eq!(
        rec[0].detail,
        format!("spi 0x{spi:08x} seq {EPOCH}:2 from 198.18.0.1, 28 bytes")
    );
}
