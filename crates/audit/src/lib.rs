//! Airlock's tamper-evident audit log.
//!
//! - [`merkle`]: the RFC 6962 / 9162 Merkle tree, its incremental builder,
//!   inclusion and consistency proofs;
//! - [`note`]: C2SP signed notes with Ed25519, keys in the format of
//!   `golang.org/x/mod/sumdb/note`;
//! - [`checkpoint`]: tlog checkpoint bodies;
//! - [`key`]: the log's signing key in `keys/audit.key`.

pub mod checkpoint;
mod fs;
pub mod hex;
pub mod key;
pub mod merkle;
pub mod note;
pub mod time;

pub use checkpoint::Checkpoint;
pub use key::{AuditKey, KeyError, KeyStatus};
pub use merkle::Hash;
pub use note::{NoteSigner, NoteVerifier};
