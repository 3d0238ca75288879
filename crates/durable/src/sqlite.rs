//! SQLite settings shared by the crates that keep a database (`state`,
//! `secrets`).

use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

/// How long [`use_wal`] sleeps before it looks again.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Puts the database of `conn` in WAL mode and returns the journal mode in
/// effect afterwards: `"wal"`, or what SQLite kept if it refused (a file
/// system without shared memory, for one).
///
/// WAL is persistent: a database already in it is left alone. Otherwise the
/// switch must upgrade a read lock to a write lock, and SQLite answers such an
/// upgrade with `SQLITE_BUSY` at once, without waiting in the busy handler
/// (waiting could deadlock two connections that each hold a read lock). Two
/// processes that open a new database at the same moment both try the
/// switch, so one of them would fail. Here it waits, up to `wait`, and looks
/// again: by then the other has usually made the switch.
pub fn use_wal(conn: &Connection, wait: Duration) -> rusqlite::Result<String> {
    let deadline = Instant::now() + wait;
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(mode);
        }
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                thread::sleep(RETRY_PAUSE);
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_is_switched_and_an_old_one_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let conn = Connection::open(&path).expect("open");
        assert_eq!(use_wal(&conn, Duration::ZERO).expect("switch"), "wal");
        drop(conn);
        let conn = Connection::open(&path).expect("reopen");
        assert_eq!(use_wal(&conn, Duration::ZERO).expect("again"), "wal");
    }

    #[test]
    fn a_switch_waits_for_another_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let writer = Connection::open(&path).expect("writer");
        writer.execute_batch("CREATE TABLE t (x)").expect("create");
        let switcher = Connection::open(&path).expect("switcher");
        switcher
            .busy_timeout(Duration::from_secs(60))
            .expect("busy timeout");
        // The writer holds the write lock, as another process's switch
        // would. SQLite does not wait for it in the busy handler, however
        // long the timeout: the switch fails at once.
        writer.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let busy = use_wal(&switcher, Duration::ZERO).expect_err("locked");
        assert_eq!(busy.sqlite_error_code(), Some(ErrorCode::DatabaseBusy));
        // use_wal waits for it instead.
        thread::scope(|scope| {
            scope.spawn(move || {
                thread::sleep(Duration::from_millis(50));
                writer.execute_batch("COMMIT").expect("unlock");
            });
            let mode = use_wal(&switcher, Duration::from_secs(60)).expect("switch");
            assert_eq!(mode, "wal");
        });
    }
}
