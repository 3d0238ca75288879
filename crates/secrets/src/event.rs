//! What the store tells the rest of Airlock: one [`SecretEvent`] per change,
//! lease, denial, revocation and expiry. Events name secrets, versions,
//! leases, jobs and keys, never values.
//!
//! The store hands each event to the [`EventSink`] given to
//! [`SecretStore::with_event_sink`](crate::SecretStore::with_event_sink),
//! after the change is committed (a denial changes nothing and is reported
//! when it is decided), outside the store's lock, so the sink may call the
//! store. The engine's sink wraps them in its own event and publishes them
//! on its bus, where the audit log makes them durable.

use std::path::PathBuf;

use serde::Serialize;

use crate::key::KekId;
use crate::model::{ImportedSecret, LeaseId, RunId};
use crate::scope::Scope;
use crate::time::Timestamp;

/// Receives the store's events.
pub type EventSink = Box<dyn Fn(&SecretEvent) + Send + Sync>;

/// Something that happened in the secret store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SecretEvent {
    /// A secret was created, or replaced with new scopes.
    Set {
        /// The secret.
        name: String,
        /// The version stored (1 for a new secret).
        version: u32,
        /// Its scopes now.
        scopes: Vec<Scope>,
        /// Whether an existing secret was replaced.
        replaced: bool,
    },
    /// A new version of a secret was stored.
    Rotated {
        /// The secret.
        name: String,
        /// The new current version.
        version: u32,
    },
    /// A secret and all its versions were deleted.
    Removed {
        /// The secret.
        name: String,
        /// How many versions were deleted.
        versions: u32,
    },
    /// A job was granted a lease, and so read the secret's value.
    Leased {
        /// The lease.
        lease: LeaseId,
        /// The secret.
        name: String,
        /// The version leased.
        version: u32,
        /// The job's pipeline.
        pipeline: String,
        /// The job.
        job: String,
        /// The job's run.
        run: RunId,
        /// When the lease runs out.
        expires_at: Timestamp,
    },
    /// A job asked for a secret it may not have.
    Denied {
        /// The secret asked for.
        name: String,
        /// The job's pipeline.
        pipeline: String,
        /// The job.
        job: String,
        /// The job's run.
        run: RunId,
        /// Why.
        reason: DenyReason,
    },
    /// A lease was revoked.
    Revoked {
        /// The lease.
        lease: LeaseId,
        /// The secret.
        name: String,
        /// The version it held.
        version: u32,
        /// The run that held it.
        run: RunId,
        /// Why.
        reason: RevokeReason,
    },
    /// A lease ran past its TTL.
    Expired {
        /// The lease.
        lease: LeaseId,
        /// The secret.
        name: String,
        /// The version it held.
        version: u32,
        /// The run that held it.
        run: RunId,
    },
    /// Every data key was re-wrapped with a new key-encryption key.
    Rekeyed {
        /// The old key.
        from: KekId,
        /// The new key.
        to: KekId,
        /// How many secret versions were re-wrapped.
        versions: u64,
    },
    /// Secrets were imported from an age-encrypted file.
    Imported {
        /// The file.
        file: PathBuf,
        /// What was stored, in file order.
        secrets: Vec<ImportedSecret>,
    },
}

/// Why a lease was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// No secret has the name.
    Unknown,
    /// None of the secret's scopes allows the job.
    OutOfScope,
}

/// Why a lease was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// [`revoke`](crate::SecretStore::revoke) of this lease.
    Lease,
    /// [`revoke_run`](crate::SecretStore::revoke_run): the run's job ended
    /// (or the run was recovered after a crash, or contained).
    Run,
    /// The secret was removed by force while the lease was active.
    SecretRemoved,
}
