//! The key-encryption key (KEK): where it lives, how it is read, created
//! and replaced.
//!
//! ```text
//! <home>/keys/          0700
//!   secrets.key         0600  the KEK: 64 hex digits and a newline
//!   secrets.key.next    0600  only during (or after a crash in) a rekey
//!   secrets.lock        0600  flock(2) serializing key changes
//! ```
//!
//! A key file the operator names ([`KeySource::File`]) may hold 32 raw
//! bytes, 64 hex digits, or the 32 bytes in base64 (padding optional), with
//! surrounding whitespace. Every key file must be a regular file owned by
//! the user that reads it and closed to everyone else (no group or other
//! permission bits); anything else is refused with the `chmod` that fixes
//! it.
//!
//! A key is known by its [`KekId`]: the first 8 bytes of SHA-256 over a
//! label and the key. The id is stored beside every wrapped data key, so a
//! wrong key is reported as such ("the key file does not match this store")
//! instead of as a failed decryption, and reveals nothing useful about the
//! key.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use rustix::fs::{Mode, OFlags};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::{self, SecretKey, KEY_LEN};
use crate::error::SecretsError;
use crate::fs::{self as private_fs, Existing, FILE_MODE};

/// The directory of key files inside the home.
pub(crate) const KEYS_DIR: &str = "keys";
/// The KEK file inside [`KEYS_DIR`].
pub(crate) const KEY_FILE: &str = "secrets.key";
/// The new KEK while a rekey is under way.
pub(crate) const NEXT_KEY_FILE: &str = "secrets.key.next";
/// The lock file serializing key changes.
const LOCK_FILE: &str = "secrets.lock";
/// No key file is longer than this (base64 with whitespace is ~50 bytes).
const MAX_KEY_FILE_LEN: usize = 4096;
/// Label hashed in front of the key to make its id.
const ID_LABEL: &[u8] = b"airlock-kek-id-v1\0";

/// Where the key-encryption key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `HOME/keys/secrets.key`, created (random) on first use.
    Home,
    /// A key file the operator manages. It is never created, replaced or
    /// removed by the store.
    File(PathBuf),
}

/// The id of a key-encryption key: the first 8 bytes of
/// SHA-256(`airlock-kek-id-v1\0` ‖ key), shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KekId([u8; 8]);

impl KekId {
    /// The id of `key`.
    fn of(key: &[u8; KEY_LEN]) -> KekId {
        let digest = Sha256::new()
            .chain_update(ID_LABEL)
            .chain_update(key)
            .finalize();
        let mut id = [0_u8; 8];
        id.copy_from_slice(&digest[..8]);
        KekId(id)
    }

    /// An id read from the store, if it has the right length.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<KekId> {
        bytes.try_into().ok().map(KekId)
    }

    /// The id's 8 bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KekId({self})")
    }
}

impl Serialize for KekId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A loaded key-encryption key. Its bytes are wiped on drop and never
/// shown by `Debug`.
pub(crate) struct Kek {
    key: SecretKey,
    id: KekId,
    path: PathBuf,
}

impl Kek {
    fn new(key: SecretKey, path: PathBuf) -> Kek {
        Kek {
            id: KekId::of(&key),
            key,
            path,
        }
    }

    /// The key's id.
    pub(crate) fn id(&self) -> KekId {
        self.id
    }

    /// The file the key was read from (or will be written to).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The key itself.
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What the store says about its key: the id its data keys are wrapped
/// with, and how many there are. `None` for a store without secrets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreKey {
    pub(crate) id: KekId,
    pub(crate) versions: u64,
}

/// An exclusive `flock` on `keys/secrets.lock`, held while a key file is
/// created, chosen or replaced and for a whole rekey, so that no process
/// reads a key half-way through another's rekey or recovers one that is
/// still running. Released on drop (and by the kernel if the process dies).
#[derive(Debug)]
pub(crate) struct KeyLock {
    _file: File,
}

impl KeyLock {
    /// Creates `keys_dir` (0700) if needed, checks that others cannot write
    /// to it, and takes the lock, waiting for another holder.
    pub(crate) fn acquire(keys_dir: &Path) -> Result<KeyLock, SecretsError> {
        private_fs::create_private_dir_all(keys_dir)?;
        check_keys_dir(keys_dir)?;
        let path = keys_dir.join(LOCK_FILE);
        let io_err = |source| SecretsError::KeyIo {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io_err)?;
        file.lock().map_err(io_err)?;
        Ok(KeyLock { _file: file })
    }
}

/// Refuses a keys directory that others can write to: they could replace
/// the key file.
fn check_keys_dir(keys_dir: &Path) -> Result<(), SecretsError> {
    let meta = std::fs::metadata(keys_dir).map_err(|source| SecretsError::KeyIo {
        path: keys_dir.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SecretsError::KeyPermissions {
            path: keys_dir.to_owned(),
            mode,
            fix: private_fs::DIR_MODE,
        });
    }
    Ok(())
}

/// Chooses the key for `source`, with the lock held. `store` is what the
/// store says about its key, read with the lock held.
///
/// For [`KeySource::Home`]: the key file if it matches the store (or the
/// store is empty); else a `secrets.key.next` that matches, left by a rekey
/// that committed but crashed before renaming it into place: the rename is
/// completed now. A `.next` that does not match is the leftover of a rekey
/// that crashed before committing; it opens nothing and is removed. With no
/// key file and an empty store, a random key is created; with no key file
/// and secrets in the store, nothing is created ([`SecretsError::KeyMissing`]).
pub(crate) fn resolve(
    _lock: &KeyLock,
    keys_dir: &Path,
    source: &KeySource,
    store: Option<StoreKey>,
) -> Result<Kek, SecretsError> {
    match source {
        KeySource::File(path) => {
            let kek = read_key_file(path, true)?
                .ok_or_else(|| SecretsError::KeyFileMissing { path: path.clone() })?;
            match store {
                Some(store) if store.id != kek.id => Err(SecretsError::KeyMismatch {
                    path: path.clone(),
                    expected: store.id,
                    found: kek.id,
                }),
                _ => Ok(kek),
            }
        }
        KeySource::Home => resolve_home(keys_dir, store),
    }
}

fn resolve_home(keys_dir: &Path, store: Option<StoreKey>) -> Result<Kek, SecretsError> {
    let path = keys_dir.join(KEY_FILE);
    let next_path = keys_dir.join(NEXT_KEY_FILE);
    let current = read_key_file(&path, false)?;
    let next = read_key_file(&next_path, false)?;
    let opens_store = |kek: &Kek| store.is_none_or(|s| s.id == kek.id);
    if let Some(current) = current.as_ref().filter(|k| opens_store(k)) {
        if next.is_some() {
            // The leftover of a rekey that crashed before committing: it
            // opens nothing, and no rekey is running (we hold the lock).
            remove_stale(&next_path, keys_dir)?;
        }
        return Ok(Kek::new(current.key.clone(), path));
    }
    if let (Some(store), Some(next)) = (store, next.as_ref()) {
        if next.id == store.id {
            // A rekey that committed but crashed before its key swap:
            // finish the swap.
            std::fs::rename(&next_path, &path)
                .and_then(|()| private_fs::sync_dir(keys_dir))
                .map_err(|source| SecretsError::KeyIo {
                    path: path.clone(),
                    source,
                })?;
            return Ok(Kek::new(next.key.clone(), path));
        }
    }
    match (store, current) {
        (Some(store), Some(found)) => Err(SecretsError::KeyMismatch {
            path,
            expected: store.id,
            found: found.id,
        }),
        (Some(store), None) => Err(SecretsError::KeyMissing {
            path,
            store_key: store.id,
            versions: store.versions,
        }),
        (None, _) => {
            // Empty store and no key file: first use.
            let kek = Kek::new(crypto::random_key()?, path);
            write_key_file(keys_dir, KEY_FILE, &kek, Existing::Keep)?;
            Ok(kek)
        }
    }
}

fn remove_stale(path: &Path, keys_dir: &Path) -> Result<(), SecretsError> {
    std::fs::remove_file(path)
        .and_then(|()| private_fs::sync_dir(keys_dir))
        .map_err(|source| SecretsError::KeyIo {
            path: path.to_owned(),
            source,
        })
}

/// A fresh random key that will live at `keys_dir/NEXT_KEY_FILE` and then
/// at `keys_dir/KEY_FILE`.
pub(crate) fn generate(keys_dir: &Path) -> Result<Kek, SecretsError> {
    Ok(Kek::new(crypto::random_key()?, keys_dir.join(KEY_FILE)))
}

/// Reads the key of `source` without comparing it to any store: the new
/// key of a rekey to an operator's file.
pub(crate) fn read_operator_key(path: &Path) -> Result<Kek, SecretsError> {
    read_key_file(path, true)?.ok_or_else(|| SecretsError::KeyFileMissing {
        path: path.to_owned(),
    })
}

/// Writes `kek` durably to `keys_dir/name` (mode 0600).
pub(crate) fn write_key_file(
    keys_dir: &Path,
    name: &str,
    kek: &Kek,
    existing: Existing,
) -> Result<(), SecretsError> {
    let mut text = Zeroizing::new(Vec::with_capacity(KEY_LEN * 2 + 1));
    for b in kek.key.iter() {
        text.push(HEX_DIGITS[usize::from(b >> 4)]);
        text.push(HEX_DIGITS[usize::from(b & 0xf)]);
    }
    text.push(b'\n');
    // With `Existing::Keep` an existing file is an error; that cannot
    // happen while the lock is held, and is refused rather than guessed at.
    private_fs::write_atomic(keys_dir, name, &text, existing)
        .map(drop)
        .map_err(|source| SecretsError::KeyIo {
            path: keys_dir.join(name),
            source,
        })
}

/// Renames `keys_dir/NEXT_KEY_FILE` over `keys_dir/KEY_FILE` and makes it
/// durable.
pub(crate) fn promote_next(keys_dir: &Path) -> Result<(), SecretsError> {
    let path = keys_dir.join(KEY_FILE);
    std::fs::rename(keys_dir.join(NEXT_KEY_FILE), &path)
        .and_then(|()| private_fs::sync_dir(keys_dir))
        .map_err(|source| SecretsError::KeyIo { path, source })
}

/// Removes `keys_dir/NEXT_KEY_FILE` after a failed rekey, if it is there.
pub(crate) fn discard_next(keys_dir: &Path) -> Result<(), SecretsError> {
    let path = keys_dir.join(NEXT_KEY_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other
            .and_then(|()| private_fs::sync_dir(keys_dir))
            .map_err(|source| SecretsError::KeyIo { path, source }),
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Reads and checks a key file; `None` if it does not exist. With `follow`
/// false, a symbolic link is refused (the home's key file is ours and is
/// never a link).
pub(crate) fn read_key_file(path: &Path, follow: bool) -> Result<Option<Kek>, SecretsError> {
    let io_err = |source| SecretsError::KeyIo {
        path: path.to_owned(),
        source,
    };
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) if !follow => {
            return Err(SecretsError::KeyFormat {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(io_err(e.into())),
    };
    let file = File::from(fd);
    // Check the file that is open, not the path, which may change.
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(SecretsError::KeyFormat {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::KeyPermissions {
            path: path.to_owned(),
            mode,
            fix: FILE_MODE,
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(SecretsError::KeyOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    // Room for one byte more than allowed, so that the buffer never grows
    // (growing would leave an unwiped copy behind).
    let mut contents = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN + 64));
    file.take(u64::try_from(MAX_KEY_FILE_LEN + 1).unwrap_or(u64::MAX))
        .read_to_end(&mut contents)
        .map_err(io_err)?;
    let key = parse_key(&contents).ok_or_else(|| SecretsError::KeyFormat {
        path: path.to_owned(),
    })?;
    Ok(Some(Kek::new(key, path.to_owned())))
}

/// A key from a key file's contents: 32 raw bytes, or 64 hex digits, or
/// base64 of 32 bytes, surrounded by optional whitespace.
fn parse_key(contents: &[u8]) -> Option<SecretKey> {
    let mut key = Zeroizing::new([0_u8; KEY_LEN]);
    if contents.len() == KEY_LEN {
        key.copy_from_slice(contents);
        return Some(key);
    }
    let text = contents.trim_ascii();
    if text.len() == KEY_LEN * 2 {
        for (out, pair) in key.iter_mut().zip(text.chunks_exact(2)) {
            *out = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
        }
        return Some(key);
    }
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut decoded = Zeroizing::new([0_u8; KEY_LEN + 16]);
    if text.len() > 44 {
        return None;
    }
    let n = BASE64.decode_slice(text, &mut decoded[..]).ok()?;
    if n != KEY_LEN {
        return None;
    }
    key.copy_from_slice(&decoded[..KEY_LEN]);
    Some(key)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats() {
        let raw: Vec<u8> = (0..32).collect();
        let want = parse_key(&raw).expect("raw");
        let hex_text = format!("{}\n", hex(&raw));
        assert_eq!(*parse_key(hex_text.as_bytes()).expect("hex"), *want);
        assert_eq!(
            *parse_key(hex(&raw).to_uppercase().as_bytes()).expect("HEX"),
            *want
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert_eq!(
            *parse_key(format!("  {b64}\n").as_bytes()).expect("b64"),
            *want
        );
        assert_eq!(
            *parse_key(b64.trim_end_matches('=').as_bytes()).expect("b64 no pad"),
            *want
        );
        for bad in [
            &b""[..],
            b"\n",
            &[0_u8; 31],
            &[0_u8; 33],
            b"zz",
            &[b'g'; 64],
        ] {
            assert!(parse_key(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = [1_u8; 32];
        let b = [2_u8; 32];
        assert_eq!(KekId::of(&a), KekId::of(&a));
        assert_ne!(KekId::of(&a), KekId::of(&b));
        assert_eq!(KekId::of(&a).to_string().len(), 16);
    }

    #[test]
    fn debug_hides_the_key() {
        let kek = Kek::new(Zeroizing::new([0x41; 32]), PathBuf::from("/k"));
        let shown = format!("{kek:?}");
        assert!(
            !shown.contains("65, 65") && !shown.contains("4141"),
            "{shown}"
        );
    }
}
