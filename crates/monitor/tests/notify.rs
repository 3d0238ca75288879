//! Alert delivery against a real HTTP receiver on 127.0.0.1 and real hook
//! processes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use monitor::notify::{
    verify, Alert, CommandHook, Notifier, NotifyError, Outcome, Retry, Target, Webhook, WebhookKey,
};
use sha2::Sha256;

const KEY: &[u8] = b"a-webhook-key-of-32-bytes-length";

fn alert(rule: &str) -> Alert {
    Alert {
        version: Alert::VERSION,
        run: 42,
        pipeline: "release".into(),
        job: "build".into(),
        rule: rule.into(),
        severity: "high".into(),
        description: "a job ran netcat".into(),
        action: "alert".into(),
        summary: "path=/usr/bin/nc argv=nc -l 4444".into(),
        observation: serde_json::json!({"path": "/usr/bin/nc", "argv": "nc -l 4444", "pid": 7}),
        at: "2025-01-02T03:04:05Z".into(),
    }
}

fn key() -> WebhookKey {
    WebhookKey::from_bytes(KEY.to_vec())
}

/// Fast retries, so tests that retry do not wait long.
fn quick() -> Retry {
    Retry {
        attempts: 4,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
    }
}

// ---- a minimal HTTP receiver ----

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("receiver lock").clone()
    }
}

/// A receiver answering its n-th request with `statuses[n]` (the last one
/// from then on); `None` answers nothing and holds the connection.
fn receiver(statuses: Vec<Option<u16>>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let url = format!("http://{}/hook", listener.local_addr().expect("local addr"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    thread::spawn(move || {
        let mut held = Vec::new();
        for (n, stream) in listener.incoming().take(32).enumerate() {
            let Ok(mut stream) = stream else { continue };
            let Some(request) = read_request(&mut stream) else {
                continue;
            };
            seen.lock().expect("receiver lock").push(request);
            match statuses[n.min(statuses.len() - 1)] {
                Some(status) => {
                    let location = if (300..400).contains(&status) {
                        "Location: /elsewhere\r\n"
                    } else {
                        ""
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\n{location}Content-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
                None => held.push(stream),
            }
        }
    });
    Receiver { url, requests }
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head) = parsed.parse(&buf).ok()? {
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let method = parsed.method?.to_string();
            let path = parsed.path?.to_string();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < head + len {
                let n = stream.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(Request {
                method,
                path,
                headers,
                body: buf[head..head + len].to_vec(),
            });
        }
    }
}

/// The signature, computed here with the hmac crate rather than with
/// `monitor::notify::sign`.
fn independent_signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    listener.local_addr().expect("local addr").port()
}

// ---- webhook ----

#[test]
fn webhook_posts_signed_json() {
    let rx = receiver(vec![Some(200)]);
    let hook = Webhook::new(&rx.url, key()).expect("webhook");
    assert_eq!(hook.deliver(&alert("exec-netcat")).expect("delivered"), 1);

    let requests = rx.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("user-agent"),
        format!("airlock/{}", env!("CARGO_PKG_VERSION"))
    );
    let id = r.header("x-airlock-delivery");
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");

    let timestamp = r.header("x-airlock-timestamp");
    let sent: u64 = timestamp.parse().expect("unix seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(now.abs_diff(sent) < 60, "timestamp {sent}, now {now}");

    let signature = r.header("x-airlock-signature");
    assert!(verify(KEY, timestamp, &r.body, signature));
    assert_eq!(signature, independent_signature(KEY, timestamp, &r.body));

    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("json body");
    assert_eq!(json["version"], 1);
    let got: Alert = serde_json::from_value(json).expect("an alert");
    assert_eq!(got, alert("exec-netcat"));
}

#[test]
fn verify_rejects_tampering() {
    let rx = receiver(vec![Some(200)]);
    Webhook::new(&rx.url, key())
        .expect("webhook")
        .deliver(&alert("exec-netcat"))
        .expect("delivered");
    let r = &rx.requests()[0];
    let timestamp = r.header("x-airlock-timestamp");
    let signature = r.header("x-airlock-signature");
    assert!(verify(KEY, timestamp, &r.body, signature));

    let tampered = String::from_utf8(r.body.clone())
        .expect("utf-8 body")
        .replace("\"action\":\"alert\"", "\"action\":\"kill\"");
    assert_ne!(tampered.as_bytes(), &r.body[..]);
    assert!(!verify(KEY, timestamp, tampered.as_bytes(), signature));

    let later = (timestamp.parse::<u64>().expect("unix seconds") + 600).to_string();
    assert!(!verify(KEY, &later, &r.body, signature));
    assert!(!verify(
        b"another-key-of-32-bytes-length!!",
        timestamp,
        &r.body,
        signature
    ));
    assert!(!verify(KEY, timestamp, &r.body, ""));
}

#[test]
fn webhook_retries_server_errors_with_one_delivery_id() {
    let rx = receiver(vec![Some(500), Some(500), Some(200)]);
    let hook = Webhook::new(&rx.url, key())
        .expect("webhook")
        .with_retry(quick());
    assert_eq!(hook.deliver(&alert("exec-netcat")).expect("delivered"), 3);

    let requests = rx.requests();
    assert_eq!(requests.len(), 3);
    let id = requests[0].header("x-airlock-delivery");
    for r in &requests {
        assert_eq!(r.header("x-airlock-delivery"), id);
        assert_eq!(r.body, requests[0].body);
        assert!(verify(
            KEY,
            r.header("x-airlock-timestamp"),
            &r.body,
            r.header("x-airlock-signature")
        ));
    }
}

#[test]
fn webhook_retries_429_and_408() {
    let rx = receiver(vec![Some(429), Some(408), Some(204)]);
    let hook = Webhook::new(&rx.url, key())
        .expect("webhook")
        .with_retry(quick());
    assert_eq!(hook.deliver(&alert("exec-netcat")).expect("delivered"), 3);
    assert_eq!(rx.requests().len(), 3);
}

#[test]
fn webhook_client_error_is_final() {
    let rx = receiver(vec![Some(400), Some(200)]);
    let hook = Webhook::new(&rx.url, key())
        .expect("webhook")
        .with_retry(quick());
    let err = hook
        .deliver(&alert("exec-netcat"))
        .expect_err("400 is final");
    assert!(
        matches!(
            err,
            NotifyError::Status {
                status: 400,
                attempt: 1,
                of: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&rx.url), "{message}");
    assert!(message.contains("400"), "{message}");
    assert!(!message.contains("a-webhook-key"), "{message}");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.requests().len(), 1);
}

#[test]
fn webhook_does_not_follow_redirects() {
    let rx = receiver(vec![Some(307), Some(200)]);
    let hook = Webhook::new(&rx.url, key())
        .expect("webhook")
        .with_retry(quick());
    let err = hook
        .deliver(&alert("exec-netcat"))
        .expect_err("a redirect is final");
    assert!(
        matches!(
            err,
            NotifyError::Status {
                status: 307,
                attempt: 1,
                ..
            }
        ),
        "{err:?}"
    );
    thread::sleep(Duration::from_millis(200));
    let requests = rx.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/hook");
}

#[test]
fn webhook_unreachable_fails_after_retries_in_time() {
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let hook = Webhook::new(&url, key()).expect("webhook");
    assert_eq!(hook.retry(), Retry::default());
    let started = Instant::now();
    let err = hook
        .deliver(&alert("exec-netcat"))
        .expect_err("nothing listens");
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            NotifyError::Transport {
                attempt: 4,
                of: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&url), "{err}");
    // Waits of 250 ms, 500 ms and 1 s between the four attempts.
    assert!(took >= Duration::from_millis(1750), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn webhook_attempt_times_out() {
    let rx = receiver(vec![None]);
    let hook = Webhook::new(&rx.url, key())
        .expect("webhook")
        .with_retry(Retry {
            attempts: 2,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            timeout: Duration::from_millis(300),
        });
    let started = Instant::now();
    let err = hook
        .deliver(&alert("exec-netcat"))
        .expect_err("the receiver never answers");
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            NotifyError::Transport {
                attempt: 2,
                of: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(rx.requests().len(), 2);
}

// ---- the key file ----

fn key_file(dir: &Path, contents: &[u8], mode: u32) -> std::path::PathBuf {
    let path = dir.join(format!("key-{mode:o}"));
    std::fs::write(&path, contents).expect("write key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[test]
fn key_file_must_be_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut contents = KEY.to_vec();
    contents.push(b'\n');
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
        let path = key_file(dir.path(), &contents, mode);
        let err = WebhookKey::from_file(&path).expect_err("open to others");
        assert!(matches!(err, NotifyError::KeyMode { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("{mode:04o}")), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
    }
    for mode in [0o600, 0o400] {
        let path = key_file(dir.path(), &contents, mode);
        let key = WebhookKey::from_file(&path).expect("private key file");
        assert!(!format!("{key:?}").contains("webhook-key"));

        // The trailing newline is not part of the key.
        let rx = receiver(vec![Some(200)]);
        Webhook::new(&rx.url, key)
            .expect("webhook")
            .deliver(&alert("exec-netcat"))
            .expect("delivered");
        let r = &rx.requests()[0];
        assert!(verify(
            KEY,
            r.header("x-airlock-timestamp"),
            &r.body,
            r.header("x-airlock-signature")
        ));
    }
}

#[test]
fn key_file_must_hold_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short = key_file(dir.path(), b"short\n", 0o600);
    let err = WebhookKey::from_file(&short).expect_err("too short");
    assert!(matches!(err, NotifyError::KeyInvalid { .. }), "{err:?}");
    assert!(!err.to_string().contains("short\n"));

    let long = key_file(dir.path(), &[b'k'; 5000], 0o400);
    let err = WebhookKey::from_file(&long).expect_err("too long");
    assert!(matches!(err, NotifyError::KeyInvalid { .. }), "{err:?}");

    let missing = dir.path().join("missing");
    let err = WebhookKey::from_file(&missing).expect_err("missing");
    assert!(matches!(err, NotifyError::KeyRead { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");

    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let err = WebhookKey::from_file(&sub).expect_err("a directory");
    assert!(matches!(err, NotifyError::KeyInvalid { .. }), "{err:?}");

    // A fifo is refused rather than waited on.
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let err = WebhookKey::from_file(&fifo).expect_err("a fifo");
    assert!(matches!(err, NotifyError::KeyInvalid { .. }), "{err:?}");
}

// ---- the command hook ----

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read hook output")
}

#[test]
fn hook_reads_the_alert_on_stdin_and_its_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stdin = dir.path().join("stdin");
    let env = dir.path().join("env");
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let hook = CommandHook::new(
        "sh",
        [
            "-c".as_ref(),
            "cat > \"$1\"; env > \"$2\"".as_ref(),
            "sh".as_ref(),
            stdin.as_os_str(),
            env.as_os_str(),
        ],
    )
    .with_base_env([
        ("PATH", path),
        ("HOME", "/nonexistent".into()),
        ("AIRLOCK_TEST_LEAK", "1".into()),
    ]);
    hook.deliver(&alert("exec-netcat")).expect("hook ran");

    let got: Alert = serde_json::from_str(&read(&stdin)).expect("alert json on stdin");
    assert_eq!(got, alert("exec-netcat"));

    let env = read(&env);
    for line in [
        "AIRLOCK_ALERT_RULE=exec-netcat",
        "AIRLOCK_ALERT_SEVERITY=high",
        "AIRLOCK_RUN=42",
        "AIRLOCK_JOB=build",
        "HOME=/nonexistent",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
    }
    assert!(!env.contains("AIRLOCK_TEST_LEAK"), "{env}");
}

#[test]
fn hook_does_not_inherit_the_runner_environment() {
    // A variable of this process's environment that is not to be passed
    // (under cargo there are many) stands for the runner's credentials;
    // the shell sets some itself.
    let own = ["PATH", "HOME", "LANG", "PWD", "OLDPWD", "SHLVL", "_"];
    let runner_only = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .find(|k| !own.contains(&k.as_str()) && !k.starts_with("AIRLOCK_"))
        .expect("a variable in the test's environment");
    let hook = CommandHook::new("sh", ["-c", "env > \"$1\"", "sh"]);
    let mut passed: Vec<String> = hook
        .command(&alert("exec-netcat"))
        .get_envs()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    passed.sort();
    for name in &passed {
        assert!(
            name.starts_with("AIRLOCK_") || ["PATH", "HOME", "LANG"].contains(&name.as_str()),
            "{name} passed"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let env = dir.path().join("env");
    let hook = CommandHook::new(
        "sh",
        [
            "-c".as_ref(),
            "env > \"$1\"".as_ref(),
            "sh".as_ref(),
            env.as_os_str(),
        ],
    );
    hook.deliver(&alert("exec-netcat")).expect("hook ran");
    let env = read(&env);
    assert!(
        !env.lines()
            .any(|l| l.starts_with(&format!("{runner_only}="))),
        "{runner_only} passed:\n{env}"
    );
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}

#[test]
fn hook_failure_is_reported_with_its_stderr() {
    let hook = CommandHook::new("sh", ["-c", "echo 'no pager configured' >&2; exit 3"]);
    let err = hook.deliver(&alert("exec-netcat")).expect_err("exit 3");
    assert!(matches!(err, NotifyError::HookExit { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("no pager configured"), "{message}");

    let missing = CommandHook::new("/nonexistent/airlock-hook", Vec::<String>::new());
    let err = missing
        .deliver(&alert("exec-netcat"))
        .expect_err("no such program");
    assert!(matches!(err, NotifyError::HookSpawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/airlock-hook"),
        "{err}"
    );
}

#[test]
fn hook_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let hook = CommandHook::new(
        "sh",
        [
            "-c".as_ref(),
            "sleep 30 & echo $! > \"$1\"; sleep 30".as_ref(),
            "sh".as_ref(),
            pid_file.as_os_str(),
        ],
    )
    .with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = hook.deliver(&alert("exec-netcat")).expect_err("timed out");
    let took = started.elapsed();
    assert!(matches!(err, NotifyError::HookTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("timeout"), "{err}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // The hook's background child was killed with it (it may linger as a
    // zombie until whoever adopted it reaps it).
    let pid = read(&pid_file).trim().to_string();
    let stat = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(s) if s.contains(") Z ") => break,
            Ok(s) => assert!(Instant::now() < deadline, "background child alive: {s}"),
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---- the notifier ----

#[test]
fn notifier_delivers_every_alert_to_every_target_in_order() {
    let rx = receiver(vec![Some(200)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    let targets = vec![
        Target::from(Webhook::new(&rx.url, key()).expect("webhook")),
        Target::from(CommandHook::new(
            "sh",
            [
                "-c".as_ref(),
                "echo \"$AIRLOCK_ALERT_RULE\" >> \"$1\"".as_ref(),
                "sh".as_ref(),
                rules.as_os_str(),
            ],
        )),
    ];
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let notifier = Notifier::builder(targets)
        .on_outcome(move |outcome| {
            if let Outcome::Delivered { target, rule, .. } = outcome {
                let kind = target.split(' ').next().unwrap_or("").to_string();
                log.lock().expect("log lock").push(format!("{kind} {rule}"));
            }
        })
        .start()
        .expect("notifier");
    for rule in ["r1", "r2", "r3"] {
        assert!(notifier.send(alert(rule)));
    }
    let report = notifier.finish(Duration::from_secs(20));
    assert_eq!(report.delivered, 6, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.dropped, 0);
    assert_eq!(report.unfinished, 0);

    assert_eq!(
        *seen.lock().expect("log lock"),
        [
            "webhook r1",
            "hook r1",
            "webhook r2",
            "hook r2",
            "webhook r3",
            "hook r3"
        ]
    );
    let posted: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| {
            let a: Alert = serde_json::from_slice(&r.body).expect("alert json");
            a.rule
        })
        .collect();
    assert_eq!(posted, ["r1", "r2", "r3"]);
    assert_eq!(read(&rules), "r1\nr2\nr3\n");
}

#[test]
fn notifier_reports_failed_deliveries() {
    let rx = receiver(vec![Some(400)]);
    let url = rx.url.clone();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&failures);
    let notifier = Notifier::builder(vec![Webhook::new(&rx.url, key()).expect("webhook").into()])
        .on_outcome(move |outcome| {
            if let Outcome::Failed(f) = outcome {
                log.lock().expect("log lock").push(f.error.to_string());
            }
        })
        .start()
        .expect("notifier");
    notifier.send(alert("exec-netcat"));
    let report = notifier.finish(Duration::from_secs(20));
    assert_eq!(report.delivered, 0);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let failure = &report.failed[0];
    assert_eq!(failure.target, format!("webhook {url}"));
    assert_eq!(failure.rule, "exec-netcat");
    assert_eq!(failure.run, 42);
    assert_eq!(failure.job, "build");
    assert!(
        matches!(failure.error, NotifyError::Status { status: 400, .. }),
        "{:?}",
        failure.error
    );
    assert_eq!(
        *failures.lock().expect("log lock"),
        [failure.error.to_string()]
    );
}

#[test]
fn notifier_drops_when_full_and_finish_keeps_its_deadline() {
    let slow = CommandHook::new("sh", ["-c", "sleep 5"]);
    let notifier = Notifier::builder(vec![slow.into()])
        .queue(4)
        .start()
        .expect("notifier");
    let queued = (0..10)
        .filter(|n| notifier.send(alert(&format!("r{n}"))))
        .count();
    // Four wait in the queue; the thread may have taken one already.
    assert!((4..=5).contains(&queued), "{queued} queued");

    let started = Instant::now();
    let report = notifier.finish(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(report.dropped, 10 - queued as u64);
    assert_eq!(report.unfinished, queued as u64);
    assert_eq!(report.delivered, 0);
}

#[test]
fn finish_returns_once_the_queue_is_drained() {
    let rx = receiver(vec![Some(200)]);
    let notifier = Notifier::start(vec![Webhook::new(&rx.url, key()).expect("webhook").into()])
        .expect("notifier");
    notifier.send(alert("exec-netcat"));
    let started = Instant::now();
    let report = notifier.finish(Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.delivered, 1);
    assert_eq!(report.unfinished, 0);
}
