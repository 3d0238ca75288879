//! Envelope encryption with XChaCha20-Poly1305.
//!
//! Each secret version has its own random 256-bit data key (DEK). The value
//! is sealed with the DEK, and the DEK with the key-encryption key (KEK);
//! each seal uses a fresh random 192-bit nonce, so nonces never repeat in
//! practice (XChaCha's nonce is long enough to pick at random). Both seals
//! carry the associated data `airlock-secret-v1\0NAME\0VERSION`, so a value
//! or a wrapped key copied to another secret or version fails to open.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::SecretsError;

/// Length of KEKs and DEKs.
pub(crate) const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Length of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;

/// A 256-bit key that is wiped when dropped.
pub(crate) type SecretKey = Zeroizing<[u8; KEY_LEN]>;

/// The associated data of secret `name`, version `version`.
pub(crate) fn aad(name: &str, version: u32) -> Vec<u8> {
    format!("airlock-secret-v1\0{name}\0{version}").into_bytes()
}

/// Fills `buf` from the operating system's random number generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), SecretsError> {
    getrandom::fill(buf).map_err(SecretsError::Random)
}

/// A fresh random key.
pub(crate) fn random_key() -> Result<SecretKey, SecretsError> {
    let mut key = Zeroizing::new([0_u8; KEY_LEN]);
    fill_random(&mut key[..])?;
    Ok(key)
}

/// A nonce and the ciphertext (with its tag) sealed under it.
pub(crate) struct Sealed {
    /// The random nonce.
    pub(crate) nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub(crate) ciphertext: Vec<u8>,
}

/// Seals `plaintext` under `key` with a fresh random nonce.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, SecretsError> {
    let mut nonce = [0_u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    // Encrypt in place in a buffer that is wiped on drop and never
    // reallocated (it has room for the tag), so no stray copy of the
    // plaintext is left in freed memory.
    let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buffer.extend_from_slice(plaintext);
    XChaCha20Poly1305::new(key.into())
        .encrypt_in_place(XNonce::from_slice(&nonce), aad, &mut *buffer)
        .expect("XChaCha20-Poly1305 seals any message below 256 GiB into a growable Vec");
    Ok(Sealed {
        nonce,
        ciphertext: std::mem::take(&mut *buffer),
    })
}

/// Opens `ciphertext` sealed under `key` and `nonce`; `None` when it fails
/// authentication (wrong key, wrong associated data, or changed bytes).
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if nonce.len() != NONCE_LEN || ciphertext.len() < TAG_LEN {
        return None;
    }
    let mut buffer = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    buffer.extend_from_slice(ciphertext);
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place(XNonce::from_slice(nonce), aad, &mut *buffer)
        .ok()?;
    Some(buffer)
}

/// Opens a wrapped 256-bit key; `None` when it fails authentication or is
/// not 32 bytes long.
pub(crate) fn open_key(
    kek: &[u8; KEY_LEN],
    aad: &[u8],
    nonce: &[u8],
    wrapped: &[u8],
) -> Option<SecretKey> {
    let plain = open(kek, aad, nonce, wrapped)?;
    let mut key = Zeroizing::new([0_u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return None;
    }
    key.copy_from_slice(&plain);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let key = random_key().expect("key");
        let sealed = seal(&key, &aad("A", 1), b"hello world").expect("seal");
        assert_eq!(sealed.ciphertext.len(), 11 + TAG_LEN);
        let opened = open(&key, &aad("A", 1), &sealed.nonce, &sealed.ciphertext).expect("open");
        assert_eq!(&opened[..], b"hello world");
        assert!(open(&key, &aad("A", 2), &sealed.nonce, &sealed.ciphertext).is_none());
        assert!(open(&key, &aad("B", 1), &sealed.nonce, &sealed.ciphertext).is_none());
        let other = random_key().expect("key");
        assert!(open(&other, &aad("A", 1), &sealed.nonce, &sealed.ciphertext).is_none());
        assert!(open(&key, &aad("A", 1), &sealed.nonce[..23], &sealed.ciphertext).is_none());
        assert!(open(&key, &aad("A", 1), &sealed.nonce, &sealed.ciphertext[..10]).is_none());
    }

    #[test]
    fn nonces_are_fresh() {
        let key = random_key().expect("key");
        let a = seal(&key, b"", b"same").expect("seal");
        let b = seal(&key, b"", b"same").expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn aad_separates_name_and_version() {
        // "A1" v1 and "A" v11 must not share associated data.
        assert_ne!(aad("A1", 1), aad("A", 11));
        assert_eq!(aad("X", 7), b"airlock-secret-v1\0X\x007".to_vec());
    }
}
