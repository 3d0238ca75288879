//! What the end-to-end test binaries share: a fresh state directory per
//! test and the real `airlock` binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Fails, naming the file and the needle, if any file under `dir` holds
/// any of `needles` (the state directory: logs, database and its WAL, run
/// record, audit log, keys).
pub fn assert_no_file_holds<N: AsRef<[u8]>>(dir: &Path, needles: &[N]) {
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for needle in needles {
            let needle = needle.as_ref();
            assert!(
                !bytes.windows(needle.len()).any(|b| b == needle),
                "{} holds {:?}",
                f.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

/// A state directory and a scratch directory for pipeline files.
pub struct World {
    pub home: tempfile::TempDir,
    pub files: tempfile::TempDir,
}

pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl World {
    pub fn new() -> World {
        World {
            home: tempfile::tempdir().unwrap(),
            files: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes a pipeline file and returns its path.
    pub fn pipeline(&self, name: &str, text: &str) -> PathBuf {
        let path = self.files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn airlock(&self, args: &[&str]) -> Ran {
        let out = self.command(args).output().unwrap();
        ran(out)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--home").arg(self.home.path()).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run_json(&self, file: &Path, extra: &[&str]) -> (Ran, Value) {
        let mut args = vec!["run", file.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let r = self.airlock(&args);
        let doc = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", r.stdout, r.stderr));
        (r, doc)
    }

    pub fn show(&self, run: &str) -> Value {
        let r = self.airlock(&["runs", "show", run, "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }
}

pub fn ran(out: Output) -> Ran {
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn job<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("no job {id} in {doc}"))
}

/// Stores a secret through `airlock secrets set NAME --scope PATTERN`
/// (value on stdin), and checks the command never echoes it.
pub fn set_secret(w: &World, name: &str, value: &str, scope: &str) {
    secrets_set(w, &[name, "--scope", scope], value);
}

/// Runs `airlock secrets set ARGS...` with `value` on stdin; checks it
/// succeeds and never echoes the value.
pub fn secrets_set(w: &World, args: &[&str], value: &str) {
    use std::io::Write as _;
    let mut all = vec!["secrets", "set"];
    all.extend_from_slice(args);
    let mut child = w
        .command(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let r = ran(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains(value) && !r.stderr.contains(value));
}

/// An HTTP server on 127.0.0.1 that answers every request with
/// `upstream says hi: PATH`, one connection per thread.
pub fn upstream() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                // The rest of the head.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split(' ').nth(1).unwrap_or("?").to_string();
                let body = format!("upstream says hi: {path}");
                let mut conn = &conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}
