//! The audit log's signing key: where it lives, how it is read and created.
//!
//! ```text
//! <home>/keys/       0700
//!   audit.key        0600  PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>
//!   audit.pub        0644  <name>+<key id>+<base64(0x01 ‖ public key)>
//! ```
//!
//! Both are in the format of `golang.org/x/mod/sumdb/note`. The key name,
//! which is also every checkpoint's origin line, is `airlock.audit/<host>`
//! with the host name at creation time. The key file must be a regular
//! file owned by the reader with no group or other permission bits; the
//! public file is what an operator hands to verifiers (and may be copied
//! anywhere).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use zeroize::Zeroizing;

use crate::note::{NoteError, NoteSigner, NoteVerifier};
use durable::fs::{self as private_fs, Existing, FILE_MODE};

/// The key file inside the keys directory.
pub const KEY_FILE: &str = "audit.key";
/// The public (verifier) key file inside the keys directory.
pub const PUB_FILE: &str = "audit.pub";
/// The prefix of generated key names.
pub const NAME_PREFIX: &str = "airlock.audit/";
/// No key file is longer than this.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Why the audit key cannot be read or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file or the keys directory could not be read or written.
    #[error("audit key {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The key file is readable by others.
    #[error("audit key {path} has mode {mode:04o}; it must not be accessible to group or others (chmod {fix:04o} {path})")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// The mode to set.
        fix: u32,
    },
    /// The key file belongs to another user.
    #[error("audit key {path} is owned by uid {owner}, not by uid {me}")]
    Owner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The reader.
        me: u32,
    },
    /// The key file is not a regular file or is too long.
    #[error("audit key {path} is not a regular key file")]
    NotAKeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// The key file's contents are not a key.
    #[error("audit key {path}: {source}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: NoteError,
    },
    /// No random bytes for a new key.
    #[error("cannot generate an audit key: {0}")]
    Random(getrandom::Error),
}

/// Whether [`AuditKey::load_or_create`] found the key or made it. A
/// created key must be logged (an `audit_key_created` entry) by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// The key file existed.
    Loaded,
    /// There was no key file; a new key was generated and written.
    Created,
}

/// The audit log's signing key.
#[derive(Debug, Clone)]
pub struct AuditKey {
    signer: NoteSigner,
}

impl AuditKey {
    /// Reads `keys_dir/audit.key`, or creates it (and `audit.pub`) with a
    /// fresh key named `airlock.audit/<host name>` if there is none. Safe
    /// against concurrent callers: the key file is published with a hard
    /// link, so exactly one key wins and every caller loads it.
    pub fn load_or_create(keys_dir: &Path) -> Result<(AuditKey, KeyStatus), KeyError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        private_fs::create_private_dir_all(keys_dir).map_err(io_err(keys_dir))?;
        let path = keys_dir.join(KEY_FILE);
        if let Some(key) = read_key_file(&path)? {
            key.write_public(keys_dir, false)?;
            return Ok((key, KeyStatus::Loaded));
        }
        let key = AuditKey::generate(&default_name())?;
        let private = key.signer.to_private_string();
        let mut text = Zeroizing::new(private.as_bytes().to_vec());
        text.push(b'\n');
        match private_fs::write_atomic(keys_dir, KEY_FILE, &text, Existing::Keep) {
            Ok(_) => {
                key.write_public(keys_dir, true)?;
                Ok((key, KeyStatus::Created))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Another process created it first: use theirs.
                let key = read_key_file(&path)?.ok_or_else(|| KeyError::Io {
                    path: path.clone(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })?;
                key.write_public(keys_dir, false)?;
                Ok((key, KeyStatus::Loaded))
            }
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    /// Reads the key file at `path` (which must exist).
    pub fn load(path: &Path) -> Result<AuditKey, KeyError> {
        read_key_file(path)?.ok_or_else(|| KeyError::Io {
            path: path.to_owned(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }

    /// A fresh key named `name`, in memory only.
    pub fn generate(name: &str) -> Result<AuditKey, KeyError> {
        if !crate::note::is_valid_name(name) {
            return Err(KeyError::Format {
                path: PathBuf::new(),
                source: NoteError::InvalidName {
                    name: name.to_owned(),
                },
            });
        }
        Ok(AuditKey {
            signer: NoteSigner::generate(name).map_err(KeyError::Random)?,
        })
    }

    /// A key from an existing signer.
    pub fn from_signer(signer: NoteSigner) -> AuditKey {
        AuditKey { signer }
    }

    /// The key's name: every checkpoint's origin.
    pub fn name(&self) -> &str {
        self.signer.name()
    }

    /// The signer.
    pub fn signer(&self) -> &NoteSigner {
        &self.signer
    }

    /// The verifier of this key's notes.
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// The verifier key string `<name>+<key id>+<base64>`.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier().to_string()
    }

    /// Writes `audit.pub` if it is missing or different (`force`: always).
    fn write_public(&self, keys_dir: &Path, force: bool) -> Result<(), KeyError> {
        let path = keys_dir.join(PUB_FILE);
        let text = format!("{}\n", self.verifier_key());
        if !force && std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(());
        }
        private_fs::write_atomic(keys_dir, PUB_FILE, text.as_bytes(), Existing::Replace).map_err(
            |source| KeyError::Io {
                path: path.clone(),
                source,
            },
        )?;
        // The public key is public.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(|source| KeyError::Io { path, source })
    }
}

/// Reads the verifier key string in `path` (an `audit.pub`, or a copy an
/// operator kept).
pub fn read_verifier_key(path: &Path) -> Result<NoteVerifier, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    text.parse().map_err(|source| KeyError::Format {
        path: path.to_owned(),
        source,
    })
}

/// `airlock.audit/<host name>`, the host name reduced to characters that
/// are valid in a key name.
pub fn default_name() -> String {
    let uname = rustix::system::uname();
    let host: String = uname
        .nodename()
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    format!("{NAME_PREFIX}{host}")
}

/// Reads and checks a key file; `None` if it does not exist. A symbolic
/// link is refused.
fn read_key_file(path: &Path) -> Result<Option<AuditKey>, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NOFOLLOW;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(KeyError::NotAKeyFile {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(io_err(e.into())),
    };
    let file = File::from(fd);
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_LEN {
        return Err(KeyError::NotAKeyFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
            fix: FILE_MODE,
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(KeyError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    // Room for the whole file, so that the buffer never grows (growing
    // would leave an unwiped copy behind).
    let mut contents = Zeroizing::new(Vec::with_capacity(4200));
    file.take(MAX_KEY_FILE_LEN)
        .read_to_end(&mut contents)
        .map_err(io_err)?;
    let text = std::str::from_utf8(&contents).map_err(|_| KeyError::NotAKeyFile {
        path: path.to_owned(),
    })?;
    let signer = NoteSigner::parse(text).map_err(|source| KeyError::Format {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(AuditKey { signer }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let (a, status) = AuditKey::load_or_create(&keys).expect("create");
        assert_eq!(status, KeyStatus::Created);
        assert!(a.name().starts_with(NAME_PREFIX));
        let (b, status) = AuditKey::load_or_create(&keys).expect("load");
        assert_eq!(status, KeyStatus::Loaded);
        assert_eq!(a.verifier(), b.verifier());
        let meta = std::fs::metadata(keys.join(KEY_FILE)).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let meta = std::fs::metadata(&keys).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let vkey = read_verifier_key(&keys.join(PUB_FILE)).expect("pub");
        assert_eq!(vkey, a.verifier());
        // Opened up to others: refused.
        std::fs::set_permissions(keys.join(KEY_FILE), PermissionsExt::from_mode(0o640))
            .expect("chmod");
        assert!(matches!(
            AuditKey::load_or_create(&keys),
            Err(KeyError::Permissions { .. })
        ));
    }
}
