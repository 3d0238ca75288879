//! Airlock's tamper-evident audit log.
//!
//! - [`merkle`]: the RFC 6962 / 9162 Merkle tree, its incremental builder,
//!   inclusion and consistency proofs;
//! - [`note`]: C2SP signed notes with Ed25519, keys in the format of
//!   `golang.org/x/mod/sumdb/note`;
//! - [`checkpoint`]: tlog checkpoint bodies;
//! - [`key`]: the log's signing key in `keys/audit.key`;
//! - [`log`]: the append-only log with group commit, shared by processes;
//! - [`verify`]: the verifier that names the first bad entry;
//! - [`proof`]: inclusion bundles and consistency proofs for the CLI and
//!   for offline checks;
//! - [`show`]: reading entries back.

pub mod checkpoint;
mod encode;
pub mod entry;
pub mod hex;
pub mod key;
mod lines;
pub mod log;
pub mod merkle;
pub mod note;
pub mod proof;
mod scan;
pub mod show;
pub mod verify;

pub use checkpoint::Checkpoint;
pub use key::{AuditKey, KeyError, KeyStatus};
pub use log::{AuditError, AuditLog, Options, Recovery, SignedCheckpoint};
pub use merkle::Hash;
pub use note::{NoteSigner, NoteVerifier};
pub use proof::{
    consistency, prove, verify_bundle, verify_consistency, ConsistencyProof, InclusionBundle,
    ProveError,
};
pub use show::{entries, Entries, ShowError, ShownEntry};
pub use verify::{
    verify, verify_with_witnesses, BadEntry, BadReason, CheckpointProblem, Report, VerifyError,
};
