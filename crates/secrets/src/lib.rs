//! The secret store: secrets encrypted at rest, versioned, scoped to
//! pipeline jobs, handed out under leases with a TTL, rekeyable, and
//! importable from `age`-encrypted files.
//!
//! ```text
//! <home>/                 0700
//!   secrets.db            0600, WAL mode (secrets.db-wal, -shm beside it)
//!   keys/                 0700
//!     secrets.key         0600, the key-encryption key (KeySource::Home)
//! ```
//!
//! # Encryption
//!
//! Envelope encryption with XChaCha20-Poly1305 (see `crypto`): each secret
//! version has its own random data key, which seals the value; the
//! key-encryption key (KEK) seals the data key. Nonces are random and fresh
//! for every seal. The associated data `airlock-secret-v1\0NAME\0VERSION`
//! binds both ciphertexts to their secret and version: one moved to another
//! row fails to open ([`SecretsError::Tampered`]). Each wrapped data key is
//! stored with its KEK's [`KekId`], so a wrong key is reported as
//! [`SecretsError::KeyMismatch`] ("the key file does not match this
//! store"), not as a failed decryption. The KEK lives in a 0600 key file
//! (see [`KeySource`]); key files that others can read are refused.
//!
//! Plaintext never reaches the disk or SQLite: values are sealed before
//! they are bound to a statement, and decrypted into memory that is wiped
//! on drop ([`secrecy::SecretSlice`], [`zeroize::Zeroizing`]); buffers that
//! hold plaintext are sized up front so that no reallocation leaves an
//! unwiped copy behind. No `Debug` output shows a value or a key, and no
//! error message quotes one.
//!
//! # Scopes and leases
//!
//! A secret's [`Scope`]s say which `PIPELINE/JOB`s may lease it. A lease
//! ([`SecretStore::lease`]) hands the current version's value to one job of
//! one run for a TTL, and is recorded; it ends when revoked (by the job's
//! end: [`SecretStore::revoke_run`]) or marked expired
//! ([`SecretStore::expire`]). An unknown secret and an out-of-scope request
//! are distinct [`LeaseError`]s whose messages name the secret and the
//! `PIPELINE/JOB` that was refused.
//!
//! # Events
//!
//! Every change, lease, denial, revocation and expiry is a [`SecretEvent`]
//! (never with a value) given to the store's [`EventSink`].
//!
//! # Rekeying and crashes
//!
//! [`SecretStore::rekey`] re-wraps every data key in one transaction; its
//! documentation explains why a crash at any point leaves a key file that
//! opens the store. Key-file changes are serialized by an `flock` on
//! `keys/secrets.lock`.
//!
//! # What the store does not protect
//!
//! Scopes, versions and lease records are integrity-protected only by the
//! file permissions of `secrets.db`: someone who can write it can widen a
//! scope, but cannot read or forge a value without the key. Anyone who can
//! read both `secrets.db` and the key file can read every secret.
#![deny(missing_docs)]

mod crypto;
mod error;
pub mod event;
mod fs;
pub mod import;
mod key;
mod model;
mod name;
mod schema;
mod scope;
mod store;
mod time;

pub use error::{LeaseError, SecretsError};
pub use event::{DenyReason, EventSink, RevokeReason, SecretEvent};
pub use key::{KekId, KeySource};
pub use model::{
    IfExists, ImportedSecret, Lease, LeaseFilter, LeaseId, LeaseInfo, LeaseState, RunId,
    SecretInfo, SecretOptions, VersionInfo,
};
pub use name::{is_valid_name, MAX_NAME_LEN, MAX_SECRET_LEN, MIN_SECRET_LEN, NAME_RULE};
pub use scope::{any_allows, Scope, ScopeError};
pub use store::{generate_value, SecretStore, DB_FILE, MAX_GENERATE_BYTES, MIN_GENERATE_BYTES};
pub use time::Timestamp;

pub use secrecy::{ExposeSecret, SecretSlice};
