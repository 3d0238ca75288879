//! Errors of the secret store. Each names the secret, lease, file or key it
//! is about, and none ever contains a secret value.

use std::io;
use std::path::PathBuf;

use crate::key::KekId;
use crate::model::{LeaseId, RunId};
use crate::scope::{self, Scope, ScopeError};

/// Something went wrong in the secret store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// A directory of the state home could not be created or made private.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// The database file could not be created with private permissions.
    #[error("cannot create secret store {path}: {source}")]
    CreateDb {
        /// The database file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// SQLite could not open or configure the database.
    #[error("cannot open secret store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// SQLite refused WAL mode, which concurrent runners need.
    #[error("secret store {path}: cannot use WAL journal mode (journal mode is {mode:?})")]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },

    /// The file is an SQLite database, but not an Airlock secret store.
    #[error("{path} is not an airlock secret store (application id {found:#x})")]
    ForeignDatabase {
        /// The database file.
        path: PathBuf,
        /// Its `application_id`.
        found: i32,
    },

    /// The store was written by a newer Airlock; it is left untouched.
    #[error(
        "secret store {path} has schema version {found}, but this airlock knows only up to version {supported}; use a newer airlock"
    )]
    FutureSchema {
        /// The database file.
        path: PathBuf,
        /// The database's `user_version`.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },

    /// A schema migration failed; the database keeps its old version.
    #[error("secret store {path}: migration to schema version {version} failed: {source}")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version the migration would have reached.
        version: i64,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// A query or update failed.
    #[error("secret store {path}: cannot {action}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. "record lease".
        action: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// A row of the store does not have the shape this build writes (edited
    /// by hand, or damaged).
    #[error("secret store {path}: {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },

    /// A secret name breaks the naming rule.
    #[error("invalid secret name {name:?}: expected {rule}", rule = crate::name::NAME_RULE)]
    InvalidName {
        /// The name as given.
        name: String,
    },

    /// A value is shorter than [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN).
    #[error(
        "secret {name:?}: the value is {len} bytes, but at least {min} are needed; the redactor masks every occurrence of a secret in job output, and a value this short occurs there by chance, so masking it would garble logs and point at the secret instead of hiding it",
        min = crate::name::MIN_SECRET_LEN
    )]
    ValueTooShort {
        /// The secret.
        name: String,
        /// The value's length.
        len: usize,
    },

    /// A value is longer than [`MAX_SECRET_LEN`](crate::MAX_SECRET_LEN).
    #[error(
        "secret {name:?}: the value is {len} bytes, more than the {max} a secret may hold",
        max = crate::name::MAX_SECRET_LEN
    )]
    ValueTooLong {
        /// The secret.
        name: String,
        /// The value's length.
        len: usize,
    },

    /// A secret was given no scope, so no job could ever lease it.
    #[error(
        "secret {name:?}: at least one scope (PIPELINE/JOB pattern, e.g. \"demo/*\") is required"
    )]
    NoScopes {
        /// The secret.
        name: String,
    },

    /// A scope pattern is invalid.
    #[error(transparent)]
    InvalidScope(#[from] ScopeError),

    /// `set` without replacing, of a name that exists.
    #[error("secret {name:?} already exists (version {version}); rotate it to add a version, or replace it")]
    Exists {
        /// The secret.
        name: String,
        /// Its current version.
        version: u32,
    },

    /// No secret has this name.
    #[error("unknown secret {name:?}")]
    Unknown {
        /// The name asked for.
        name: String,
    },

    /// `rm` of a secret that active leases hold, without forcing.
    #[error(
        "secret {name:?} has {count} active lease(s) (runs {runs:?}); wait for them to end, revoke them, or force the removal"
    )]
    ActiveLeases {
        /// The secret.
        name: String,
        /// How many leases are active.
        count: usize,
        /// The runs holding them.
        runs: Vec<RunId>,
    },

    /// No lease has this id.
    #[error("unknown lease {id}")]
    UnknownLease {
        /// The id asked for.
        id: LeaseId,
    },

    /// A lease id is not 32 lowercase hex digits.
    #[error("invalid lease id {id:?}: expected 32 lowercase hex digits")]
    InvalidLeaseId {
        /// The id as given.
        id: String,
    },

    /// A random value was asked for with too few or too many bytes.
    #[error(
        "cannot generate a value of {len} random bytes: use {min} to {max}",
        min = crate::store::MIN_GENERATE_BYTES,
        max = crate::store::MAX_GENERATE_BYTES
    )]
    GenerateLength {
        /// The length asked for.
        len: usize,
    },

    /// The OS random number generator failed.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(getrandom::Error),

    /// The key file could not be read or created.
    #[error("key file {path}: {source}")]
    KeyIo {
        /// The key file (or its directory).
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// The key file the operator named does not exist.
    #[error("key file {path} does not exist")]
    KeyFileMissing {
        /// The key file.
        path: PathBuf,
    },

    /// The store holds secrets but its key file is gone; a new key would
    /// not open them, so none is created.
    #[error(
        "the secret store holds {versions} secret version(s) sealed with key {store_key}, but the key file {path} does not exist; restore it from a backup (a new key cannot open them)"
    )]
    KeyMissing {
        /// Where the key file should be.
        path: PathBuf,
        /// The id of the key the store's secrets are sealed with.
        store_key: KekId,
        /// How many secret versions the store holds.
        versions: u64,
    },

    /// The key file (or its directory) is readable or writable by other
    /// users, so it is refused.
    #[error(
        "{path} has mode {mode:04o}: keys must be readable and writable by their owner only; run chmod {fix:04o} {path}"
    )]
    KeyPermissions {
        /// The key file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode to give it.
        fix: u32,
    },

    /// The key file belongs to another user, who could read or change it.
    #[error("key file {path} belongs to uid {owner}, not to this user (uid {me}); a key must belong to the user that uses it")]
    KeyOwner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },

    /// The key file is not a regular file, or does not hold a key.
    #[error(
        "key file {path} does not hold a key: expected a regular file with 32 raw bytes, 64 hex digits, or 32 bytes in base64"
    )]
    KeyFormat {
        /// The key file.
        path: PathBuf,
    },

    /// The key does not match the one the store's secrets are sealed with.
    #[error(
        "the key file {path} does not match this store: it holds key {found}, but the store's secrets are sealed with key {expected}"
    )]
    KeyMismatch {
        /// The key file.
        path: PathBuf,
        /// The key the store's secrets are sealed with.
        expected: KekId,
        /// The key the file holds.
        found: KekId,
    },

    /// `rekey` to the key the store already uses.
    #[error("the new key {key} is the key the store already uses")]
    SameKey {
        /// The key.
        key: KekId,
    },

    /// A stored ciphertext failed authentication: changed on disk, or moved
    /// from another secret or version.
    #[error(
        "secret {name:?} version {version}: the stored {part} fails authentication; the store was tampered with or damaged, or the ciphertext belongs to another secret or version"
    )]
    Tampered {
        /// The secret.
        name: String,
        /// The version.
        version: u32,
        /// Which part: "data key" or "value".
        part: &'static str,
    },

    /// A file to import could not be read.
    #[error("cannot read {path}: {source}")]
    ImportRead {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// The age identity file holds no usable X25519 identity.
    #[error("{path}: {reason}")]
    Identity {
        /// The identity file.
        path: PathBuf,
        /// What is wrong (never the key itself).
        reason: String,
    },

    /// The age file could not be decrypted.
    #[error("cannot decrypt {path}: {source}")]
    AgeDecrypt {
        /// The age file.
        path: PathBuf,
        /// What age said.
        #[source]
        source: age::DecryptError,
    },

    /// A line of a decrypted import file is not `NAME=value`. The message
    /// never quotes the line, which may hold a value.
    #[error("{path}:{line}: {reason}")]
    ImportLine {
        /// The age file.
        path: PathBuf,
        /// 1-based line number in the plaintext.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Why a job may not lease a secret, or what else went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// No secret has this name.
    #[error("unknown secret {name:?}: it is not in the secret store")]
    Unknown {
        /// The name asked for.
        name: String,
    },

    /// The secret exists but none of its scopes allows this job.
    #[error(
        "secret {name:?} is out of scope for {scope_tried}: its scopes are {}",
        scope::display_list(scopes)
    )]
    OutOfScope {
        /// The secret.
        name: String,
        /// The `PIPELINE/JOB` that asked.
        scope_tried: String,
        /// The secret's scopes, none of which matched.
        scopes: Vec<Scope>,
    },

    /// The store failed.
    #[error(transparent)]
    Store(#[from] SecretsError),
}

impl LeaseError {
    /// Whether this is a refusal (unknown or out-of-scope secret: bad input,
    /// exit 2) rather than a failure of the store.
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            LeaseError::Unknown { .. } | LeaseError::OutOfScope { .. }
        )
    }
}
