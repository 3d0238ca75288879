//! What the store hands out: secret and lease records (never values, except
//! inside a [`Lease`]), and the options of a secret.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Serialize, Serializer};

use crate::error::SecretsError;
use crate::key::KekId;
use crate::scope::Scope;
use crate::time::Timestamp;

/// A run's id, as the run record numbers runs.
pub type RunId = i64;

/// How a secret is shared and how long a version may live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretOptions {
    /// The `PIPELINE/JOB` patterns that may lease the secret; at least one.
    pub scopes: Vec<Scope>,
    /// Versions older than this are reported [stale](SecretInfo::stale).
    pub max_age: Option<Duration>,
}

impl SecretOptions {
    /// Options with these scopes and no maximum age.
    pub fn new(scopes: Vec<Scope>) -> SecretOptions {
        SecretOptions {
            scopes,
            max_age: None,
        }
    }

    /// Parses scope patterns such as `demo/*`.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<SecretOptions, SecretsError> {
        let scopes = patterns
            .iter()
            .map(|p| Scope::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SecretOptions::new(scopes))
    }

    /// These options with a maximum age.
    pub fn with_max_age(mut self, max_age: Duration) -> SecretOptions {
        self.max_age = Some(max_age);
        self
    }
}

/// What [`set`](crate::SecretStore::set) does when the name exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Fail with [`SecretsError::Exists`].
    Fail,
    /// Store the value as the next version and replace the scopes and
    /// maximum age. Older versions stay (and active leases keep theirs).
    Replace,
}

/// A secret as listed: everything but its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    /// The name.
    pub name: String,
    /// Who may lease it.
    pub scopes: Vec<Scope>,
    /// The current version (what new leases get).
    pub version: u32,
    /// How many versions are stored.
    pub versions: u32,
    /// When the secret was created.
    pub created_at: Timestamp,
    /// When the current version was stored.
    pub rotated_at: Timestamp,
    /// Age of the current version, in milliseconds in JSON.
    #[serde(with = "millis")]
    pub age: Duration,
    /// The maximum age, if any, in milliseconds in JSON.
    #[serde(with = "opt_millis")]
    pub max_age: Option<Duration>,
    /// Whether the current version is older than the maximum age.
    pub stale: bool,
    /// Leases that are active and not yet past their expiry.
    pub active_leases: u32,
}

/// One stored version of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The version number, from 1.
    pub version: u32,
    /// When it was stored.
    pub created_at: Timestamp,
    /// The key its data key is wrapped with.
    pub key: KekId,
    /// Whether this is the current version.
    pub current: bool,
}

/// A secret written by an import, and the version it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedSecret {
    /// The name.
    pub name: String,
    /// The version stored: 1 for a new secret.
    pub version: u32,
}

/// A lease's id: 128 random bits, as 32 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(String);

impl LeaseId {
    /// A fresh random id.
    pub(crate) fn random() -> Result<LeaseId, SecretsError> {
        let mut bytes = [0_u8; 16];
        crate::crypto::fill_random(&mut bytes)?;
        Ok(LeaseId(crate::key::hex(&bytes)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for LeaseId {
    type Err = SecretsError;

    fn from_str(s: &str) -> Result<LeaseId, SecretsError> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(LeaseId(s.to_owned()))
        } else {
            Err(SecretsError::InvalidLeaseId { id: s.to_owned() })
        }
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0)
    }
}

impl Serialize for LeaseId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl ToSql for LeaseId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.as_str()))
    }
}

impl FromSql for LeaseId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        String::column_result(value).map(LeaseId)
    }
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Granted, not revoked, not marked expired.
    Active,
    /// Revoked (the job ended, or by hand).
    Revoked,
    /// Ran past its TTL and was marked by [`expire`](crate::SecretStore::expire).
    Expired,
}

impl LeaseState {
    /// The state's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Revoked => "revoked",
            LeaseState::Expired => "expired",
        }
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for LeaseState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for LeaseState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "active" => Ok(LeaseState::Active),
            "revoked" => Ok(LeaseState::Revoked),
            "expired" => Ok(LeaseState::Expired),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// A lease as recorded: who got which version of what, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    /// The lease's id.
    pub id: LeaseId,
    /// The secret's name.
    pub secret: String,
    /// The version leased.
    pub version: u32,
    /// The pipeline of the job holding it.
    pub pipeline: String,
    /// The job holding it.
    pub job: String,
    /// The run of the job.
    pub run: RunId,
    /// When it was granted.
    pub granted_at: Timestamp,
    /// When its TTL runs out.
    pub expires_at: Timestamp,
    /// Where it stands.
    pub state: LeaseState,
    /// When it was revoked or marked expired.
    pub ended_at: Option<Timestamp>,
}

/// Which leases [`leases`](crate::SecretStore::leases) returns: those that
/// match every field given. The default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFilter {
    /// Only this run's leases.
    pub run: Option<RunId>,
    /// Only leases of this secret.
    pub secret: Option<String>,
    /// Only leases in this state.
    pub state: Option<LeaseState>,
}

/// A granted lease: its record and the secret's value.
///
/// The value is in a [`SecretSlice`]: wiped from memory when the lease is
/// dropped, shown as `[REDACTED]` by `Debug`, and reachable only through
/// [`ExposeSecret`].
#[derive(Debug)]
pub struct Lease {
    info: LeaseInfo,
    value: SecretSlice<u8>,
}

impl Lease {
    pub(crate) fn new(info: LeaseInfo, value: SecretSlice<u8>) -> Lease {
        Lease { info, value }
    }

    /// The lease's record.
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// The lease's id.
    pub fn id(&self) -> &LeaseId {
        &self.info.id
    }

    /// The value, still wrapped.
    pub fn value(&self) -> &SecretSlice<u8> {
        &self.value
    }

    /// The value's bytes. Copy them only into memory that is wiped too.
    pub fn expose(&self) -> &[u8] {
        self.value.expose_secret()
    }

    /// The record and the value, apart.
    pub fn into_parts(self) -> (LeaseInfo, SecretSlice<u8>) {
        (self.info, self.value)
    }
}

mod millis {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::Serializer;

    #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<_>`
    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::millis::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids() {
        let id = LeaseId::random().expect("random");
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(id.as_str().parse::<LeaseId>().expect("parse"), id);
        for bad in ["", "xyz", &"A".repeat(32), &"a".repeat(31)] {
            assert!(bad.parse::<LeaseId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lease_debug_hides_the_value() {
        let info = LeaseInfo {
            id: LeaseId::random().expect("random"),
            secret: "S".into(),
            version: 1,
            pipeline: "p".into(),
            job: "j".into(),
            run: 1,
            granted_at: Timestamp::from_unix_millis(0),
            expires_at: Timestamp::from_unix_millis(1),
            state: LeaseState::Active,
            ended_at: None,
        };
        let lease = Lease::new(info, SecretSlice::from(b"hunter2-value".to_vec()));
        let shown = format!("{lease:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert_eq!(lease.expose(), b"hunter2-value");
    }
}
