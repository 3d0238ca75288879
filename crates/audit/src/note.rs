//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519, as in
//! `golang.org/x/mod/sumdb/note`.
//!
//! ```text
//! <text: UTF-8 lines, each ending in a newline>
//! <blank line>
//! — <name> <base64(key id[4] ‖ signature[64])>
//! ...
//! ```
//!
//! The signature is Ed25519 over the text (with its final newline, without
//! the blank line). The key id is the first four bytes of
//! `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`, big-endian. A verifier key
//! is written `<name>+<key id as 8 hex digits>+<base64(0x01 ‖ public key)>`
//! and a signer key `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`,
//! both exactly as the Go package writes them, so keys and notes
//! interoperate with Go and Python tooling.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The algorithm byte of Ed25519 keys.
pub const ALG_ED25519: u8 = 0x01;
/// The prefix of every signature line: an em dash (U+2014) and a space.
pub const SIG_PREFIX: &str = "\u{2014} ";
/// More signatures than this make a note malformed (as in Go).
const MAX_SIGNATURES: usize = 100;
/// The prefix of a signer (private) key string.
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

/// Why a note or key cannot be parsed, signed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// A key name is empty, contains a `+` or whitespace, or is not UTF-8.
    #[error("invalid key name {name:?}: must be non-empty, without '+' or whitespace")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A verifier or signer key string is not of the expected form.
    #[error("malformed {what} key: {reason}")]
    MalformedKey {
        /// "verifier" or "signer".
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The key id in a key string does not match its name and key.
    #[error("key {name}: key id {found:08x} does not match the key (expected {expected:08x})")]
    KeyIdMismatch {
        /// The key's name.
        name: String,
        /// The id written in the key string.
        found: u32,
        /// The id computed from name and key.
        expected: u32,
    },
    /// The text to sign is not a valid note text.
    #[error("cannot sign: {reason}")]
    InvalidText {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The note is not a well-formed signed note.
    #[error("malformed note: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A signature by a known key does not verify.
    #[error("invalid signature by {name} (key id {key_id:08x})")]
    InvalidSignature {
        /// The key's name.
        name: String,
        /// The key id.
        key_id: u32,
    },
    /// No signature in the note is by a known key.
    #[error("note has no signature by a known key (signed by: {signers})")]
    NoKnownSignature {
        /// The names on the note's signature lines, comma-separated.
        signers: String,
    },
}

/// The key id of an Ed25519 key: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[..4].
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(public_key)
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Whether `name` may name a key: non-empty, no `+`, no whitespace.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Splits `<name>+<hex id>+<base64>` into its parts.
fn split_key<'a>(
    text: &'a str,
    what: &'static str,
) -> Result<(&'a str, u32, Zeroizing<Vec<u8>>), NoteError> {
    let malformed = |reason| NoteError::MalformedKey { what, reason };
    // The base64 key may itself contain '+': split off two fields only.
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("expected <name>+<key id>+<base64 key>"));
    };
    check_name(name)?;
    let id = crate::hex::decode_array::<4>(id.as_bytes())
        .map(u32::from_be_bytes)
        .ok_or_else(|| malformed("key id is not 8 hex digits"))?;
    let key = Zeroizing::new(
        BASE64
            .decode(b64)
            .map_err(|_| malformed("key is not base64"))?,
    );
    if key.len() != 33 || key[0] != ALG_ED25519 {
        return Err(malformed("key is not an Ed25519 key (0x01 and 32 bytes)"));
    }
    Ok((name, id, key))
}

/// A public key that verifies notes: a name and an Ed25519 key.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// A verifier for `name` and the Ed25519 public key `public_key`.
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<NoteVerifier, NoteError> {
        check_name(name)?;
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| NoteError::MalformedKey {
            what: "verifier",
            reason: "not a valid Ed25519 public key",
        })?;
        Ok(NoteVerifier {
            name: name.to_owned(),
            key_id: key_id(name, public_key),
            key,
        })
    }

    /// The key's name (a checkpoint's origin line).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `signature` is this key's signature over `message`.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &signature).is_ok()
    }
}

impl FromStr for NoteVerifier {
    type Err = NoteError;

    /// Parses `<name>+<key id>+<base64(0x01 ‖ key)>`, surrounding
    /// whitespace allowed.
    fn from_str(text: &str) -> Result<NoteVerifier, NoteError> {
        let (name, id, key) = split_key(text.trim(), "verifier")?;
        let mut public = [0_u8; 32];
        public.copy_from_slice(&key[1..]);
        let verifier = NoteVerifier::new(name, &public)?;
        if verifier.key_id != id {
            return Err(NoteError::KeyIdMismatch {
                name: name.to_owned(),
                found: id,
                expected: verifier.key_id,
            });
        }
        Ok(verifier)
    }
}

impl fmt::Display for NoteVerifier {
    /// `<name>+<key id>+<base64(0x01 ‖ key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = [0_u8; 33];
        key[0] = ALG_ED25519;
        key[1..].copy_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            BASE64.encode(key)
        )
    }
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteVerifier({self})")
    }
}

/// A private key that signs notes. Its seed is wiped on drop (the
/// `ed25519-dalek` key zeroizes itself) and never shown by `Debug`.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer named `name` with the Ed25519 key from `seed`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(NoteSigner {
            key_id: key_id(name, key.verifying_key().as_bytes()),
            name: name.to_owned(),
            key,
        })
    }

    /// A signer with a fresh random key.
    pub fn generate(name: &str) -> Result<NoteSigner, getrandom::Error> {
        let mut seed = Zeroizing::new([0_u8; 32]);
        getrandom::fill(&mut seed[..])?;
        // A generated name is the caller's; a bad one is a programming
        // error reported the same way as a failed random source.
        NoteSigner::from_seed(name, &seed).map_err(|_| getrandom::Error::UNSUPPORTED)
    }

    /// Parses `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`.
    pub fn parse(text: &str) -> Result<NoteSigner, NoteError> {
        let rest = text
            .trim()
            .strip_prefix(PRIVATE_PREFIX)
            .ok_or(NoteError::MalformedKey {
                what: "signer",
                reason: "does not start with PRIVATE+KEY+",
            })?;
        let (name, id, key) = split_key(rest, "signer")?;
        let mut seed = Zeroizing::new([0_u8; 32]);
        seed.copy_from_slice(&key[1..]);
        let signer = NoteSigner::from_seed(name, &seed)?;
        if signer.key_id != id {
            return Err(NoteError::KeyIdMismatch {
                name: name.to_owned(),
                found: id,
                expected: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The key as `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`.
    pub fn to_private_string(&self) -> Zeroizing<String> {
        let mut key = Zeroizing::new([0_u8; 33]);
        key[0] = ALG_ED25519;
        key[1..].copy_from_slice(self.key.as_bytes());
        let encoded = Zeroizing::new(BASE64.encode(&key[..]));
        Zeroizing::new(format!(
            "{PRIVATE_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            encoded.as_str()
        ))
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` and returns the whole note: text, blank line, one
    /// signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text).map_err(|reason| NoteError::InvalidText { reason })?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(blob)
        ))
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// A note's text must be non-empty, end in a newline, contain no blank
/// line at its end, and no control character but newline.
fn check_text(text: &str) -> Result<(), &'static str> {
    if !text.ends_with('\n') {
        return Err("text does not end in a newline");
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err("text contains a control character");
    }
    if text.starts_with('\n') || text.contains("\n\n") {
        return Err("text contains a blank line");
    }
    Ok(())
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's name.
    pub name: String,
    /// The key id.
    pub key_id: u32,
    /// The signature bytes (without the key id).
    pub signature: Vec<u8>,
}

/// A parsed note and which of its signatures verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Signatures by known keys that verified (at least one).
    pub verified: Vec<NoteSignature>,
    /// Signatures by keys the caller does not know (ignored).
    pub unverified: Vec<NoteSignature>,
}

/// Splits a note into its text and signature lines without verifying.
pub fn parse(note: &str) -> Result<(String, Vec<NoteSignature>), NoteError> {
    let malformed = |reason| NoteError::Malformed { reason };
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(malformed("contains a control character"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or(malformed("no blank line before the signatures"))?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    check_text(text).map_err(malformed)?;
    if !sigs.ends_with('\n') {
        return Err(malformed("no signature lines, or no final newline"));
    }
    let mut out = Vec::new();
    for line in sigs[..sigs.len() - 1].split('\n') {
        if out.len() == MAX_SIGNATURES {
            return Err(malformed("too many signatures"));
        }
        let line = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(malformed("signature line does not start with an em dash"))?;
        let (name, b64) = line
            .split_once(' ')
            .ok_or(malformed("signature line without a space"))?;
        if !is_valid_name(name) || b64.is_empty() {
            return Err(malformed("bad signer name or empty signature"));
        }
        let blob = BASE64
            .decode(b64)
            .map_err(|_| malformed("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(malformed("signature too short"));
        }
        out.push(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]),
            signature: blob[4..].to_vec(),
        });
    }
    Ok((text.to_owned(), out))
}

/// Parses `note` and verifies it against `verifiers`: signatures by
/// unknown keys are ignored, a signature by a known key that does not
/// verify is an error, and at least one known signature is required.
pub fn open(note: &str, verifiers: &[NoteVerifier]) -> Result<Note, NoteError> {
    let (text, signatures) = parse(note)?;
    let mut verified: Vec<NoteSignature> = Vec::new();
    let mut unverified = Vec::new();
    for sig in signatures {
        let known = verifiers
            .iter()
            .find(|v| v.name == sig.name && v.key_id == sig.key_id);
        match known {
            Some(v) => {
                if !v.verifies(text.as_bytes(), &sig.signature) {
                    return Err(NoteError::InvalidSignature {
                        name: sig.name,
                        key_id: sig.key_id,
                    });
                }
                if !verified.contains(&sig) {
                    verified.push(sig);
                }
            }
            None => unverified.push(sig),
        }
    }
    if verified.is_empty() {
        let signers = unverified
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(NoteError::NoKnownSignature { signers });
    }
    Ok(Note {
        text,
        verified,
        unverified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_open() {
        let signer = NoteSigner::from_seed("example.com/log", &[7; 32]).expect("signer");
        let other = NoteSigner::from_seed("other", &[8; 32]).expect("signer");
        let note = signer.sign("hello\nworld\n").expect("sign");
        assert!(note.starts_with("hello\nworld\n\n\u{2014} example.com/log "));
        let opened = open(&note, &[signer.verifier()]).expect("open");
        assert_eq!(opened.text, "hello\nworld\n");
        // An extra signature by an unknown key is ignored.
        let extra = other.sign("hello\nworld\n").expect("sign");
        let both = format!("{note}{}", &extra["hello\nworld\n\n".len()..]);
        let opened = open(&both, &[signer.verifier()]).expect("open both");
        assert_eq!(opened.unverified.len(), 1);
        // Only unknown signatures: refused.
        assert!(matches!(
            open(&extra, &[signer.verifier()]),
            Err(NoteError::NoKnownSignature { .. })
        ));
        // A tampered text fails a known signature.
        let tampered = note.replacen("world", "World", 1);
        assert!(matches!(
            open(&tampered, &[signer.verifier()]),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn keys_round_trip() {
        let signer = NoteSigner::from_seed("a.b/c", &[1; 32]).expect("signer");
        let private = signer.to_private_string();
        let again = NoteSigner::parse(&private).expect("parse");
        assert_eq!(again.verifier(), signer.verifier());
        let vkey = signer.verifier().to_string();
        let parsed: NoteVerifier = vkey.parse().expect("vkey");
        assert_eq!(parsed, signer.verifier());
        // A wrong key id is caught.
        let (head, tail) = vkey.split_once('+').expect("plus");
        let bad = format!("{head}+00000000+{}", tail.split_once('+').expect("plus").1);
        assert!(matches!(
            bad.parse::<NoteVerifier>(),
            Err(NoteError::KeyIdMismatch { .. })
        ));
        assert!(format!("{signer:?}").len() < 80);
    }

    #[test]
    fn go_test_vector() {
        // From golang.org/x/mod/sumdb/note's example: the key "PeterNeumann".
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let note = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let verifier: NoteVerifier = vkey.parse().expect("vkey");
        let opened = open(note, std::slice::from_ref(&verifier)).expect("go note verifies");
        assert!(opened.text.starts_with("If you think"));
        // Ed25519 is deterministic: the Go signer key makes the same note.
        let signer = NoteSigner::parse(
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        )
        .expect("go signer key");
        assert_eq!(signer.verifier(), verifier);
        assert_eq!(signer.sign(&opened.text).expect("sign"), note);
    }

    #[test]
    fn malformed_notes() {
        let signer = NoteSigner::from_seed("n", &[2; 32]).expect("signer");
        let v = [signer.verifier()];
        for bad in [
            "",
            "text\n",
            "text\n\n",
            "text\n\n- n AAAA\n",
            "text\n\n\u{2014} n !!!\n",
            "text\n\n\u{2014} n AAAAAAAA",
            "te\x01xt\n\n\u{2014} n AAAAAAAA\n",
        ] {
            assert!(
                matches!(open(bad, &v), Err(NoteError::Malformed { .. })),
                "{bad:?}"
            );
        }
        assert!(signer.sign("no newline").is_err());
        assert!(signer.sign("blank\n\nline\n").is_err());
    }
}
