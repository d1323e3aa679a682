//! The two AEADs of netcode 1.02 and the keys they take.
//!
//! - Packets and challenge tokens: ChaCha20-Poly1305 (IETF, RFC 8439) with a 12-byte nonce of
//!   four zero bytes and the 64-bit sequence number, little endian.
//! - The private part of a connect token: XChaCha20-Poly1305 with the token's random 24-byte
//!   nonce.
//!
//! Both seal in place and keep the 16-byte tag after the ciphertext.

use std::fmt;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Tag, XChaCha20Poly1305, XNonce};

/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// Bytes of the authentication tag after each sealed part.
pub const MAC_BYTES: usize = 16;
/// Bytes of a connect token's nonce.
pub const NONCE_BYTES: usize = 24;

/// A 256-bit symmetric key: the server's private key (shared with whatever issues connect
/// tokens), or one direction's packet key. Its `Debug` shows no key material.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; KEY_BYTES]);

impl Key {
    /// A key from the operating system's random source.
    pub fn random() -> Key {
        Key(random_bytes())
    }

    /// A key from 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Key> {
        let hex = hex.trim();
        if hex.len() != 2 * KEY_BYTES || !hex.is_ascii() {
            return None;
        }
        let mut key = [0; KEY_BYTES];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Key(key))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The AEAD refused: the bytes were not sealed under this key, nonce and associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forged;

/// Fills an array from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Seals `buf[..len - MAC_BYTES]` in place under ChaCha20-Poly1305 with the sequence nonce
/// and writes the tag into the last [`MAC_BYTES`].
pub(crate) fn seal(buf: &mut [u8], sequence: u64, key: &Key, aad: &[u8]) {
    let (plain, tag_out) = buf.split_at_mut(buf.len() - MAC_BYTES);
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    // Encryption fails only for inputs past 2^38 bytes; netcode's are at most a few KiB.
    let tag = cipher
        .encrypt_in_place_detached(&sequence_nonce(sequence).into(), aad, plain)
        .unwrap_or_default();
    tag_out.copy_from_slice(&tag);
}

/// Opens what [`seal`] made, in place; on success `buf[..len - MAC_BYTES]` is the plaintext.
pub(crate) fn open(buf: &mut [u8], sequence: u64, key: &Key, aad: &[u8]) -> Result<(), Forged> {
    if buf.len() < MAC_BYTES {
        return Err(Forged);
    }
    let (sealed, tag) = buf.split_at_mut(buf.len() - MAC_BYTES);
    let cipher = ChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt_in_place_detached(
            &sequence_nonce(sequence).into(),
            aad,
            sealed,
            Tag::from_slice(tag),
        )
        .map_err(|_| Forged)
}

/// [`seal`] with XChaCha20-Poly1305 and a 24-byte nonce.
pub(crate) fn seal_x(buf: &mut [u8], nonce: &[u8; NONCE_BYTES], key: &Key, aad: &[u8]) {
    let (plain, tag_out) = buf.split_at_mut(buf.len() - MAC_BYTES);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, plain)
        .unwrap_or_default();
    tag_out.copy_from_slice(&tag);
}

/// [`open`] with XChaCha20-Poly1305 and a 24-byte nonce.
pub(crate) fn open_x(
    buf: &mut [u8],
    nonce: &[u8; NONCE_BYTES],
    key: &Key,
    aad: &[u8],
) -> Result<(), Forged> {
    if buf.len() < MAC_BYTES {
        return Err(Forged);
    }
    let (sealed, tag) = buf.split_at_mut(buf.len() - MAC_BYTES);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, sealed, Tag::from_slice(tag))
        .map_err(|_| Forged)
}

/// Four zero bytes, then the sequence number little endian.
fn sequence_nonce(sequence: u64) -> [u8; 12] {
    let mut nonce = [0; 12];
    nonce[4..].copy_from_slice(&sequence.to_le_bytes());
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_under_the_same_key_sequence_and_data() {
        let key = Key([7; 32]);
        let mut buf = *b"sixteen byte msg................";
        let plain = buf;
        seal(&mut buf, 9, &key, b"aad");
        assert_ne!(buf[..16], plain[..16]);
        let mut copy = buf;
        assert_eq!(open(&mut copy, 8, &key, b"aad"), Err(Forged));
        let mut copy = buf;
        assert_eq!(open(&mut copy, 9, &Key([8; 32]), b"aad"), Err(Forged));
        let mut copy = buf;
        assert_eq!(open(&mut copy, 9, &key, b"aae"), Err(Forged));
        open(&mut buf, 9, &key, b"aad").unwrap();
        assert_eq!(buf[..16], plain[..16]);
    }

    #[test]
    fn rfc8439_aead_vector() {
        // RFC 8439 section 2.8.2: the cipher under netcode's sealing is the standard one.
        let key = Key(std::array::from_fn(|i| 0x80 + i as u8));
        let aad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let nonce = [
            0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
        ];
        let text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut buf = text.to_vec();
        let cipher = ChaCha20Poly1305::new((&key.0).into());
        let tag = cipher
            .encrypt_in_place_detached(&nonce.into(), &aad, &mut buf)
            .unwrap();
        assert_eq!(buf[..4], [0xd3, 0x1a, 0x8d, 0x34]);
        assert_eq!(
            tag.as_slice(),
            [
                0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60,
                0x06, 0x91
            ]
        );
    }

    #[test]
    fn hex_keys_parse_and_refuse() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert_eq!(Key::from_hex(hex).unwrap().0[1], 0x11);
        assert!(Key::from_hex(&hex[1..]).is_none());
        assert!(Key::from_hex(&hex.replace('a', "g")).is_none());
        assert_eq!(format!("{:?}", Key([1; 32])), "Key(..)");
    }
}
