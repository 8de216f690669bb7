//! Known answers: AES-GCM through [`Gcm`] (McGrew and Viega's GCM test cases 3 and 4), whole
//! ESP packets through [`open_packet`]/[`seal_packet`] (the AES-128 packets with 32-bit
//! sequence numbers of draft-mcgrew-gcm-test-01), and the per-SA derivation (computed
//! independently with python3-cryptography's HKDF).

use std::net::Ipv4Addr;

use esp::wire::{FRONT_LEN, ICV_LEN};
use esp::{Gcm, Key, Opened, derive, open_packet, seal_packet};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    hex(s).try_into().unwrap()
}

/// GCM test case 3 and 4's key and 96-bit IV (salt = its first 4 bytes, explicit IV the rest).
const K: &str = "feffe9928665731c6d6a8f9467308308";
const IV: &str = "cafebabefacedbaddecaf888";
const P: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
                 1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
const C: &str = "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e
                 21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985";

fn gcm_of(key: &str, nonce: &str) -> (Gcm, [u8; 8]) {
    let n = hex(nonce);
    let gcm = Gcm::new(&arr(key), n[..4].try_into().unwrap());
    (gcm, n[4..].try_into().unwrap())
}

#[test]
fn gcm_test_case_3_no_aad() {
    let (gcm, iv) = gcm_of(K, IV);
    let mut buf = hex(P);
    let tag = gcm.seal(iv, &[], &mut buf).unwrap();
    assert_eq!(buf, hex(C));
    assert_eq!(tag.to_vec(), hex("4d5c2af327cd64a62cf35abd2ba6fab4"));
    buf.extend_from_slice(&tag);
    assert_eq!(gcm.open(iv, &[], &mut buf), Ok(64));
    assert_eq!(&buf[..64], &hex(P)[..]);
}

#[test]
fn gcm_test_case_4_with_aad() {
    let (gcm, iv) = gcm_of(K, IV);
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let mut buf = hex(P)[..60].to_vec();
    let tag = gcm.seal(iv, &aad, &mut buf).unwrap();
    assert_eq!(buf, hex(C)[..60]);
    assert_eq!(tag.to_vec(), hex("5bc94fbc3221a5db94fae95ae7121a47"));
    buf.extend_from_slice(&tag);
    let mut bad = buf.clone();
    assert_eq!(gcm.open(iv, &aad, &mut buf), Ok(60));
    assert_eq!(&buf[..60], &hex(P)[..60]);
    bad[60] ^= 1;
    assert!(gcm.open(iv, &aad, &mut bad).is_err());
}

/// One ESP packet of draft-mcgrew-gcm-test-01 section 4: key, nonce (salt || IV), AAD (SPI ||
/// seq), plaintext (payload, padding, pad length, next header), ciphertext, ICV.
struct EspVector {
    key: &'static str,
    nonce: &'static str,
    aad: &'static str,
    plain: &'static str,
    cipher: &'static str,
    icv: &'static str,
}

/// The three AES-128 packets without extended sequence numbers (8-byte AAD).
const ESP_VECTORS: [EspVector; 3] = [
    EspVector {
        key: "feffe9928665731c6d6a8f9467308308",
        nonce: "cafebabefacedbaddecaf888",
        aad: "0000a5f80000000a",
        plain: "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d00100
                0001000000000000037369700963796265726369747902646b00000100010001",
        cipher: "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c
                 3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1",
        icv: "83b70d3aa8bc6ee4c309e9d85a41ad4a",
    },
    EspVector {
        key: "00000000000000000000000000000000",
        nonce: "000000000000000000000000",
        aad: "0000000000000001",
        plain: "4500003c99c500008001cb7a40679318010101010800075c0200440061626364
                65666768696a6b6c6d6e6f707172737475767761626364656667686901020201",
        cipher: "4688daf2f973a392732909c331d56d60f694abaa414b5e7ff5fdcdfff5e9a284
                 456476492719ffb64de7d9dca1e1d894bc3bd57873ed4d181d19d4d5c8c18af3",
        icv: "f821d496eeb096e98ad2b69e4799c71d",
    },
    EspVector {
        key: "7d773d00c144c525ac619d18c84a3f47",
        nonce: "d966426743457e9182443bc6",
        aad: "335467aeffffffff",
        plain: "01020201",
        cipher: "437f866b",
        icv: "cb3f699fe9b0822bac961c4504bef270",
    },
];

#[test]
fn published_esp_packets_open_and_seal_to_the_same_bytes() {
    for v in &ESP_VECTORS {
        let (gcm, iv) = gcm_of(v.key, v.nonce);
        let aad = hex(v.aad);
        let plain = hex(v.plain);
        let wire: Vec<u8> = [aad.clone(), iv.to_vec(), hex(v.cipher), hex(v.icv)].concat();

        let mut opened = wire.clone();
        let o = open_packet(&gcm, &mut opened).unwrap();
        let (pad_len, next_header) = (plain[plain.len() - 2], plain[plain.len() - 1]);
        let payload_len = plain.len() - 2 - usize::from(pad_len);
        assert_eq!(
            o,
            Opened {
                epoch: u32::from_be_bytes(iv[..4].try_into().unwrap()),
                seq: u32::from_be_bytes(aad[4..].try_into().unwrap()),
                payload_len,
                next_header,
            },
            "{}",
            v.aad
        );
        assert_eq!(&opened[FRONT_LEN..opened.len() - ICV_LEN], &plain[..]);

        // sealing the payload gives the published packet back (its padding is the minimal one)
        let mut sealed = vec![0u8; wire.len()];
        sealed[FRONT_LEN..FRONT_LEN + payload_len].copy_from_slice(&plain[..payload_len]);
        let spi = u32::from_be_bytes(aad[..4].try_into().unwrap());
        let seq = u32::from_be_bytes(aad[4..].try_into().unwrap());
        seal_packet(&gcm, spi, seq, iv, next_header, &mut sealed, payload_len).unwrap();
        assert_eq!(sealed, wire, "{}", v.aad);
    }
}

/// The derivation for the key 00 01 .. 13 between 198.18.0.1 and 198.18.0.2, both ways, as
/// `HKDF(algorithm=hashes.SHA256(), length=24, salt=b"vxmesh-esp-v1",
/// info=S.packed + R.packed).derive(bytes(range(20)))` gives it.
#[test]
fn derivation_vector() {
    let key = Key::from_bytes(core::array::from_fn(|i| i as u8));
    let n1 = Ipv4Addr::new(198, 18, 0, 1);
    let n2 = Ipv4Addr::new(198, 18, 0, 2);
    let m = derive(&key, n1, n2);
    assert_eq!(m.key().to_vec(), hex("0bc368fc74d4baa81a753b6515b78a45"));
    assert_eq!(m.salt().to_vec(), hex("6054600e"));
    assert_eq!(m.spi, 0x6bee_2096);
    let back = derive(&key, n2, n1);
    assert_eq!(back.key().to_vec(), hex("f48dff75b2a2bac95d88ca705d44be1f"));
    assert_eq!(back.salt().to_vec(), hex("8fd61a2f"));
    assert_eq!(back.spi, 0xc547_befb);
    assert_eq!(format!("{m:?}"), "SaMaterial { spi: 0x6bee2096 }");
}
