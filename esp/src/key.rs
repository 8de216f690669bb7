//! Configured keys: the `[encryption] keys` entries of the cluster file (or the store).
//!
//! Where it sits: the control plane parses each entry with [`Key::parse`] and hands the list
//! to [`EspSas::set`](crate::EspSas::set), which derives one SA per (sender, receiver, key)
//! from it ([`crate::sa::derive`]). The packet path never sees a [`Key`].
//!
//! An entry is the base64 (standard alphabet, with or without `=` padding) of 20 bytes: a
//! 16-byte AES-128 key followed by a 4-byte salt, the `crypt_key` layout of RFC 4106 as Linux
//! XFRM and scapy take it. A key is never printed: its [`KeyId`] is the only thing shown
//! (`Debug` and `Display` of a [`Key`] print the id alone). Its bytes, and the decoded entry
//! they came from, are wiped when dropped ([`zeroize`]); what this cannot reach is said in
//! docs/encryption.md ("Key material in memory"):
//!
//! ```text
//! id = the first 4 bytes of SHA-256("vxmesh-key-id" || key || salt), as 8 lowercase hex digits
//! ```

use core::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::{Zeroize, Zeroizing};

/// Length of an AES-128 key.
pub const KEY_LEN: usize = 16;
/// Length of the RFC 4106 salt.
pub const SALT_LEN: usize = 4;
/// Length of a configured key: key and salt.
pub const KEY_SALT_LEN: usize = KEY_LEN + SALT_LEN;
/// What the key id hashes in front of the key and salt.
pub const KEY_ID_CONTEXT: &[u8] = b"vxmesh-key-id";

/// Standard base64, padding optional.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A configured key: AES-128 key and salt. Printing one shows only its [`KeyId`].
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; KEY_SALT_LEN],
    id: KeyId,
}

/// The public name of a [`Key`]: 4 bytes of a hash of it, shown as 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 4]);

/// Why a `keys` entry is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("encryption key is not base64 (standard alphabet): {0}")]
    NotBase64(String),
    /// Base64 of the wrong number of bytes.
    #[error(
        "encryption key is {0} bytes, need {KEY_SALT_LEN} (a 16-byte AES-128 key and a 4-byte salt), base64"
    )]
    WrongLength(usize),
}

impl Key {
    /// Parses a `keys` entry: base64 of 20 bytes (surrounding whitespace ignored).
    pub fn parse(entry: &str) -> Result<Key, KeyError> {
        let raw = Zeroizing::new(B64.decode(entry.trim()).map_err(|e| {
            // The error names a position or a length, never the key material.
            KeyError::NotBase64(e.to_string())
        })?);
        let bytes: [u8; KEY_SALT_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(raw.len()))?;
        Ok(Key::from_bytes(bytes))
    }

    /// A key from its 20 bytes (key, then salt).
    pub fn from_bytes(bytes: [u8; KEY_SALT_LEN]) -> Key {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(KEY_ID_CONTEXT);
        ctx.update(&bytes);
        let digest = ctx.finish();
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest.as_ref()[..4]);
        Key {
            bytes,
            id: KeyId(id),
        }
    }

    /// The key's id: the only thing about it ever shown.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The 20 bytes, key then salt: the HKDF input of [`crate::sa::derive`].
    pub(crate) fn key_and_salt(&self) -> &[u8; KEY_SALT_LEN] {
        &self.bytes
    }

    /// The entry as written in a cluster file (base64 of key and salt); for tools that generate
    /// keys and for tests. Never logged.
    pub fn to_base64(&self) -> String {
        B64.encode(self.bytes)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 bytes 0x00..=0x13.
    const ENTRY: &str = "AAECAwQFBgcICQoLDA0ODxAREhM=";

    fn counting() -> [u8; KEY_SALT_LEN] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn dropping_a_key_wipes_its_bytes() {
        let mut k = core::mem::ManuallyDrop::new(Key::parse(ENTRY).unwrap());
        assert_eq!(k.bytes, counting());
        // SAFETY: the key is dropped in place once and never used as a key again; its bytes
        // (plain u8s in storage this test still owns) are only read.
        unsafe { core::ptr::drop_in_place(&mut *k) };
        assert_eq!(k.bytes, [0; KEY_SALT_LEN]);
    }

    #[test]
    fn parses_base64_of_twenty_bytes_with_or_without_padding() {
        let k = Key::parse(ENTRY).unwrap();
        assert_eq!(k.key_and_salt(), &counting());
        assert_eq!(Key::parse(ENTRY.trim_end_matches('=')).unwrap(), k);
        assert_eq!(Key::parse(&format!("  {ENTRY}\n")).unwrap(), k);
        assert_eq!(k.to_base64(), ENTRY);
    }

    #[test]
    fn refuses_other_lengths_and_non_base64_clearly() {
        assert_eq!(
            Key::parse("AAECAwQFBgcICQoLDA0ODxAREg=="),
            Err(KeyError::WrongLength(19))
        );
        assert_eq!(Key::parse(""), Err(KeyError::WrongLength(0)));
        let e = Key::parse("not base64!").unwrap_err();
        assert!(matches!(e, KeyError::NotBase64(_)), "{e:?}");
        assert!(e.to_string().starts_with("encryption key is not base64"));
        let e = Key::parse(&B64.encode([7u8; 32])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "encryption key is 32 bytes, need 20 (a 16-byte AES-128 key and a 4-byte salt), base64"
        );
    }

    #[test]
    fn the_id_is_a_hash_prefix_and_the_only_thing_printed() {
        let k = Key::from_bytes(counting());
        // SHA-256("vxmesh-key-id" || 00 01 .. 13)[..4], computed independently with
        // `python3 -c 'import hashlib; print(hashlib.sha256(b"vxmesh-key-id"+bytes(range(20))).hexdigest()[:8])'`.
        let id = k.id().to_string();
        assert_eq!(id, KEY_ID_COUNTING);
        assert_eq!(format!("{k}"), id);
        assert_eq!(format!("{k:?}"), format!("Key({id})"));
        assert_eq!(format!("{:?}", k.id()), id);
        for shown in [format!("{k}"), format!("{k:?}"), format!("{k:#?}")] {
            assert!(!shown.contains(ENTRY), "{shown}");
            assert!(!shown.contains("000102"), "{shown}");
        }
        // a different key, a different id
        let mut other = counting();
        other[19] ^= 1;
        assert_ne!(Key::from_bytes(other).id(), k.id());
    }

    /// The id of the key 00 01 .. 13.
    const KEY_ID_COUNTING: &str = "3d48685c";
}
