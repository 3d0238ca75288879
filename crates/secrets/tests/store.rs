//! The secret store, end to end on real files: round trips, tampering, keys,
//! scopes, leases, rekeying, plaintext on disk, events, and `age` interop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use secrets::{
    DenyReason, IfExists, KeySource, LeaseError, LeaseFilter, LeaseState, RevokeReason, Scope,
    SecretEvent, SecretOptions, SecretStore, SecretsError, MIN_SECRET_LEN,
};
use tempfile::TempDir;

const HOUR: Duration = Duration::from_secs(3600);

fn home() -> TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn open(home: &Path) -> SecretStore {
    SecretStore::open(home, KeySource::Home).expect("open store")
}

fn scopes(patterns: &[&str]) -> SecretOptions {
    SecretOptions::parse(patterns).expect("valid scopes")
}

fn lease_value(store: &SecretStore, name: &str, pipeline: &str, job: &str) -> Vec<u8> {
    store
        .lease(name, pipeline, job, 1, HOUR)
        .expect("lease")
        .expose()
        .to_vec()
}

fn db(home: &Path) -> Connection {
    Connection::open(home.join("secrets.db")).expect("open db")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

/// Writes a key file with the given mode.
fn write_key(path: &Path, contents: &[u8], mode: u32) {
    std::fs::write(path, contents).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn events_of(store: SecretStore) -> (SecretStore, Arc<Mutex<Vec<SecretEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let store = store.with_event_sink(move |e| sink.lock().expect("events").push(e.clone()));
    (store, events)
}

// ---- round trip, versions ----

#[test]
fn set_lease_rotate_round_trip() {
    let home = home();
    let store = open(home.path());
    let v = store
        .set(
            "DEPLOY_TOKEN",
            b"first-value",
            &scopes(&["demo/*"]),
            IfExists::Fail,
        )
        .expect("set");
    assert_eq!(v, 1);
    let first = store
        .lease("DEPLOY_TOKEN", "demo", "build", 7, HOUR)
        .expect("lease v1");
    assert_eq!(first.expose(), b"first-value");
    assert_eq!(first.info().version, 1);

    assert_eq!(
        store
            .rotate("DEPLOY_TOKEN", b"second-value")
            .expect("rotate"),
        2
    );
    let second = store
        .lease("DEPLOY_TOKEN", "demo", "deploy", 7, HOUR)
        .expect("lease v2");
    assert_eq!(
        second.expose(),
        b"second-value",
        "new leases get the new version"
    );
    assert_eq!(second.info().version, 2);
    assert_eq!(
        first.expose(),
        b"first-value",
        "a held lease keeps its value"
    );

    let versions = store.versions("DEPLOY_TOKEN").expect("versions");
    let listed: Vec<(u32, bool)> = versions.iter().map(|v| (v.version, v.current)).collect();
    assert_eq!(listed, vec![(1, false), (2, true)]);
    assert!(versions.iter().all(|v| v.key == store.key_id()));

    let info = store.info("DEPLOY_TOKEN").expect("info");
    assert_eq!((info.version, info.versions, info.active_leases), (2, 2, 2));
    assert_eq!(info.scopes, vec![Scope::parse("demo/*").expect("scope")]);
    assert!(info.rotated_at >= info.created_at);

    // Reopening reads the same values.
    drop(store);
    let store = open(home.path());
    assert_eq!(
        lease_value(&store, "DEPLOY_TOKEN", "demo", "x"),
        b"second-value"
    );
}

#[test]
fn set_existing_needs_replace() {
    let home = home();
    let store = open(home.path());
    store
        .set("TOKEN", b"value-one", &scopes(&["a/*"]), IfExists::Fail)
        .expect("set");
    let err = store
        .set("TOKEN", b"value-two", &scopes(&["a/*"]), IfExists::Fail)
        .expect_err("exists");
    assert!(
        matches!(err, SecretsError::Exists { version: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("\"TOKEN\" already exists"),
        "{err}"
    );

    let v = store
        .set(
            "TOKEN",
            b"value-two",
            &scopes(&["b/deploy"]),
            IfExists::Replace,
        )
        .expect("replace");
    assert_eq!(v, 2);
    assert_eq!(lease_value(&store, "TOKEN", "b", "deploy"), b"value-two");
    assert!(matches!(
        store.lease("TOKEN", "a", "build", 1, HOUR),
        Err(LeaseError::OutOfScope { .. })
    ));
}

#[test]
fn list_shows_metadata_never_values_and_staleness() {
    let home = home();
    let store = open(home.path());
    store
        .set(
            "FRESH",
            b"fresh-value-123",
            &scopes(&["*/*"]),
            IfExists::Fail,
        )
        .expect("set");
    store
        .set(
            "OLD",
            b"old-value-456",
            &scopes(&["demo/*", "*/deploy"]).with_max_age(Duration::from_millis(200)),
            IfExists::Fail,
        )
        .expect("set");
    std::thread::sleep(Duration::from_millis(250));
    let list = store.list().expect("list");
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["FRESH", "OLD"]);
    assert!(!list[0].stale);
    assert_eq!(list[0].max_age, None);
    assert!(list[1].stale, "older than max_age");
    assert!(list[1].age >= Duration::from_millis(250));

    let json = serde_json::to_string(&list).expect("json");
    assert!(
        !json.contains("fresh-value") && !json.contains("old-value"),
        "{json}"
    );
    assert!(
        json.contains("\"scopes\":[\"demo/*\",\"*/deploy\"]"),
        "{json}"
    );
    assert!(json.contains("\"stale\":true"), "{json}");
    let debug = format!("{list:?}");
    assert!(!debug.contains("fresh-value"), "{debug}");

    // Rotation makes it fresh again.
    store.rotate("OLD", b"newer-value-789").expect("rotate");
    assert!(!store.info("OLD").expect("info").stale);
}

#[test]
fn values_are_checked() {
    let home = home();
    let store = open(home.path());
    let opts = scopes(&["*/*"]);
    let err = store
        .set("SHORT", b"12345", &opts, IfExists::Fail)
        .expect_err("short value");
    assert!(
        matches!(err, SecretsError::ValueTooShort { len: 5, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("at least 6"), "{msg}");
    assert!(msg.contains("redactor"), "the message explains why: {msg}");
    assert_eq!(MIN_SECRET_LEN, 6);
    store
        .set("SIX", b"123456", &opts, IfExists::Fail)
        .expect("six bytes is enough");
    assert!(matches!(
        store.rotate("SIX", b"1234"),
        Err(SecretsError::ValueTooShort { .. })
    ));
    assert!(matches!(
        store.set("BIG", &vec![b'x'; 64 * 1024 + 1], &opts, IfExists::Fail),
        Err(SecretsError::ValueTooLong { .. })
    ));
    store
        .set("BIG", &vec![b'x'; 64 * 1024], &opts, IfExists::Fail)
        .expect("64 KiB is allowed");
    for bad in ["", "1ABC", "A-B", "A.B", "ÄB"] {
        assert!(
            matches!(
                store.set(bad, b"abcdefgh", &opts, IfExists::Fail),
                Err(SecretsError::InvalidName { .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        store.set(
            "NOSCOPE",
            b"abcdefgh",
            &SecretOptions::new(vec![]),
            IfExists::Fail
        ),
        Err(SecretsError::NoScopes { .. })
    ));
    assert!(matches!(
        store.rotate("MISSING", b"abcdefgh"),
        Err(SecretsError::Unknown { .. })
    ));
    // Binary values round-trip.
    let binary: Vec<u8> = (0..=255).collect();
    store
        .set("BINARY", &binary, &opts, IfExists::Fail)
        .expect("set");
    assert_eq!(lease_value(&store, "BINARY", "p", "j"), binary);
}

// ---- tampering ----

/// Runs `sql` against the database, then expects the lease of `name` to fail
/// as tampered with `part`, and no lease to be recorded.
fn expect_tampered(home: &Path, store: &SecretStore, name: &str, sql: &str, part: &str) {
    db(home).execute_batch(sql).expect("tamper");
    let before = store.leases(&LeaseFilter::default()).expect("leases").len();
    let err = store
        .lease(name, "demo", "build", 1, HOUR)
        .expect_err("tampered ciphertext must not open");
    let LeaseError::Store(SecretsError::Tampered { part: got, .. }) = &err else {
        panic!("expected Tampered, got {err:?}");
    };
    assert_eq!(*got, part, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{name:?}")) && msg.contains("fails authentication"),
        "{msg}"
    );
    let after = store.leases(&LeaseFilter::default()).expect("leases").len();
    assert_eq!(
        before, after,
        "no lease is recorded for a value that failed to open"
    );
}

/// SQL that flips the lowest bit of byte `offset` (0-based) of `column` in
/// every version of secret `name`.
fn flip(home: &Path, column: &str, name: &str, offset: usize) -> String {
    let conn = db(home);
    let mut blob: Vec<u8> = conn
        .query_row(
            &format!(
                "SELECT {column} FROM versions WHERE secret_id = (SELECT id FROM secrets WHERE name = ?1)"
            ),
            [name],
            |r| r.get(0),
        )
        .expect("read column");
    blob[offset] ^= 1;
    let hex: String = blob.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "UPDATE versions SET {column} = x'{hex}' WHERE secret_id = (SELECT id FROM secrets WHERE name = '{name}');"
    )
}

#[test]
fn flipped_bytes_fail_to_open() {
    let home = home();
    let store = open(home.path());
    let opts = scopes(&["demo/*"]);
    for (name, column, part) in [
        ("CIPHERTEXT", "ciphertext", "value"),
        ("NONCE", "nonce", "value"),
        ("WRAPPED", "wrapped_dek", "data key"),
        ("DEK_NONCE", "dek_nonce", "data key"),
    ] {
        store
            .set(name, b"a-value-to-protect", &opts, IfExists::Fail)
            .expect("set");
        assert_eq!(
            lease_value(&store, name, "demo", "build"),
            b"a-value-to-protect"
        );
        let sql = flip(home.path(), column, name, 3);
        expect_tampered(home.path(), &store, name, &sql, part);
    }
}

#[test]
fn swapped_ciphertexts_fail_to_open() {
    let home = home();
    let store = open(home.path());
    let opts = scopes(&["demo/*"]);
    store
        .set("ALPHA", b"alpha-secret", &opts, IfExists::Fail)
        .expect("set");
    store
        .set("BRAVO", b"bravo-secret", &opts, IfExists::Fail)
        .expect("set");
    // Move BRAVO's whole envelope (data key and value) to ALPHA: the
    // associated data names BRAVO, so ALPHA's row does not open.
    expect_tampered(
        home.path(),
        &store,
        "ALPHA",
        "UPDATE versions SET
            (kek_id, dek_nonce, wrapped_dek, nonce, ciphertext) =
            (SELECT kek_id, dek_nonce, wrapped_dek, nonce, ciphertext FROM versions v
             JOIN secrets s ON s.id = v.secret_id WHERE s.name = 'BRAVO')
         WHERE secret_id = (SELECT id FROM secrets WHERE name = 'ALPHA');",
        "data key",
    );

    // Within one secret: version 1's envelope copied onto version 2.
    store
        .set("CHARLIE", b"charlie-one", &opts, IfExists::Fail)
        .expect("set");
    store.rotate("CHARLIE", b"charlie-two").expect("rotate");
    expect_tampered(
        home.path(),
        &store,
        "CHARLIE",
        "UPDATE versions SET
            (dek_nonce, wrapped_dek, nonce, ciphertext) =
            (SELECT dek_nonce, wrapped_dek, nonce, ciphertext FROM versions v
             WHERE v.secret_id = versions.secret_id AND v.version = 1)
         WHERE version = 2 AND secret_id = (SELECT id FROM secrets WHERE name = 'CHARLIE');",
        "data key",
    );

    // Only the sealed value swapped (each keeps its own data key).
    store
        .set("DELTA", b"delta-secret", &opts, IfExists::Fail)
        .expect("set");
    store
        .set("ECHO", b"echo-secret!", &opts, IfExists::Fail)
        .expect("set");
    expect_tampered(
        home.path(),
        &store,
        "DELTA",
        "UPDATE versions SET (nonce, ciphertext) =
            (SELECT nonce, ciphertext FROM versions v JOIN secrets s ON s.id = v.secret_id
             WHERE s.name = 'ECHO')
         WHERE secret_id = (SELECT id FROM secrets WHERE name = 'DELTA');",
        "value",
    );
    // The untouched secret still opens.
    assert_eq!(lease_value(&store, "ECHO", "demo", "x"), b"echo-secret!");
}

// ---- keys ----

#[test]
fn files_are_private() {
    let home = home();
    let store = open(home.path());
    store
        .set("TOKEN", b"some-value", &scopes(&["*/*"]), IfExists::Fail)
        .expect("set");
    let h = home.path();
    assert_eq!(mode(&h.join("secrets.db")), 0o600);
    assert_eq!(mode(&h.join("secrets.db-wal")), 0o600);
    assert_eq!(mode(&h.join("keys")), 0o700);
    assert_eq!(mode(&h.join("keys/secrets.key")), 0o600);
    let key = std::fs::read_to_string(h.join("keys/secrets.key")).expect("key");
    assert_eq!(key.len(), 65, "64 hex digits and a newline");
    assert_eq!(store.key_path(), h.join("keys/secrets.key"));
}

#[test]
fn wrong_key_file_is_reported_as_such() {
    let home = home();
    let store = open(home.path());
    store
        .set("TOKEN", b"some-value", &scopes(&["*/*"]), IfExists::Fail)
        .expect("set");
    let right = store.key_id();
    drop(store);

    let other = home.path().join("other.key");
    write_key(&other, &[0x42; 32], 0o600);
    let err =
        SecretStore::open(home.path(), KeySource::File(other.clone())).expect_err("wrong key");
    assert!(
        matches!(err, SecretsError::KeyMismatch { expected, .. } if expected == right),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("does not match this store"), "{msg}");
    assert!(
        msg.contains(&right.to_string()),
        "names the store's key id: {msg}"
    );

    // The home key file replaced by another key: same clear error.
    let key_file = home.path().join("keys/secrets.key");
    let saved = std::fs::read(&key_file).expect("read key");
    write_key(
        &key_file,
        format!("{}\n", "ab".repeat(32)).as_bytes(),
        0o600,
    );
    let err = SecretStore::open(home.path(), KeySource::Home).expect_err("wrong key");
    assert!(
        err.to_string().contains("does not match this store"),
        "{err}"
    );

    // Restored, it opens again.
    write_key(&key_file, &saved, 0o600);
    assert_eq!(
        lease_value(&open(home.path()), "TOKEN", "p", "j"),
        b"some-value"
    );
}

#[test]
fn readable_key_files_are_refused() {
    let home = home();
    drop(open(home.path()));
    let key_file = home.path().join("keys/secrets.key");
    for bad in [0o644, 0o640, 0o604, 0o660, 0o602] {
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(bad)).expect("chmod");
        let err = SecretStore::open(home.path(), KeySource::Home).expect_err("readable key");
        assert!(
            matches!(err, SecretsError::KeyPermissions { mode, .. } if mode == bad),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{bad:04o}")) && msg.contains("chmod 0600"),
            "{msg}"
        );
    }
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    drop(open(home.path()));

    // An operator's key file too.
    let operator = home.path().join("operator.key");
    write_key(&operator, &[7; 32], 0o644);
    let err = SecretStore::open(home.path(), KeySource::File(operator)).expect_err("readable");
    assert!(matches!(err, SecretsError::KeyPermissions { .. }), "{err}");

    // A keys directory others can write to.
    std::fs::set_permissions(
        home.path().join("keys"),
        std::fs::Permissions::from_mode(0o777),
    )
    .expect("chmod");
    let err = SecretStore::open(home.path(), KeySource::Home).expect_err("open keys dir");
    assert!(
        matches!(err, SecretsError::KeyPermissions { fix: 0o700, .. }),
        "{err}"
    );
}

#[test]
fn missing_key_is_never_silently_replaced() {
    let home = home();
    let store = open(home.path());
    store
        .set("TOKEN", b"some-value", &scopes(&["*/*"]), IfExists::Fail)
        .expect("set");
    drop(store);
    let key_file = home.path().join("keys/secrets.key");
    std::fs::remove_file(&key_file).expect("rm key");
    let err = SecretStore::open(home.path(), KeySource::Home).expect_err("no key");
    assert!(
        matches!(err, SecretsError::KeyMissing { versions: 1, .. }),
        "{err}"
    );
    assert!(!key_file.exists(), "no new key was created");

    let err = SecretStore::open(home.path(), KeySource::File(home.path().join("nope")))
        .expect_err("operator file missing");
    assert!(matches!(err, SecretsError::KeyFileMissing { .. }), "{err}");
}

#[test]
fn operator_key_files_in_every_format() {
    use base64::Engine;
    let raw: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).expect("small") ^ 0x5a);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let formats: [Vec<u8>; 4] = [
        raw.to_vec(),
        format!("{hex}\n").into_bytes(),
        format!("{b64}\n").into_bytes(),
        format!("  {}  ", b64.trim_end_matches('=')).into_bytes(),
    ];
    let home = home();
    let mut id = None;
    for (i, contents) in formats.iter().enumerate() {
        let path = home.path().join(format!("key{i}"));
        write_key(&path, contents, 0o600);
        let store = SecretStore::open(home.path(), KeySource::File(path)).expect("open");
        if i == 0 {
            store
                .set("TOKEN", b"some-value", &scopes(&["*/*"]), IfExists::Fail)
                .expect("set");
        }
        assert_eq!(
            lease_value(&store, "TOKEN", "p", "j"),
            b"some-value",
            "format {i}"
        );
        assert_eq!(*id.get_or_insert(store.key_id()), store.key_id());
    }
    let bad = home.path().join("bad.key");
    write_key(&bad, b"not a key\n", 0o600);
    let err = SecretStore::open(home.path(), KeySource::File(bad)).expect_err("bad key");
    assert!(matches!(err, SecretsError::KeyFormat { .. }), "{err}");
}

// ---- scopes ----

#[test]
fn scope_matching_table() {
    let cases: &[(&str, &str, &str, bool)] = &[
        ("*/*", "demo", "build", true),
        ("*/*", "x", "y", true),
        ("demo/*", "demo", "build", true),
        ("demo/*", "demo", "deploy-prod", true),
        ("demo/*", "demo2", "build", false),
        ("demo/*", "other", "build", false),
        ("*/deploy", "demo", "deploy", true),
        ("*/deploy", "web-app", "deploy", true),
        ("*/deploy", "demo", "deploy-prod", false),
        ("*/deploy", "demo", "predeploy", false),
        ("demo/build", "demo", "build", true),
        ("demo/build", "demo", "build2", false),
        ("demo/build", "demo", "buil", false),
        ("demo/deploy-*", "demo", "deploy-prod", true),
        ("demo/deploy-*", "demo", "deploy-", true),
        ("demo/deploy-*", "demo", "deploy", false),
        ("demo/*_test", "demo", "unit_test", true),
        ("demo/*_test", "demo", "unit-test", false),
        ("my_pipe-1/*", "my_pipe-1", "job", true),
        ("my_pipe-1/*", "my-pipe-1", "job", false),
        ("*-prod/*", "web-prod", "deploy", true),
        ("*-prod/*", "web-staging", "deploy", false),
        ("a*b*c/*", "abc", "j", true),
        ("a*b*c/*", "aXXbYYc", "j", true),
        ("a*b*c/*", "acb", "j", false),
        // `*` never crosses `/`, even when a name smuggles one in.
        ("demo/*", "demo", "a/b", false),
        ("*/*", "demo/x", "y", false),
        ("*/build", "demo/x", "build", false),
    ];
    for &(pattern, pipeline, job, want) in cases {
        let scope = Scope::parse(pattern).expect(pattern);
        assert_eq!(
            scope.allows(pipeline, job),
            want,
            "{pattern} vs {pipeline}/{job}"
        );
        assert_eq!(scope.to_string(), pattern);
    }
    assert!(cases.len() >= 15);
}

#[test]
fn invalid_scopes_are_refused_with_reasons() {
    let cases = [
        ("*", "*/*"),
        ("**", "*/*"),
        ("", "PIPELINE/JOB"),
        ("demo", "NAME/*"),
        ("demo/", "must not be empty"),
        ("/build", "must not be empty"),
        ("a/b/c", "exactly one /"),
        ("demo/**", "** is not supported"),
        ("Demo/*", "lowercase"),
        ("demo/build job", "only a-z"),
        ("demo/bu?ld", "only a-z"),
        ("demo/[ab]", "only a-z"),
    ];
    for (pattern, reason) in cases {
        let err = Scope::parse(pattern).expect_err(pattern);
        let msg = err.to_string();
        assert!(msg.contains(reason), "{pattern:?}: {msg}");
        assert!(msg.contains(&format!("{pattern:?}")), "{msg}");
    }
    assert!(SecretOptions::parse(&["demo/*", "bad"]).is_err());
}

#[test]
fn unknown_and_out_of_scope_are_distinct_denials() {
    let home = home();
    let (store, events) = events_of(open(home.path()));
    store
        .set(
            "DEPLOY_TOKEN",
            b"deploy-value",
            &scopes(&["demo/deploy", "*/release"]),
            IfExists::Fail,
        )
        .expect("set");
    events.lock().expect("events").clear();

    let err = store
        .lease("DEPLOY_TOKEN", "demo", "build", 9, HOUR)
        .expect_err("out of scope");
    assert!(err.is_denial());
    assert_eq!(
        err.to_string(),
        r#"secret "DEPLOY_TOKEN" is out of scope for demo/build: its scopes are "demo/deploy", "*/release""#
    );
    let LeaseError::OutOfScope {
        name,
        scope_tried,
        scopes: got,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        (name.as_str(), scope_tried.as_str(), got.len()),
        ("DEPLOY_TOKEN", "demo/build", 2)
    );

    let err = store
        .lease("NPM_TOKEN", "demo", "build", 9, HOUR)
        .expect_err("unknown");
    assert!(err.is_denial());
    assert!(matches!(&err, LeaseError::Unknown { name } if name == "NPM_TOKEN"));
    assert_eq!(
        err.to_string(),
        r#"unknown secret "NPM_TOKEN": it is not in the secret store"#
    );

    // Admission gives the same answers without leasing.
    assert!(matches!(
        store.admit("DEPLOY_TOKEN", "demo", "build", 9),
        Err(LeaseError::OutOfScope { .. })
    ));
    assert_eq!(
        store
            .admit("DEPLOY_TOKEN", "demo", "deploy", 9)
            .expect("admit"),
        1
    );
    assert_eq!(
        store
            .admit("DEPLOY_TOKEN", "x", "release", 9)
            .expect("admit"),
        1
    );

    // Nothing was leased; every refusal is an event.
    assert!(store
        .leases(&LeaseFilter::default())
        .expect("leases")
        .is_empty());
    let reasons: Vec<DenyReason> = events
        .lock()
        .expect("events")
        .iter()
        .filter_map(|e| match e {
            SecretEvent::Denied { reason, run: 9, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            DenyReason::OutOfScope,
            DenyReason::Unknown,
            DenyReason::OutOfScope
        ]
    );
}

// ---- leases ----

#[test]
fn leases_revoke_revoke_run_and_expire() {
    let home = home();
    let store = open(home.path());
    let opts = scopes(&["demo/*"]);
    store
        .set("A_TOKEN", b"aaaaaaaa", &opts, IfExists::Fail)
        .expect("set");
    store
        .set("B_TOKEN", b"bbbbbbbb", &opts, IfExists::Fail)
        .expect("set");

    let run1_a = store
        .lease("A_TOKEN", "demo", "build", 1, HOUR)
        .expect("lease");
    let run1_b = store
        .lease("B_TOKEN", "demo", "build", 1, HOUR)
        .expect("lease");
    let run2_a = store
        .lease("A_TOKEN", "demo", "test", 2, HOUR)
        .expect("lease");
    let short = store
        .lease("B_TOKEN", "demo", "test", 3, Duration::from_millis(1))
        .expect("lease");
    assert_ne!(run1_a.id(), run2_a.id());

    // Revoke one lease by id.
    assert!(store.revoke(run2_a.id()).expect("revoke"));
    assert!(
        !store.revoke(run2_a.id()).expect("again"),
        "second revoke changes nothing"
    );
    let unknown: secrets::LeaseId = "0123456789abcdef0123456789abcdef".parse().expect("id");
    assert!(matches!(
        store.revoke(&unknown),
        Err(SecretsError::UnknownLease { .. })
    ));

    // Revoke a whole run.
    let mut revoked = store.revoke_run(1).expect("revoke run");
    revoked.sort();
    let mut want = vec![run1_a.id().clone(), run1_b.id().clone()];
    want.sort();
    assert_eq!(revoked, want);
    assert!(store.revoke_run(1).expect("again").is_empty());

    // Expire.
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(store.expire().expect("expire"), vec![short.id().clone()]);
    assert!(store.expire().expect("again").is_empty());
    assert!(
        !store.revoke(short.id()).expect("expired"),
        "an expired lease is not revoked"
    );

    let all = store.leases(&LeaseFilter::default()).expect("leases");
    let states: Vec<(i64, &str, LeaseState)> = all
        .iter()
        .map(|l| (l.run, l.job.as_str(), l.state))
        .collect();
    assert_eq!(
        states,
        [
            (1, "build", LeaseState::Revoked),
            (1, "build", LeaseState::Revoked),
            (2, "test", LeaseState::Revoked),
            (3, "test", LeaseState::Expired),
        ]
    );
    assert!(all.iter().all(|l| l.ended_at.is_some() && l.version == 1));

    let run1 = store
        .leases(&LeaseFilter {
            run: Some(1),
            ..LeaseFilter::default()
        })
        .expect("leases");
    assert_eq!(run1.len(), 2);
    let revoked_b = store
        .leases(&LeaseFilter {
            secret: Some("B_TOKEN".into()),
            state: Some(LeaseState::Revoked),
            run: None,
        })
        .expect("leases");
    assert_eq!(revoked_b.len(), 1);
    assert_eq!(&revoked_b[0].id, run1_b.id());

    // Lease records never carry values.
    let json = serde_json::to_string(&all).expect("json");
    assert!(
        !json.contains("aaaaaaaa") && !json.contains("bbbbbbbb"),
        "{json}"
    );
}

#[test]
fn rm_refuses_active_leases_unless_forced() {
    let home = home();
    let (store, events) = events_of(open(home.path()));
    let opts = scopes(&["demo/*"]);
    store
        .set("TOKEN", b"token-value", &opts, IfExists::Fail)
        .expect("set");
    store.rotate("TOKEN", b"token-value-2").expect("rotate");
    let lease = store
        .lease("TOKEN", "demo", "build", 4, HOUR)
        .expect("lease");

    let err = store.rm("TOKEN", false).expect_err("active lease");
    assert!(
        matches!(&err, SecretsError::ActiveLeases { count: 1, runs, .. } if runs == &[4]),
        "{err}"
    );
    assert!(store.info("TOKEN").is_ok(), "nothing was removed");

    let revoked = store.rm("TOKEN", true).expect("forced rm");
    assert_eq!(revoked, vec![lease.id().clone()]);
    assert!(matches!(
        store.info("TOKEN"),
        Err(SecretsError::Unknown { .. })
    ));
    assert!(matches!(
        store.versions("TOKEN"),
        Err(SecretsError::Unknown { .. })
    ));
    assert!(matches!(
        store.rm("TOKEN", false),
        Err(SecretsError::Unknown { .. })
    ));
    let rows: i64 = db(home.path())
        .query_row("SELECT count(*) FROM versions", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 0, "all versions deleted");

    let leases = store.leases(&LeaseFilter::default()).expect("leases");
    assert_eq!(leases.len(), 1, "the lease record outlives the secret");
    assert_eq!(leases[0].state, LeaseState::Revoked);
    let tail: Vec<SecretEvent> = events
        .lock()
        .expect("events")
        .iter()
        .rev()
        .take(2)
        .cloned()
        .collect();
    assert!(matches!(&tail[0], SecretEvent::Removed { name, versions: 2 } if name == "TOKEN"));
    assert!(matches!(
        &tail[1],
        SecretEvent::Revoked {
            reason: RevokeReason::SecretRemoved,
            run: 4,
            ..
        }
    ));

    // A name can be reused after removal; it starts at version 1.
    assert_eq!(
        store
            .set("TOKEN", b"reborn-value", &opts, IfExists::Fail)
            .expect("set"),
        1
    );
}

#[test]
fn events_for_every_change_and_never_values() {
    let home = home();
    let (store, events) = events_of(open(home.path()));
    let opts = scopes(&["demo/*"]);
    store
        .set("TOKEN", b"event-secret-1", &opts, IfExists::Fail)
        .expect("set");
    store.rotate("TOKEN", b"event-secret-2").expect("rotate");
    let lease = store
        .lease("TOKEN", "demo", "build", 5, HOUR)
        .expect("lease");
    let _ = store.lease("TOKEN", "other", "build", 5, HOUR);
    store.revoke_run(5).expect("revoke");
    store.rekey(KeySource::Home).expect("rekey");
    store.rm("TOKEN", false).expect("rm");

    let events = events.lock().expect("events").clone();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            SecretEvent::Set { .. } => "set",
            SecretEvent::Rotated { .. } => "rotated",
            SecretEvent::Removed { .. } => "removed",
            SecretEvent::Leased { .. } => "leased",
            SecretEvent::Denied { .. } => "denied",
            SecretEvent::Revoked { .. } => "revoked",
            SecretEvent::Expired { .. } => "expired",
            SecretEvent::Rekeyed { .. } => "rekeyed",
            SecretEvent::Imported { .. } => "imported",
        })
        .collect();
    assert_eq!(
        kinds,
        ["set", "rotated", "leased", "denied", "revoked", "rekeyed", "removed"]
    );
    assert!(matches!(
        &events[2],
        SecretEvent::Leased { lease: id, version: 2, run: 5, .. } if id == lease.id()
    ));
    let json = serde_json::to_string(&events).expect("json");
    assert!(json.contains(r#"{"event":"leased","lease":""#), "{json}");
    assert!(!json.contains("event-secret"), "{json}");
}

#[test]
fn concurrent_stores_share_one_home() {
    let home = home();
    let store = open(home.path());
    store
        .set("TOKEN", b"shared-value", &scopes(&["*/*"]), IfExists::Fail)
        .expect("set");
    let stores: Vec<Arc<SecretStore>> = (0..2).map(|_| Arc::new(open(home.path()))).collect();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let store = Arc::clone(&stores[i % 2]);
            std::thread::spawn(move || {
                for n in 0..10 {
                    let run = i64::try_from(i * 100 + n).expect("small");
                    let lease = store.lease("TOKEN", "p", "j", run, HOUR).expect("lease");
                    assert_eq!(lease.expose(), b"shared-value");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(
        store.leases(&LeaseFilter::default()).expect("leases").len(),
        40
    );
}

// ---- rekey ----

#[test]
fn rekey_rewraps_everything() {
    let home = home();
    let store = open(home.path());
    let opts = scopes(&["*/*"]);
    for (name, value) in [
        ("ONE", "value-one-1"),
        ("TWO", "value-two-2"),
        ("THREE", "value-three"),
    ] {
        store
            .set(name, value.as_bytes(), &opts, IfExists::Fail)
            .expect("set");
    }
    store.rotate("ONE", b"value-one-2").expect("rotate");
    let key_file = home.path().join("keys/secrets.key");
    let old_key = std::fs::read(&key_file).expect("key");
    let old_id = store.key_id();
    let old_wrapped: Vec<Vec<u8>> = {
        let conn = db(home.path());
        let mut stmt = conn
            .prepare("SELECT wrapped_dek FROM versions")
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<Vec<u8>>, _>>())
            .expect("wrapped keys");
        rows
    };
    assert_eq!(old_wrapped.len(), 4);

    let new_id = store.rekey(KeySource::Home).expect("rekey");
    assert_ne!(old_id, new_id);
    assert_eq!(store.key_id(), new_id);
    assert_ne!(
        std::fs::read(&key_file).expect("key"),
        old_key,
        "key file replaced"
    );
    assert_eq!(mode(&key_file), 0o600);
    assert!(!home.path().join("keys/secrets.key.next").exists());
    assert_eq!(lease_value(&store, "ONE", "p", "j"), b"value-one-2");
    let versions = store.versions("ONE").expect("versions");
    assert!(
        versions.iter().all(|v| v.key == new_id),
        "every version re-wrapped"
    );
    drop(store);

    // Everything opens with the new key after reopening...
    let store = open(home.path());
    assert_eq!(store.key_id(), new_id);
    for (name, value) in [
        ("ONE", "value-one-2"),
        ("TWO", "value-two-2"),
        ("THREE", "value-three"),
    ] {
        assert_eq!(lease_value(&store, name, "p", "j"), value.as_bytes());
    }
    drop(store);

    // ...and not with the old one.
    let old_file = home.path().join("old.key");
    write_key(&old_file, &old_key, 0o600);
    let err = SecretStore::open(home.path(), KeySource::File(old_file)).expect_err("old key");
    assert!(
        matches!(err, SecretsError::KeyMismatch { found, .. } if found == old_id),
        "{err}"
    );

    // Old wrapped keys do not linger in the database files (secure_delete
    // and the checkpoint after a rekey).
    for file in files_under(home.path()) {
        let bytes = std::fs::read(&file).expect("read");
        for wrapped in &old_wrapped {
            assert!(
                !contains(&bytes, wrapped),
                "old wrapped key in {}",
                file.display()
            );
        }
    }
    let rows: i64 = db(home.path())
        .query_row(
            "SELECT count(*) FROM versions WHERE kek_id = ?1",
            [&old_id.as_bytes()[..]],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(rows, 0);
}

#[test]
fn rekey_to_an_operator_key_and_back() {
    let home = home();
    let store = open(home.path());
    store
        .set("TOKEN", b"token-value", &scopes(&["*/*"]), IfExists::Fail)
        .expect("set");
    let operator = home.path().join("operator.key");
    write_key(&operator, &[9; 32], 0o600);
    let id = store
        .rekey(KeySource::File(operator.clone()))
        .expect("rekey");
    assert_eq!(store.key_path(), operator);
    assert!(matches!(
        store.rekey(KeySource::File(operator.clone())),
        Err(SecretsError::SameKey { .. })
    ));
    drop(store);
    assert!(
        SecretStore::open(home.path(), KeySource::Home).is_err(),
        "old home key no longer opens"
    );
    let store = SecretStore::open(home.path(), KeySource::File(operator)).expect("open");
    assert_eq!(store.key_id(), id);
    assert_eq!(lease_value(&store, "TOKEN", "p", "j"), b"token-value");

    // Back to a fresh home key.
    let back = store.rekey(KeySource::Home).expect("rekey home");
    drop(store);
    let store = open(home.path());
    assert_eq!(store.key_id(), back);
    assert_eq!(lease_value(&store, "TOKEN", "p", "j"), b"token-value");
}

#[test]
fn another_process_rekeying_is_picked_up() {
    let home = home();
    let first = open(home.path());
    first
        .set("TOKEN", b"token-value", &scopes(&["*/*"]), IfExists::Fail)
        .expect("set");
    let second = open(home.path());
    let new_id = second.rekey(KeySource::Home).expect("rekey");
    // `first` still holds the old key; it reloads and carries on.
    assert_eq!(lease_value(&first, "TOKEN", "p", "j"), b"token-value");
    assert_eq!(first.key_id(), new_id);
    first
        .rotate("TOKEN", b"token-value-2")
        .expect("rotate after reload");
    assert_eq!(lease_value(&second, "TOKEN", "p", "j"), b"token-value-2");
    let versions = second.versions("TOKEN").expect("versions");
    assert!(
        versions.iter().all(|v| v.key == new_id),
        "no version under a stale key"
    );
}

#[test]
fn simulated_crash_states_recover() {
    // The on-disk states a crash in the middle of a rekey leaves, built by
    // hand from a finished rekey (see also the unit tests in store.rs).
    let home = home();
    let store = open(home.path());
    store
        .set("TOKEN", b"token-value", &scopes(&["*/*"]), IfExists::Fail)
        .expect("set");
    let keys = home.path().join("keys");
    let old_key = std::fs::read(keys.join("secrets.key")).expect("key");
    let new_id = store.rekey(KeySource::Home).expect("rekey");
    drop(store);
    let new_key = std::fs::read(keys.join("secrets.key")).expect("key");

    // Committed, not yet swapped: secrets.key old, .next new.
    write_key(&keys.join("secrets.key.next"), &new_key, 0o600);
    write_key(&keys.join("secrets.key"), &old_key, 0o600);
    let store = open(home.path());
    assert_eq!(store.key_id(), new_id);
    assert_eq!(lease_value(&store, "TOKEN", "p", "j"), b"token-value");
    assert_eq!(
        std::fs::read(keys.join("secrets.key")).expect("key"),
        new_key
    );
    assert!(!keys.join("secrets.key.next").exists());
    drop(store);

    // Not committed: secrets.key matches, a stray .next is left.
    write_key(&keys.join("secrets.key.next"), &old_key, 0o600);
    let store = open(home.path());
    assert_eq!(store.key_id(), new_id);
    assert!(
        !keys.join("secrets.key.next").exists(),
        "stray .next removed"
    );
}

// ---- plaintext never on disk ----

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_plaintext_in_any_file() {
    let home = home();
    let store = open(home.path());
    let values: Vec<Vec<u8>> = (0..8)
        .map(|i| format!("PLAINTEXT-CANARY-{i}-{}", "x".repeat(i * 50)).into_bytes())
        .collect();
    let opts = scopes(&["*/*"]);
    for (i, value) in values.iter().enumerate() {
        let name = format!("SECRET_{i}");
        store.set(&name, value, &opts, IfExists::Fail).expect("set");
        assert_eq!(&lease_value(&store, &name, "p", "j"), value);
    }
    store.rotate("SECRET_0", &values[1]).expect("rotate");
    store.rekey(KeySource::Home).expect("rekey");
    let check = |when: &str| {
        let files = files_under(home.path());
        assert!(files.iter().any(|f| f.ends_with("secrets.db-wal")) || when == "closed");
        for file in files {
            let bytes = std::fs::read(&file).expect("read");
            for value in &values {
                // Any 16-byte window of a value would do; check the prefix
                // that is unique to each value and the whole value.
                assert!(
                    !contains(&bytes, value),
                    "{when}: value found in {}",
                    file.display()
                );
                assert!(
                    !contains(&bytes, &value[..18]),
                    "{when}: prefix in {}",
                    file.display()
                );
            }
        }
    };
    check("open");
    drop(store);
    check("closed");
}

// ---- age interop ----

/// The `age` and `age-keygen` binaries, or `None` (and a message) if absent.
fn age_tools() -> Option<()> {
    let found = ["age", "age-keygen"].iter().all(|tool| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        eprintln!("SKIPPED: the `age` command-line tool is not installed (Debian package `age`)");
    }
    found.then_some(())
}

fn run(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Generates an identity with `age-keygen` and returns (identity file,
/// recipient).
fn age_identity(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    run(std::process::Command::new("age-keygen").arg("-o").arg(&key));
    let out = run(std::process::Command::new("age-keygen").arg("-y").arg(&key));
    let recipient = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (key, recipient)
}

fn age_encrypt(dir: &Path, recipient: &str, plain: &str, armor: bool, out: &str) -> PathBuf {
    let plain_file = dir.join(format!("{out}.env"));
    std::fs::write(&plain_file, plain).expect("write plaintext");
    let output = dir.join(out);
    let mut cmd = std::process::Command::new("age");
    cmd.arg("-r").arg(recipient).arg("-o").arg(&output);
    if armor {
        cmd.arg("-a");
    }
    run(cmd.arg(&plain_file));
    std::fs::remove_file(&plain_file).expect("rm plaintext");
    output
}

#[test]
fn age_import_interop() {
    if age_tools().is_none() {
        return;
    }
    let dir = home();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let home = dir.path().join("home");
    let (identity, recipient) = age_identity(&work, "key.txt");
    let plain = "# team secrets\n\nDEPLOY_TOKEN=dep-0123456789\nexport NPM_TOKEN = npm_abcdefghij\nQUOTED=\"  spaced value  \"\r\nSINGLE='a=b#c!d'\n";
    let file = age_encrypt(&work, &recipient, plain, false, "secrets.age");

    let (store, events) = events_of(open(&home));
    let opts = scopes(&["demo/*"]);
    let names = store.import_age(&file, &identity, &opts).expect("import");
    assert_eq!(names, ["DEPLOY_TOKEN", "NPM_TOKEN", "QUOTED", "SINGLE"]);
    for (name, value) in [
        ("DEPLOY_TOKEN", "dep-0123456789"),
        ("NPM_TOKEN", "npm_abcdefghij"),
        ("QUOTED", "  spaced value  "),
        ("SINGLE", "a=b#c!d"),
    ] {
        assert_eq!(
            lease_value(&store, name, "demo", "build"),
            value.as_bytes(),
            "{name}"
        );
    }
    assert!(matches!(
        store.lease("NPM_TOKEN", "other", "build", 1, HOUR),
        Err(LeaseError::OutOfScope { .. })
    ));

    // An armored file; an existing name gets a new version, keeps its scopes.
    let file2 = age_encrypt(
        &work,
        &recipient,
        "NPM_TOKEN=npm_rotated_99\nNEW_ONE=brand-new-1\n",
        true,
        "more.age",
    );
    let names = store
        .import_age(&file2, &identity, &scopes(&["*/*"]))
        .expect("import armored");
    assert_eq!(names, ["NPM_TOKEN", "NEW_ONE"]);
    let npm = store.info("NPM_TOKEN").expect("info");
    assert_eq!((npm.version, npm.scopes.len()), (2, 1));
    assert_eq!(npm.scopes[0].as_str(), "demo/*");
    assert_eq!(
        lease_value(&store, "NPM_TOKEN", "demo", "x"),
        b"npm_rotated_99"
    );
    assert_eq!(lease_value(&store, "NEW_ONE", "any", "x"), b"brand-new-1");
    let imported: Vec<_> = events
        .lock()
        .expect("events")
        .iter()
        .filter_map(|e| match e {
            SecretEvent::Imported { secrets, .. } => Some(secrets.len()),
            _ => None,
        })
        .collect();
    assert_eq!(imported, [4, 2]);

    // The wrong identity is refused; nothing changes.
    let (other_identity, _) = age_identity(&work, "other.txt");
    let err = store
        .import_age(&file, &other_identity, &opts)
        .expect_err("wrong identity");
    assert!(matches!(err, SecretsError::AgeDecrypt { .. }), "{err}");

    // A bad line fails the whole import, naming the line, not the value.
    let bad = age_encrypt(
        &work,
        &recipient,
        "GOOD_ONE=good-value-1\nthis-line-is-wrong\n",
        false,
        "bad.age",
    );
    let err = store
        .import_age(&bad, &identity, &opts)
        .expect_err("bad line");
    assert!(
        matches!(err, SecretsError::ImportLine { line: 2, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("this-line-is-wrong"), "{err}");
    assert!(
        matches!(store.info("GOOD_ONE"), Err(SecretsError::Unknown { .. })),
        "all or nothing"
    );

    // A short value in the file is refused with the store's explanation.
    let short = age_encrypt(&work, &recipient, "TINY=abc\n", false, "short.age");
    let err = store
        .import_age(&short, &identity, &opts)
        .expect_err("short");
    assert!(matches!(err, SecretsError::ValueTooShort { .. }), "{err}");

    // Not an identity file.
    let err = store
        .import_age(&file, &file, &opts)
        .expect_err("not an identity file");
    assert!(matches!(err, SecretsError::Identity { .. }), "{err}");

    // No plaintext of the import reached the store's files.
    drop(store);
    for f in files_under(&home) {
        let bytes = std::fs::read(&f).expect("read");
        for value in [
            "dep-0123456789",
            "npm_abcdefghij",
            "npm_rotated_99",
            "spaced value",
        ] {
            assert!(
                !contains(&bytes, value.as_bytes()),
                "{value} in {}",
                f.display()
            );
        }
    }
}

#[test]
fn lease_all_is_all_or_nothing_and_revoke_all_ends_them() {
    let home = home();
    let (store, events) = events_of(open(home.path()));
    store
        .set("A_TOKEN", b"aaaaaaaa", &scopes(&["demo/*"]), IfExists::Fail)
        .expect("set");
    store
        .set(
            "B_TOKEN",
            b"bbbbbbbb",
            &scopes(&["other/*"]),
            IfExists::Fail,
        )
        .expect("set");
    events.lock().expect("events").clear();

    // B is out of scope: nothing is leased, not even A, and only the
    // denial is reported.
    let denied = store.lease_all(&["A_TOKEN", "B_TOKEN"], "demo", "build", 1, HOUR);
    assert!(
        matches!(denied, Err(LeaseError::OutOfScope { .. })),
        "{denied:?}"
    );
    assert!(store
        .leases(&LeaseFilter::default())
        .expect("leases")
        .is_empty());
    let seen = events.lock().expect("events").clone();
    assert!(
        matches!(seen.as_slice(), [SecretEvent::Denied { .. }]),
        "{seen:?}"
    );

    store
        .set("C_TOKEN", b"cccccccc", &scopes(&["demo/*"]), IfExists::Fail)
        .expect("set");
    let leases = store
        .lease_all(&["A_TOKEN", "C_TOKEN"], "demo", "build", 1, HOUR)
        .expect("lease all");
    assert_eq!(leases[0].expose(), b"aaaaaaaa");
    assert_eq!(leases[1].expose(), b"cccccccc");
    let ids: Vec<&secrets::LeaseId> = leases.iter().map(|l| l.id()).collect();
    assert_eq!(store.revoke_all(&ids).expect("revoke all"), 2);
    assert_eq!(store.revoke_all(&ids).expect("again"), 0);
    assert!(store
        .leases(&LeaseFilter::default())
        .expect("leases")
        .iter()
        .all(|l| l.state == LeaseState::Revoked));
}

/// Environment variable naming the home a child test process writes to.
const CHILD_HOME: &str = "AIRLOCK_SECRETS_TEST_CHILD_HOME";
/// The child's number, which names the secret it sets.
const CHILD_NUMBER: &str = "AIRLOCK_SECRETS_TEST_CHILD_NUMBER";

/// Not a test of its own: the body of the child processes of
/// `concurrent_processes_share_a_new_store`; does nothing unless
/// `CHILD_HOME` is set.
#[test]
fn child_process_sets_a_secret() {
    let (Some(home), Some(n)) = (
        std::env::var_os(CHILD_HOME),
        std::env::var(CHILD_NUMBER).ok(),
    ) else {
        return;
    };
    let store = SecretStore::open(Path::new(&home), KeySource::Home).expect("child open");
    store
        .set(
            &format!("TOKEN_{n}"),
            format!("value-of-child-{n}").as_bytes(),
            &scopes(&["p/*"]),
            IfExists::Fail,
        )
        .expect("child set");
}

/// Processes that open one new home at the same moment agree on one key
/// and one database: each one's secret opens afterwards. (Two used to
/// fail with "database is locked" when both switched the new database to
/// WAL; two keys would leave some secrets sealed with a key no one has.)
#[test]
fn concurrent_processes_share_a_new_store() {
    const CHILDREN: usize = 4;
    for _ in 0..5 {
        let dir = home();
        let exe = std::env::current_exe().expect("test binary");
        let children: Vec<_> = (0..CHILDREN)
            .map(|n| {
                std::process::Command::new(&exe)
                    .args(["--exact", "child_process_sets_a_secret", "--test-threads=1"])
                    .env(CHILD_HOME, dir.path())
                    .env(CHILD_NUMBER, n.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn child")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait child");
            assert!(
                out.status.success(),
                "child failed: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let store = open(dir.path());
        assert_eq!(store.list().expect("list").len(), CHILDREN);
        for n in 0..CHILDREN {
            assert_eq!(
                lease_value(&store, &format!("TOKEN_{n}"), "p", "j"),
                format!("value-of-child-{n}").as_bytes()
            );
        }
    }
}
