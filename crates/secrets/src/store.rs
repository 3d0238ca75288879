//! The [`SecretStore`]: secrets, versions and leases in `secrets.db`.
//!
//! Every change is one SQLite transaction. Changes that read before they
//! write are `IMMEDIATE` transactions: they take the write lock up front
//! (waiting up to the busy timeout) instead of upgrading a read lock later,
//! which in WAL mode fails at once when another connection wrote in
//! between. Single-statement changes (`revoke_run`, `expire`) are one
//! autocommit `UPDATE … RETURNING`.
//!
//! Several processes may open one home. If another one rekeys the store,
//! this one notices at its next operation that needs the key (the stored
//! key id differs from its own), reloads the key under the key lock, and
//! retries once.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use secrecy::SecretSlice;

use crate::crypto::{self, KEY_LEN};
use crate::error::{LeaseError, SecretsError};
use crate::event::{DenyReason, EventSink, RevokeReason, SecretEvent};
use crate::fs::{self as private_fs, Existing};
use crate::import;
use crate::key::{self, Kek, KekId, KeyLock, KeySource, StoreKey, KEYS_DIR, NEXT_KEY_FILE};
use crate::model::{
    IfExists, ImportedSecret, Lease, LeaseFilter, LeaseId, LeaseInfo, LeaseState, RunId,
    SecretInfo, SecretOptions, VersionInfo,
};
use crate::name;
use crate::scope::{self, Scope};
use crate::time::{self, Timestamp};

/// The database file inside the home.
pub const DB_FILE: &str = "secrets.db";

/// The fewest random bytes [`generate_value`] draws (128 bits).
pub const MIN_GENERATE_BYTES: usize = 16;
/// The most random bytes [`generate_value`] draws.
pub const MAX_GENERATE_BYTES: usize = 4096;

/// The secret store of one state home.
///
/// One SQLite connection and the loaded key-encryption key behind a mutex:
/// share a `SecretStore` between the threads of a runner (it is
/// `Send + Sync`).
pub struct SecretStore {
    inner: Mutex<Inner>,
    home: PathBuf,
    db_path: PathBuf,
    keys_dir: PathBuf,
    sink: Option<EventSink>,
}

struct Inner {
    conn: Connection,
    kek: Kek,
    source: KeySource,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("home", &self.home)
            .field("db_path", &self.db_path)
            .field("event_sink", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether an error says the loaded key is not the store's (so reloading
/// it may help).
trait KeyMismatch {
    fn is_key_mismatch(&self) -> bool;
}

impl KeyMismatch for SecretsError {
    fn is_key_mismatch(&self) -> bool {
        matches!(self, SecretsError::KeyMismatch { .. })
    }
}

impl KeyMismatch for LeaseError {
    fn is_key_mismatch(&self) -> bool {
        matches!(self, LeaseError::Store(e) if e.is_key_mismatch())
    }
}

/// Where a rekey stops, to test crash recovery: the state left on disk is
/// the state a crash at that point would leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RekeyStop {
    /// Run to the end.
    Never,
    /// After the new key is written to `secrets.key.next`, before the
    /// transaction commits.
    BeforeCommit,
    /// After the transaction commits, before the key file is replaced.
    AfterCommit,
}

impl SecretStore {
    /// Opens the secret store of state home `home`: `home/secrets.db`
    /// (created with mode 0600; `home` with mode 0700 if missing), with the
    /// key from `key`.
    ///
    /// With [`KeySource::Home`], a store without secrets and without a key
    /// file gets a new random key in `home/keys/secrets.key`; a store with
    /// secrets never does ([`SecretsError::KeyMissing`]). A key that does
    /// not match the store's secrets is refused
    /// ([`SecretsError::KeyMismatch`]), as is a key file that others can
    /// read. A rekey that crashed is completed or rolled back here.
    pub fn open(home: &Path, key: KeySource) -> Result<SecretStore, SecretsError> {
        private_fs::create_private_dir_all(home)?;
        let db_path = home.join(DB_FILE);
        private_fs::create_private_file(&db_path)?;
        let conn = crate::schema::open(&db_path)?;
        let keys_dir = home.join(KEYS_DIR);
        let kek = {
            let lock = KeyLock::acquire(&keys_dir)?;
            // Read with the lock held, so that no rekey is half done.
            let stored = store_key(&conn, &db_path)?;
            key::resolve(&lock, &keys_dir, &key, stored)?
        };
        Ok(SecretStore {
            inner: Mutex::new(Inner {
                conn,
                kek,
                source: key,
            }),
            home: home.to_owned(),
            db_path,
            keys_dir,
            sink: None,
        })
    }

    /// This store, handing every event to `sink` (see [`crate::event`]).
    #[must_use]
    pub fn with_event_sink(
        mut self,
        sink: impl Fn(&SecretEvent) + Send + Sync + 'static,
    ) -> SecretStore {
        self.sink = Some(Box::new(sink));
        self
    }

    /// The state home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The database file, `home/secrets.db`.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The file the key-encryption key in use was read from.
    pub fn key_path(&self) -> PathBuf {
        self.lock().kek.path().to_owned()
    }

    /// The id of the key-encryption key in use.
    pub fn key_id(&self) -> KekId {
        self.lock().kek.id()
    }

    /// Stores a new secret `name` with `value` as version 1.
    ///
    /// If `name` exists: with [`IfExists::Fail`], fails with
    /// [`SecretsError::Exists`]; with [`IfExists::Replace`], stores `value`
    /// as the next version and replaces scopes and maximum age. Returns the
    /// version stored.
    pub fn set(
        &self,
        name: &str,
        value: &[u8],
        options: &SecretOptions,
        if_exists: IfExists,
    ) -> Result<u32, SecretsError> {
        name::check_name(name)?;
        name::check_value(name, value)?;
        check_options(name, options)?;
        self.run(|inner, events| {
            let now = Timestamp::now();
            let tx = self.begin(&mut inner.conn)?;
            ensure_key(&tx, &inner.kek, &self.db_path)?;
            let existing = self.find(&tx, name)?;
            let (version, replaced) = match (existing, if_exists) {
                (Some(found), IfExists::Fail) => {
                    return Err(SecretsError::Exists {
                        name: name.to_owned(),
                        version: found.version,
                    })
                }
                (Some(found), IfExists::Replace) => {
                    let version = self.next_version(name, found.version)?;
                    tx.execute(
                        "UPDATE secrets SET scopes = ?2, max_age_ms = ?3, version = ?4, rotated_at = ?5
                         WHERE id = ?1",
                        params![
                            found.id,
                            scopes_json(&options.scopes),
                            options.max_age.map(time::duration_millis),
                            version,
                            now
                        ],
                    )
                    .map_err(self.sql("replace secret"))?;
                    self.insert_version(&tx, &inner.kek, found.id, name, version, value, now)?;
                    (version, true)
                }
                (None, _) => {
                    self.insert_secret(&tx, &inner.kek, name, value, options, now)?;
                    (1, false)
                }
            };
            tx.commit().map_err(self.sql("commit secret"))?;
            events.push(SecretEvent::Set {
                name: name.to_owned(),
                version,
                scopes: options.scopes.clone(),
                replaced,
            });
            Ok(version)
        })
    }

    /// Stores `value` as the next version of `name` and returns its number.
    /// Older versions stay (listed by [`versions`](Self::versions), held by
    /// the leases that have them), but new leases get this one.
    pub fn rotate(&self, name: &str, value: &[u8]) -> Result<u32, SecretsError> {
        name::check_name(name)?;
        name::check_value(name, value)?;
        self.run(|inner, events| {
            let now = Timestamp::now();
            let tx = self.begin(&mut inner.conn)?;
            ensure_key(&tx, &inner.kek, &self.db_path)?;
            let found = self.find(&tx, name)?.ok_or_else(|| SecretsError::Unknown {
                name: name.to_owned(),
            })?;
            let version = self.rotate_in(&tx, &inner.kek, &found, name, value, now)?;
            tx.commit().map_err(self.sql("commit rotation"))?;
            events.push(SecretEvent::Rotated {
                name: name.to_owned(),
                version,
            });
            Ok(version)
        })
    }

    /// Deletes `name` and all its versions. Fails with
    /// [`SecretsError::ActiveLeases`] while unexpired active leases hold it,
    /// unless `force`, which revokes them in the same transaction. Returns
    /// the leases revoked. Lease records stay (naming the secret).
    pub fn rm(&self, name: &str, force: bool) -> Result<Vec<LeaseId>, SecretsError> {
        name::check_name(name)?;
        self.run(|inner, events| {
            let now = Timestamp::now();
            let tx = self.begin(&mut inner.conn)?;
            let found = self.find(&tx, name)?.ok_or_else(|| SecretsError::Unknown {
                name: name.to_owned(),
            })?;
            let versions: u32 = tx
                .query_row(
                    "SELECT count(*) FROM versions WHERE secret_id = ?1",
                    [found.id],
                    |row| row.get(0),
                )
                .map_err(self.sql("count versions"))?;
            let active: Vec<RunId> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT run_id FROM leases
                         WHERE secret = ?1 AND state = 'active' AND expires_at > ?2
                         ORDER BY run_id",
                    )
                    .map_err(self.sql("find active leases"))?;
                let rows = stmt
                    .query_map(params![name, now], |row| row.get(0))
                    .and_then(|rows| rows.collect::<Result<Vec<RunId>, _>>())
                    .map_err(self.sql("find active leases"))?;
                rows
            };
            if !active.is_empty() && !force {
                let mut runs = active.clone();
                runs.dedup();
                return Err(SecretsError::ActiveLeases {
                    name: name.to_owned(),
                    count: active.len(),
                    runs,
                });
            }
            let revoked = self.update_returning(
                &tx,
                "UPDATE leases SET state = 'revoked', ended_at = ?1
                 WHERE secret = ?2 AND state = 'active' AND expires_at > ?1
                 RETURNING id, secret, version, run_id",
                params![now, name],
                "revoke leases",
            )?;
            tx.execute("DELETE FROM secrets WHERE id = ?1", [found.id])
                .map_err(self.sql("delete secret"))?;
            tx.commit().map_err(self.sql("commit removal"))?;
            let ids = revoked.iter().map(|r| r.id.clone()).collect();
            events.extend(
                revoked
                    .into_iter()
                    .map(|r| r.revoked(RevokeReason::SecretRemoved)),
            );
            events.push(SecretEvent::Removed {
                name: name.to_owned(),
                versions,
            });
            Ok(ids)
        })
    }

    /// The secret `name`, without its value.
    pub fn info(&self, name: &str) -> Result<SecretInfo, SecretsError> {
        name::check_name(name)?;
        self.query_infos(Some(name))?
            .pop()
            .ok_or_else(|| SecretsError::Unknown {
                name: name.to_owned(),
            })
    }

    /// Every secret, by name, without values.
    pub fn list(&self) -> Result<Vec<SecretInfo>, SecretsError> {
        self.query_infos(None)
    }

    /// The stored versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, SecretsError> {
        name::check_name(name)?;
        let inner = self.lock();
        let mut stmt = inner
            .conn
            .prepare(
                "SELECT v.version, v.created_at, v.kek_id, s.version
                 FROM versions v JOIN secrets s ON s.id = v.secret_id
                 WHERE s.name = ?1 ORDER BY v.version",
            )
            .map_err(self.sql("list versions"))?;
        let rows = stmt
            .query_map([name], |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, Timestamp>(1)?,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get::<_, u32>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("list versions"))?;
        if rows.is_empty() {
            return Err(SecretsError::Unknown {
                name: name.to_owned(),
            });
        }
        rows.into_iter()
            .map(|(version, created_at, kek_id, current)| {
                Ok(VersionInfo {
                    version,
                    created_at,
                    key: self.kek_id(&kek_id, name, version)?,
                    current: version == current,
                })
            })
            .collect()
    }

    /// Checks that job `job` of `pipeline` (in run `run`) may lease `name`,
    /// without leasing it: admission, before anything runs. Returns the
    /// version a lease would get now. A refusal is reported as a
    /// [`SecretEvent::Denied`].
    pub fn admit(
        &self,
        name: &str,
        pipeline: &str,
        job: &str,
        run: RunId,
    ) -> Result<u32, LeaseError> {
        name::check_name(name)?;
        self.run(|inner, events| {
            let tx = inner
                .conn
                .transaction()
                .map_err(self.sql("begin a transaction"))?;
            let found = self.authorize(&tx, name, pipeline, job, run, events)?;
            Ok(found.version)
        })
    }

    /// Leases the current version of `name` to job `job` of `pipeline` in
    /// run `run` for `ttl`, and returns it with the value.
    ///
    /// Fails with [`LeaseError::Unknown`] if there is no such secret, and
    /// [`LeaseError::OutOfScope`] if none of its scopes allows
    /// `pipeline/job`; both are reported as a [`SecretEvent::Denied`] and
    /// record nothing. A ciphertext that fails to open (tampering) is
    /// [`SecretsError::Tampered`], and no lease is recorded.
    pub fn lease(
        &self,
        name: &str,
        pipeline: &str,
        job: &str,
        run: RunId,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        let mut leases = self.lease_all(&[name], pipeline, job, run, ttl)?;
        Ok(leases
            .pop()
            .expect("lease_all gives one lease per name when it succeeds"))
    }

    /// Leases every secret in `names` to `pipeline/job` of run `run`, all
    /// or none, in one transaction (one durable commit for a job's
    /// secrets, rather than one each). Errors as [`SecretStore::lease`],
    /// for the first secret that fails; nothing is recorded then, and only
    /// the denial is reported.
    pub fn lease_all(
        &self,
        names: &[&str],
        pipeline: &str,
        job: &str,
        run: RunId,
        ttl: Duration,
    ) -> Result<Vec<Lease>, LeaseError> {
        for name in names {
            name::check_name(name)?;
        }
        self.run(|inner, events| {
            let tx = self.begin(&mut inner.conn)?;
            let now = Timestamp::now();
            let mut leases = Vec::with_capacity(names.len());
            for name in names {
                let found = self.authorize(&tx, name, pipeline, job, run, events)?;
                let value =
                    self.open_version(&tx, &inner.kek, found.id, name, found.version)?;
                let info = LeaseInfo {
                    id: LeaseId::random()?,
                    secret: (*name).to_owned(),
                    version: found.version,
                    pipeline: pipeline.to_owned(),
                    job: job.to_owned(),
                    run,
                    granted_at: now,
                    expires_at: now.saturating_add(ttl),
                    state: LeaseState::Active,
                    ended_at: None,
                };
                tx.execute(
                    "INSERT INTO leases (id, secret, version, pipeline, job, run_id, granted_at, expires_at, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        info.id,
                        info.secret,
                        info.version,
                        info.pipeline,
                        info.job,
                        info.run,
                        info.granted_at,
                        info.expires_at,
                        info.state
                    ],
                )
                .map_err(self.sql("record lease"))?;
                leases.push(Lease::new(info, value));
            }
            tx.commit().map_err(self.sql("commit lease"))?;
            // Reported only once they are recorded.
            events.extend(leases.iter().map(|lease| {
                let info = lease.info();
                SecretEvent::Leased {
                    lease: info.id.clone(),
                    name: info.secret.clone(),
                    version: info.version,
                    pipeline: info.pipeline.clone(),
                    job: info.job.clone(),
                    run,
                    expires_at: info.expires_at,
                }
            }));
            Ok(leases)
        })
    }

    /// Revokes lease `id`. Returns whether it was active (revoking a
    /// revoked or expired lease changes nothing).
    pub fn revoke(&self, id: &LeaseId) -> Result<bool, SecretsError> {
        self.run(|inner, events| {
            let tx = self.begin(&mut inner.conn)?;
            let state: Option<LeaseState> = tx
                .query_row("SELECT state FROM leases WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(self.sql("find lease"))?;
            match state {
                None => return Err(SecretsError::UnknownLease { id: id.clone() }),
                Some(LeaseState::Active) => {}
                Some(_) => return Ok(false),
            }
            let revoked = self.update_returning(
                &tx,
                "UPDATE leases SET state = 'revoked', ended_at = ?1
                 WHERE id = ?2 AND state = 'active'
                 RETURNING id, secret, version, run_id",
                params![Timestamp::now(), id],
                "revoke lease",
            )?;
            tx.commit().map_err(self.sql("commit revocation"))?;
            events.extend(revoked.into_iter().map(|r| r.revoked(RevokeReason::Lease)));
            Ok(true)
        })
    }

    /// Revokes the leases `ids` that are still active, in one transaction
    /// (a job's leases when it ends); returns how many were. Unknown ids
    /// are ignored.
    pub fn revoke_all(&self, ids: &[&LeaseId]) -> Result<usize, SecretsError> {
        self.run(|inner, events| {
            let tx = self.begin(&mut inner.conn)?;
            let now = Timestamp::now();
            let mut revoked = Vec::new();
            for id in ids {
                revoked.extend(self.update_returning(
                    &tx,
                    "UPDATE leases SET state = 'revoked', ended_at = ?1
                     WHERE id = ?2 AND state = 'active'
                     RETURNING id, secret, version, run_id",
                    params![now, id],
                    "revoke lease",
                )?);
            }
            tx.commit().map_err(self.sql("commit revocation"))?;
            let count = revoked.len();
            events.extend(revoked.into_iter().map(|r| r.revoked(RevokeReason::Lease)));
            Ok(count)
        })
    }

    /// Revokes every active lease of run `run` (expired or not), and
    /// returns their ids: at the end of a job or a run, and by crash
    /// recovery.
    pub fn revoke_run(&self, run: RunId) -> Result<Vec<LeaseId>, SecretsError> {
        self.run(|inner, events| {
            let revoked = self.update_returning(
                &inner.conn,
                "UPDATE leases SET state = 'revoked', ended_at = ?1
                 WHERE run_id = ?2 AND state = 'active'
                 RETURNING id, secret, version, run_id",
                params![Timestamp::now(), run],
                "revoke the run's leases",
            )?;
            let ids = revoked.iter().map(|r| r.id.clone()).collect();
            events.extend(revoked.into_iter().map(|r| r.revoked(RevokeReason::Run)));
            Ok(ids)
        })
    }

    /// Marks every active lease past its expiry as expired, and returns
    /// their ids.
    pub fn expire(&self) -> Result<Vec<LeaseId>, SecretsError> {
        self.run(|inner, events| {
            let expired = self.update_returning(
                &inner.conn,
                "UPDATE leases SET state = 'expired', ended_at = ?1
                 WHERE state = 'active' AND expires_at <= ?1
                 RETURNING id, secret, version, run_id",
                params![Timestamp::now()],
                "expire leases",
            )?;
            let ids = expired.iter().map(|r| r.id.clone()).collect();
            events.extend(expired.into_iter().map(|r| SecretEvent::Expired {
                lease: r.id,
                name: r.secret,
                version: r.version,
                run: r.run,
            }));
            Ok(ids)
        })
    }

    /// The leases that match `filter`, oldest first (leases granted in the
    /// same instant by run, job and secret). Never values.
    pub fn leases(&self, filter: &LeaseFilter) -> Result<Vec<LeaseInfo>, SecretsError> {
        let inner = self.lock();
        let mut stmt = inner
            .conn
            .prepare(
                "SELECT id, secret, version, pipeline, job, run_id, granted_at, expires_at, state, ended_at
                 FROM leases
                 WHERE (?1 IS NULL OR run_id = ?1) AND (?2 IS NULL OR secret = ?2)
                   AND (?3 IS NULL OR state = ?3)
                 ORDER BY granted_at, run_id, job, secret, id",
            )
            .map_err(self.sql("list leases"))?;
        stmt.query_map(params![filter.run, filter.secret, filter.state], |row| {
            Ok(LeaseInfo {
                id: row.get(0)?,
                secret: row.get(1)?,
                version: row.get(2)?,
                pipeline: row.get(3)?,
                job: row.get(4)?,
                run: row.get(5)?,
                granted_at: row.get(6)?,
                expires_at: row.get(7)?,
                state: row.get(8)?,
                ended_at: row.get(9)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(self.sql("list leases"))
    }

    /// Re-wraps every data key with the key from `new` and makes it the
    /// store's key. Returns the new key's id.
    ///
    /// With [`KeySource::Home`] a new random key is made and, once every
    /// data key is re-wrapped, replaces `home/keys/secrets.key`. With
    /// [`KeySource::File`] the operator's file (which must exist) becomes
    /// the key; the old key file is left alone but opens nothing any more.
    ///
    /// Crash safety: with the key lock held throughout, (1) a new home key
    /// is first written durably to `keys/secrets.key.next`; (2) one
    /// transaction re-wraps every data key, and is durable when it commits
    /// (`synchronous = FULL`); (3) `secrets.key.next` is renamed over
    /// `secrets.key` and the directory fsynced. A crash before (2) commits
    /// leaves the store on the old key, which `secrets.key` still holds
    /// (the stray `.next` is removed at the next open). A crash after (2)
    /// leaves the store on the new key, which `.next` holds; the next open
    /// sees that `secrets.key` does not match but `.next` does, and
    /// finishes the rename. So one of the two files always opens the store.
    /// With an operator's file there is nothing to rename: before the
    /// commit the old key opens the store, after it the new one, and a
    /// wrong one is refused with both key ids named.
    pub fn rekey(&self, new: KeySource) -> Result<KekId, SecretsError> {
        self.rekey_until(new, RekeyStop::Never)
    }

    pub(crate) fn rekey_until(
        &self,
        new: KeySource,
        stop: RekeyStop,
    ) -> Result<KekId, SecretsError> {
        let mut events = Vec::new();
        let result = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let lock = KeyLock::acquire(&self.keys_dir)?;
            // Another process may have rekeyed: start from the store's key.
            let stored = store_key(&inner.conn, &self.db_path)?;
            inner.kek = key::resolve(&lock, &self.keys_dir, &inner.source, stored)?;
            let new_kek = match &new {
                KeySource::Home => {
                    let kek = key::generate(&self.keys_dir)?;
                    key::write_key_file(&self.keys_dir, NEXT_KEY_FILE, &kek, Existing::Replace)?;
                    kek
                }
                KeySource::File(path) => key::read_operator_key(path)?,
            };
            let (from, to) = (inner.kek.id(), new_kek.id());
            if from == to {
                return Err(SecretsError::SameKey { key: to });
            }
            if stop == RekeyStop::BeforeCommit {
                return Ok(to);
            }
            let count = match self.rewrap(&mut inner.conn, &inner.kek, &new_kek) {
                Ok(count) => count,
                Err(e) => {
                    if new == KeySource::Home {
                        // The new key opens nothing: tidy up, keep the error.
                        let _ = key::discard_next(&self.keys_dir);
                    }
                    return Err(e);
                }
            };
            if stop == RekeyStop::AfterCommit {
                return Ok(to);
            }
            inner.kek = new_kek;
            inner.source = new.clone();
            events.push(SecretEvent::Rekeyed {
                from,
                to,
                versions: count,
            });
            let promoted = if new == KeySource::Home {
                // If this fails the store is on the new key and `.next`
                // holds it: the next open finishes the swap.
                key::promote_next(&self.keys_dir)
            } else {
                Ok(())
            };
            // Best effort: move the re-wrapped pages into the database file
            // and empty the WAL, so old wrapped keys do not linger there.
            let _ = inner
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            drop(lock);
            promoted.map(|()| to)
        };
        self.emit(&events);
        result
    }

    /// Imports the secrets of the age-encrypted dotenv file `file` (see
    /// [`crate::import`]), decrypted with the X25519 identity file
    /// `identity`. A name that is new becomes a secret with `options`; a
    /// name that exists gets a new version (its scopes and maximum age are
    /// kept, so an import never widens who may read a secret). All or
    /// nothing, in one transaction. Returns the names, in file order.
    pub fn import_age(
        &self,
        file: &Path,
        identity: &Path,
        options: &SecretOptions,
    ) -> Result<Vec<String>, SecretsError> {
        let plaintext = import::decrypt(file, identity)?;
        let entries = import::parse_dotenv(file, &plaintext)?;
        if let Some(first) = entries.first() {
            check_options(&first.name, options)?;
        }
        self.run(|inner, events| {
            let now = Timestamp::now();
            let tx = self.begin(&mut inner.conn)?;
            ensure_key(&tx, &inner.kek, &self.db_path)?;
            let mut imported = Vec::with_capacity(entries.len());
            for entry in &entries {
                let value = &plaintext[entry.value.clone()];
                let version = match self.find(&tx, &entry.name)? {
                    Some(found) => {
                        self.rotate_in(&tx, &inner.kek, &found, &entry.name, value, now)?
                    }
                    None => {
                        self.insert_secret(&tx, &inner.kek, &entry.name, value, options, now)?;
                        1
                    }
                };
                imported.push(ImportedSecret {
                    name: entry.name.clone(),
                    version,
                });
            }
            tx.commit().map_err(self.sql("commit import"))?;
            let names = imported.iter().map(|i| i.name.clone()).collect();
            events.push(SecretEvent::Imported {
                file: file.to_owned(),
                secrets: imported,
            });
            Ok(names)
        })
    }

    // ---- internals ----

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` with the store locked, and hands its events to the sink
    /// afterwards, unlocked. If `op` finds that the loaded key is not the
    /// store's (another process rekeyed), reloads the key and runs `op`
    /// once more.
    fn run<T, E>(
        &self,
        mut op: impl FnMut(&mut Inner, &mut Vec<SecretEvent>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<SecretsError> + KeyMismatch,
    {
        let mut events = Vec::new();
        let result = {
            let mut inner = self.lock();
            match op(&mut inner, &mut events) {
                Err(e) if e.is_key_mismatch() => match self.reload_key(&mut inner) {
                    Ok(true) => {
                        events.clear();
                        op(&mut inner, &mut events)
                    }
                    Ok(false) => Err(e),
                    Err(reload) => Err(reload.into()),
                },
                other => other,
            }
        };
        self.emit(&events);
        result
    }

    /// Reads the key again; whether it changed.
    fn reload_key(&self, inner: &mut Inner) -> Result<bool, SecretsError> {
        let lock = KeyLock::acquire(&self.keys_dir)?;
        let stored = store_key(&inner.conn, &self.db_path)?;
        let kek = key::resolve(&lock, &self.keys_dir, &inner.source, stored)?;
        let changed = kek.id() != inner.kek.id();
        inner.kek = kek;
        Ok(changed)
    }

    fn emit(&self, events: &[SecretEvent]) {
        if let Some(sink) = &self.sink {
            events.iter().for_each(sink);
        }
    }

    fn sql(&self, action: &'static str) -> impl Fn(rusqlite::Error) -> SecretsError + '_ {
        move |source| SecretsError::Sql {
            path: self.db_path.clone(),
            action,
            source,
        }
    }

    fn corrupt(&self, what: String) -> SecretsError {
        SecretsError::Corrupt {
            path: self.db_path.clone(),
            what,
        }
    }

    fn begin<'c>(&self, conn: &'c mut Connection) -> Result<Transaction<'c>, SecretsError> {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("begin a transaction"))
    }

    fn find(&self, conn: &Connection, name: &str) -> Result<Option<Found>, SecretsError> {
        let row = conn
            .query_row(
                "SELECT id, version, scopes FROM secrets WHERE name = ?1",
                [name],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, u32>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(self.sql("find secret"))?;
        row.map(|(id, version, scopes)| {
            Ok(Found {
                id,
                version,
                scopes: self.parse_scopes(name, &scopes)?,
            })
        })
        .transpose()
    }

    fn parse_scopes(&self, name: &str, json: &str) -> Result<Vec<Scope>, SecretsError> {
        let patterns: Vec<String> = serde_json::from_str(json).map_err(|e| {
            self.corrupt(format!("secret {name:?}: scopes are not a JSON list: {e}"))
        })?;
        patterns
            .iter()
            .map(|p| Scope::parse(p).map_err(|e| self.corrupt(format!("secret {name:?}: {e}"))))
            .collect()
    }

    fn kek_id(&self, bytes: &[u8], name: &str, version: u32) -> Result<KekId, SecretsError> {
        KekId::from_slice(bytes).ok_or_else(|| {
            self.corrupt(format!(
                "secret {name:?} version {version}: malformed key id"
            ))
        })
    }

    /// The secret `name` if `pipeline/job` may have it; a denial (with its
    /// event) if not.
    fn authorize(
        &self,
        conn: &Connection,
        name: &str,
        pipeline: &str,
        job: &str,
        run: RunId,
        events: &mut Vec<SecretEvent>,
    ) -> Result<Found, LeaseError> {
        let deny = |events: &mut Vec<SecretEvent>, reason| {
            events.push(SecretEvent::Denied {
                name: name.to_owned(),
                pipeline: pipeline.to_owned(),
                job: job.to_owned(),
                run,
                reason,
            });
        };
        let Some(found) = self.find(conn, name)? else {
            deny(events, DenyReason::Unknown);
            return Err(LeaseError::Unknown {
                name: name.to_owned(),
            });
        };
        if !scope::any_allows(&found.scopes, pipeline, job) {
            deny(events, DenyReason::OutOfScope);
            return Err(LeaseError::OutOfScope {
                name: name.to_owned(),
                scope_tried: format!("{pipeline}/{job}"),
                scopes: found.scopes,
            });
        }
        Ok(found)
    }

    /// Decrypts version `version` of secret `secret_id` (named `name`).
    fn open_version(
        &self,
        conn: &Connection,
        kek: &Kek,
        secret_id: i64,
        name: &str,
        version: u32,
    ) -> Result<SecretSlice<u8>, SecretsError> {
        let row = conn
            .query_row(
                "SELECT kek_id, dek_nonce, wrapped_dek, nonce, ciphertext FROM versions
                 WHERE secret_id = ?1 AND version = ?2",
                params![secret_id, version],
                |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                        row.get::<_, Vec<u8>>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(self.sql("read secret version"))?;
        let Some((kek_id, dek_nonce, wrapped, nonce, ciphertext)) = row else {
            return Err(self.corrupt(format!(
                "secret {name:?}: its current version {version} is missing"
            )));
        };
        let stored = self.kek_id(&kek_id, name, version)?;
        if stored != kek.id() {
            return Err(SecretsError::KeyMismatch {
                path: kek.path().to_owned(),
                expected: stored,
                found: kek.id(),
            });
        }
        let tampered = |part| SecretsError::Tampered {
            name: name.to_owned(),
            version,
            part,
        };
        let aad = crypto::aad(name, version);
        let dek = crypto::open_key(kek.bytes(), &aad, &dek_nonce, &wrapped)
            .ok_or_else(|| tampered("data key"))?;
        let plain =
            crypto::open(&dek, &aad, &nonce, &ciphertext).ok_or_else(|| tampered("value"))?;
        // An exact-size box, so that no reallocation leaves a copy behind;
        // `plain` is wiped when it drops.
        let mut boxed = vec![0_u8; plain.len()].into_boxed_slice();
        boxed.copy_from_slice(&plain);
        Ok(SecretSlice::from(boxed))
    }

    fn next_version(&self, name: &str, version: u32) -> Result<u32, SecretsError> {
        version
            .checked_add(1)
            .ok_or_else(|| self.corrupt(format!("secret {name:?} has run out of version numbers")))
    }

    fn insert_secret(
        &self,
        tx: &Transaction<'_>,
        kek: &Kek,
        name: &str,
        value: &[u8],
        options: &SecretOptions,
        now: Timestamp,
    ) -> Result<(), SecretsError> {
        tx.execute(
            "INSERT INTO secrets (name, scopes, max_age_ms, version, created_at, rotated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4)",
            params![
                name,
                scopes_json(&options.scopes),
                options.max_age.map(time::duration_millis),
                now
            ],
        )
        .map_err(self.sql("record secret"))?;
        let id = tx.last_insert_rowid();
        self.insert_version(tx, kek, id, name, 1, value, now)
    }

    fn rotate_in(
        &self,
        tx: &Transaction<'_>,
        kek: &Kek,
        found: &Found,
        name: &str,
        value: &[u8],
        now: Timestamp,
    ) -> Result<u32, SecretsError> {
        let version = self.next_version(name, found.version)?;
        tx.execute(
            "UPDATE secrets SET version = ?2, rotated_at = ?3 WHERE id = ?1",
            params![found.id, version, now],
        )
        .map_err(self.sql("rotate secret"))?;
        self.insert_version(tx, kek, found.id, name, version, value, now)?;
        Ok(version)
    }

    /// Seals `value` with a fresh data key, wraps that with `kek`, and
    /// stores both as version `version`.
    #[allow(clippy::too_many_arguments)]
    fn insert_version(
        &self,
        tx: &Transaction<'_>,
        kek: &Kek,
        secret_id: i64,
        name: &str,
        version: u32,
        value: &[u8],
        now: Timestamp,
    ) -> Result<(), SecretsError> {
        let aad = crypto::aad(name, version);
        let dek = crypto::random_key()?;
        let sealed = crypto::seal(&dek, &aad, value)?;
        let wrapped = crypto::seal(kek.bytes(), &aad, &dek[..])?;
        tx.execute(
            "INSERT INTO versions (secret_id, version, created_at, kek_id, dek_nonce, wrapped_dek, nonce, ciphertext)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                secret_id,
                version,
                now,
                &kek.id().as_bytes()[..],
                &wrapped.nonce[..],
                wrapped.ciphertext,
                &sealed.nonce[..],
                sealed.ciphertext
            ],
        )
        .map_err(self.sql("record secret version"))?;
        Ok(())
    }

    /// Runs an `UPDATE leases … RETURNING id, secret, version, run_id`.
    fn update_returning(
        &self,
        conn: &Connection,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        action: &'static str,
    ) -> Result<Vec<Ended>, SecretsError> {
        let mut stmt = conn.prepare(sql).map_err(self.sql(action))?;
        let rows = stmt
            .query_map(params, |row: &Row<'_>| {
                Ok(Ended {
                    id: row.get(0)?,
                    secret: row.get(1)?,
                    version: row.get(2)?,
                    run: row.get(3)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(self.sql(action));
        rows
    }

    fn query_infos(&self, name: Option<&str>) -> Result<Vec<SecretInfo>, SecretsError> {
        let now = Timestamp::now();
        let inner = self.lock();
        let mut stmt = inner
            .conn
            .prepare(
                "SELECT s.name, s.scopes, s.max_age_ms, s.version, s.created_at, s.rotated_at,
                        (SELECT count(*) FROM versions v WHERE v.secret_id = s.id),
                        (SELECT count(*) FROM leases l
                         WHERE l.secret = s.name AND l.state = 'active' AND l.expires_at > ?1)
                 FROM secrets s WHERE ?2 IS NULL OR s.name = ?2 ORDER BY s.name",
            )
            .map_err(self.sql("list secrets"))?;
        let rows = stmt
            .query_map(params![now, name], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, Timestamp>(4)?,
                    row.get::<_, Timestamp>(5)?,
                    row.get::<_, u32>(6)?,
                    row.get::<_, u32>(7)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.sql("list secrets"))?;
        rows.into_iter()
            .map(
                |(
                    name,
                    scopes,
                    max_age_ms,
                    version,
                    created_at,
                    rotated_at,
                    versions,
                    active_leases,
                )| {
                    let scopes = self.parse_scopes(&name, &scopes)?;
                    let max_age =
                        max_age_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
                    let age = rotated_at.until(now);
                    Ok(SecretInfo {
                        stale: max_age.is_some_and(|max| age > max),
                        name,
                        scopes,
                        version,
                        versions,
                        created_at,
                        rotated_at,
                        age,
                        max_age,
                        active_leases,
                    })
                },
            )
            .collect()
    }

    /// Re-wraps every data key from `old` to `new` in one transaction;
    /// returns how many.
    fn rewrap(&self, conn: &mut Connection, old: &Kek, new: &Kek) -> Result<u64, SecretsError> {
        let tx = self.begin(conn)?;
        let rows = {
            let mut stmt = tx
                .prepare(
                    "SELECT s.name, v.secret_id, v.version, v.kek_id, v.dek_nonce, v.wrapped_dek
                     FROM versions v JOIN secrets s ON s.id = v.secret_id",
                )
                .map_err(self.sql("read data keys"))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, u32>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                        row.get::<_, Vec<u8>>(4)?,
                        row.get::<_, Vec<u8>>(5)?,
                    ))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(self.sql("read data keys"))?;
            rows
        };
        let mut count = 0_u64;
        for (name, secret_id, version, kek_id, nonce, wrapped) in rows {
            let stored = self.kek_id(&kek_id, &name, version)?;
            if stored != old.id() {
                return Err(SecretsError::KeyMismatch {
                    path: old.path().to_owned(),
                    expected: stored,
                    found: old.id(),
                });
            }
            let aad = crypto::aad(&name, version);
            let dek = crypto::open_key(old.bytes(), &aad, &nonce, &wrapped).ok_or_else(|| {
                SecretsError::Tampered {
                    name: name.clone(),
                    version,
                    part: "data key",
                }
            })?;
            let rewrapped = crypto::seal(new.bytes(), &aad, &dek[..KEY_LEN])?;
            tx.execute(
                "UPDATE versions SET kek_id = ?3, dek_nonce = ?4, wrapped_dek = ?5
                 WHERE secret_id = ?1 AND version = ?2",
                params![
                    secret_id,
                    version,
                    &new.id().as_bytes()[..],
                    &rewrapped.nonce[..],
                    rewrapped.ciphertext
                ],
            )
            .map_err(self.sql("re-wrap data key"))?;
            count += 1;
        }
        tx.commit().map_err(self.sql("commit rekey"))?;
        Ok(count)
    }
}

/// A secret's row, as needed to lease or rotate it.
struct Found {
    id: i64,
    version: u32,
    scopes: Vec<Scope>,
}

/// A lease that an `UPDATE … RETURNING` ended.
struct Ended {
    id: LeaseId,
    secret: String,
    version: u32,
    run: RunId,
}

impl Ended {
    fn revoked(self, reason: RevokeReason) -> SecretEvent {
        SecretEvent::Revoked {
            lease: self.id,
            name: self.secret,
            version: self.version,
            run: self.run,
            reason,
        }
    }
}

/// What the store says about its key (see [`StoreKey`]).
fn store_key(conn: &Connection, db_path: &Path) -> Result<Option<StoreKey>, SecretsError> {
    let row = conn
        .query_row(
            "SELECT kek_id, (SELECT count(*) FROM versions) FROM versions LIMIT 1",
            [],
            |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, i64>(1)?)),
        )
        .optional()
        .map_err(|source| SecretsError::Sql {
            path: db_path.to_owned(),
            action: "read the store's key id",
            source,
        })?;
    row.map(|(id, versions)| {
        Ok(StoreKey {
            id: KekId::from_slice(&id).ok_or_else(|| SecretsError::Corrupt {
                path: db_path.to_owned(),
                what: "malformed key id".into(),
            })?,
            versions: u64::try_from(versions).unwrap_or(0),
        })
    })
    .transpose()
}

/// Fails with [`SecretsError::KeyMismatch`] if the store's secrets are
/// sealed with another key than `kek` (another process rekeyed), so that no
/// version is ever written under a stale key.
fn ensure_key(conn: &Connection, kek: &Kek, db_path: &Path) -> Result<(), SecretsError> {
    match store_key(conn, db_path)? {
        Some(stored) if stored.id != kek.id() => Err(SecretsError::KeyMismatch {
            path: kek.path().to_owned(),
            expected: stored.id,
            found: kek.id(),
        }),
        _ => Ok(()),
    }
}

fn check_options(name: &str, options: &SecretOptions) -> Result<(), SecretsError> {
    if options.scopes.is_empty() {
        return Err(SecretsError::NoScopes {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn scopes_json(scopes: &[Scope]) -> String {
    serde_json::to_string(&scopes.iter().map(Scope::as_str).collect::<Vec<_>>())
        .expect("a list of strings serializes to JSON")
}

/// A random value: `len` random bytes in URL-safe base64 without padding
/// (`len` from [`MIN_GENERATE_BYTES`] to [`MAX_GENERATE_BYTES`]), for
/// `rotate --generate`.
pub fn generate_value(len: usize) -> Result<SecretSlice<u8>, SecretsError> {
    use base64::Engine;
    if !(MIN_GENERATE_BYTES..=MAX_GENERATE_BYTES).contains(&len) {
        return Err(SecretsError::GenerateLength { len });
    }
    let mut raw = zeroize::Zeroizing::new(vec![0_u8; len]);
    crypto::fill_random(&mut raw)?;
    let encoded_len = base64::encoded_len(len, false).expect("a few KiB of base64 fits in usize");
    let mut out = vec![0_u8; encoded_len].into_boxed_slice();
    let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(&raw[..], &mut out)
        .expect("the output has exactly the encoded length");
    debug_assert_eq!(written, encoded_len);
    Ok(SecretSlice::from(out))
}

#[cfg(test)]
mod tests {
    //! Crash recovery of `rekey`: `rekey_until` leaves exactly the files and
    //! rows a crash at that point would leave; reopening must recover.

    use super::*;
    use crate::key::KEY_FILE;
    use secrecy::ExposeSecret;

    const VALUE: &[u8] = b"correct-horse-battery";

    fn store_with_secret(home: &Path) -> SecretStore {
        let store = SecretStore::open(home, KeySource::Home).expect("open");
        let options = SecretOptions::parse(&["demo/*"]).expect("scopes");
        store
            .set("TOKEN", VALUE, &options, IfExists::Fail)
            .expect("set");
        store
            .set("OTHER", b"second-value", &options, IfExists::Fail)
            .expect("set");
        store
    }

    fn lease_value(store: &SecretStore) -> Vec<u8> {
        let lease = store
            .lease("TOKEN", "demo", "build", 1, Duration::from_secs(60))
            .expect("lease");
        lease.value().expose_secret().to_vec()
    }

    fn key_file_id(home: &Path, name: &str) -> Option<KekId> {
        key::read_key_file(&home.join(KEYS_DIR).join(name), false)
            .expect("read key file")
            .map(|k| k.id())
    }

    #[test]
    fn crash_before_commit_keeps_the_old_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        let store = store_with_secret(home);
        let old = store.key_id();
        let new = store
            .rekey_until(KeySource::Home, RekeyStop::BeforeCommit)
            .expect("rekey up to the commit");
        drop(store);
        assert_eq!(key_file_id(home, KEY_FILE), Some(old));
        assert_eq!(key_file_id(home, NEXT_KEY_FILE), Some(new));

        let store = SecretStore::open(home, KeySource::Home).expect("reopen");
        assert_eq!(store.key_id(), old);
        assert_eq!(lease_value(&store), VALUE);
        assert_eq!(
            key_file_id(home, NEXT_KEY_FILE),
            None,
            "stray .next removed"
        );
    }

    #[test]
    fn crash_after_commit_finishes_the_key_swap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path();
        let store = store_with_secret(home);
        let old = store.key_id();
        let new = store
            .rekey_until(KeySource::Home, RekeyStop::AfterCommit)
            .expect("rekey up to the key swap");
        drop(store);
        // The store is on the new key, `secrets.key` still holds the old one.
        assert_eq!(key_file_id(home, KEY_FILE), Some(old));
        assert_eq!(key_file_id(home, NEXT_KEY_FILE), Some(new));

        let store = SecretStore::open(home, KeySource::Home).expect("reopen");
        assert_eq!(store.key_id(), new);
        assert_eq!(lease_value(&store), VALUE);
        assert_eq!(key_file_id(home, KEY_FILE), Some(new));
        assert_eq!(key_file_id(home, NEXT_KEY_FILE), None);
    }

    #[test]
    fn crash_after_commit_to_an_operator_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let store = store_with_secret(&home);
        let operator_key = dir.path().join("operator.key");
        let bytes: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 7).unwrap_or(0));
        crate::fs::write_atomic(dir.path(), "operator.key", &bytes, Existing::Replace)
            .expect("write key");
        store
            .rekey_until(
                KeySource::File(operator_key.clone()),
                RekeyStop::AfterCommit,
            )
            .expect("rekey");
        drop(store);
        let err = SecretStore::open(&home, KeySource::Home).expect_err("old key no longer opens");
        assert!(matches!(err, SecretsError::KeyMismatch { .. }), "{err}");
        let store = SecretStore::open(&home, KeySource::File(operator_key)).expect("new key opens");
        assert_eq!(lease_value(&store), VALUE);
    }

    #[test]
    fn generated_values() {
        let value = generate_value(32).expect("generate");
        let text = value.expose_secret();
        assert_eq!(text.len(), 43);
        assert!(text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'));
        assert_ne!(
            generate_value(32).expect("generate").expose_secret(),
            text,
            "fresh randomness"
        );
        assert!(generate_value(MIN_GENERATE_BYTES - 1).is_err());
        assert!(generate_value(MAX_GENERATE_BYTES + 1).is_err());
        assert!(
            generate_value(MAX_GENERATE_BYTES)
                .expect("max")
                .expose_secret()
                .len()
                <= crate::MAX_SECRET_LEN
        );
    }
}
