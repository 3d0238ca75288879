//! Opening a log from the last checkpoint's `resume` cache, and falling
//! back to reading every entry when the cache does not check out.

use std::path::Path;

use audit::log::{CHECKPOINTS_FILE, ENTRIES_FILE};
use audit::{verify, AuditKey, AuditLog};
use serde_json::{json, Value};

fn append_and_close(dir: &Path, key: &AuditKey, from: u64, n: u64) {
    let (log, recovery) = AuditLog::open(dir, key.clone()).expect("open");
    assert!(recovery.is_none(), "{recovery:?}");
    assert_eq!(log.size().expect("size"), from);
    for i in from..from + n {
        let range = log
            .append(vec![json!({"kind": "test", "n": i})])
            .expect("append");
        assert_eq!(range, i..i + 1);
    }
    log.checkpoint().expect("checkpoint");
}

/// The `resume` field of the last checkpoint line.
fn last_resume(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join(CHECKPOINTS_FILE)).expect("read");
    let last: Value = serde_json::from_str(text.lines().last().expect("a line")).expect("json");
    last["resume"].clone()
}

#[test]
fn reopening_resumes_where_the_last_checkpoint_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = AuditKey::generate("test.audit/resume").expect("key");
    append_and_close(dir.path(), &key, 0, 37);
    let resume = last_resume(dir.path());
    let len = std::fs::metadata(dir.path().join(ENTRIES_FILE))
        .expect("stat")
        .len();
    assert_eq!(resume["offset"], len, "{resume}");
    // 37 = 0b100101: one subtree root per set bit.
    assert_eq!(resume["frontier"].as_array().expect("array").len(), 3);
    append_and_close(dir.path(), &key, 37, 5);
    let report = verify(dir.path(), &key.verifier()).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.entries, 42);
}

#[test]
fn a_cache_that_does_not_match_the_signed_note_is_not_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = AuditKey::generate("test.audit/resume").expect("key");
    append_and_close(dir.path(), &key, 0, 20);
    // A wrong frontier, and an offset in the middle of a line: the next
    // open must ignore both and rebuild the state from the entries, or the
    // new checkpoints would sign a wrong root.
    let path = dir.path().join(CHECKPOINTS_FILE);
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut last: Value = serde_json::from_str(lines.last().expect("line")).expect("json");
    last["resume"]["frontier"][0] = Value::String("00".repeat(32));
    last["resume"]["offset"] = json!(last["resume"]["offset"].as_u64().expect("offset") - 3);
    *lines.last_mut().expect("line") = last.to_string();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    append_and_close(dir.path(), &key, 20, 4);
    let report = verify(dir.path(), &key.verifier()).expect("verify");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.entries, 24);
}
