//! Upstream and load generator for the egress proxy benchmark
//! (`benches/egress.sh`): the same loads, on loopback, directly and through
//! each proxy named, interleaved so that a disturbance hits all of them.
//!
//! ```text
//! egress_load upstream LISTEN_ADDR [--close]
//! egress_load measure --upstream ADDR [--upstream-pid PID]
//!             [--proxy NAME=ADDR[,PID]]... [--subject airlock] [--peer tinyproxy]
//!             [--bytes 1073741824] [--runs 5] [--seconds 5] [--rounds 3]
//!             [--concurrency 16] [--samples 2000] [--gap-us 0]
//!             [--parts bulk,rps,latency,tunnel]
//!             [--out DIR]
//! ```
//!
//! `upstream` serves HTTP/1.1 on one current-thread tokio runtime: any
//! request for `/bytes/N` is answered with N zero bytes, anything else with
//! a 2-byte body, with a `Content-Length`. Like any HTTP/1.1 server it
//! keeps the connection for the next request unless the request says
//! `Connection: close` (then the response says it too, and the server
//! closes); with `--close` it closes after every response, as servers that
//! refuse persistent connections do.
//!
//! `measure` runs three parts against each target (`direct`, then every
//! `--proxy`), round-robin:
//!
//! - `bulk`: CONNECT to the upstream (directly: just connect), `200`, then
//!   `GET /bytes/N` and read the N bytes; `--runs` times. Throughput is N
//!   over the time from `connect` to the last byte.
//! - `rps`: `--concurrency` tasks (one thread, tokio) each send a small
//!   absolute-URI GET (directly: origin-form) on a new connection and read
//!   the response to the close, again and again for `--seconds`;
//!   `--rounds` rounds. Only complete `200` responses count.
//! - `latency`: sequential small GETs on new connections (blocking sockets,
//!   `TCP_NODELAY`), `--samples` per target, interleaved sample by sample
//!   in a shuffled order (fixed seed): a proxy is still closing its
//!   connections when the client has its answer, and that work lands in
//!   the next target's sample, so no target may always follow the same
//!   one. `--gap-us` pauses before each sample (the CPUs then cool down
//!   between samples and every figure rises). Each sample is the time
//!   from before `connect` to the first response byte.
//! - `tunnel`: the same samples, but through each proxy the GET goes in a
//!   CONNECT tunnel, sent once the `200` arrives (as a client starting TLS
//!   would); direct is the plain GET again. So the added time is a
//!   tunnel's: a round trip more for the `CONNECT`, and an upstream
//!   connection opened per tunnel (a tunnel's connection is never kept).
//!
//! For every part it also reads the CPU time (user + system, from
//! `/proc/PID/stat`) that the proxy, the upstream and this process used,
//! so that contention on a small machine can be seen, and the CPU time the
//! rest of the machine used meanwhile ("other work", in % of one CPU,
//! from `/proc/stat`). It prints a summary (the goals: `--subject` against
//! `--peer`, ≥ 2× throughput and requests/s, p50 added ≤ 100 µs) and,
//! with `--out`, writes `bulk.csv`, `rps.csv`, `latency.csv`, `tunnel.csv` and
//! `results.json` there.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Chunk size of the upstream's writes and of the client's reads.
const CHUNK: usize = 1 << 20;
static ZEROS: [u8; CHUNK] = [0; CHUNK];
/// The largest head either side reads.
const MAX_HEAD: usize = 16 * 1024;
/// A request (or tunnel) that takes longer than this has failed.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("upstream") => {
            let addr = args
                .next()
                .expect("usage: egress_load upstream LISTEN_ADDR [--close]");
            upstream(&addr, args.next().as_deref() == Some("--close"));
        }
        Some("measure") => measure(&parse_args(args)),
        _ => {
            eprintln!("usage: egress_load upstream ADDR | egress_load measure --upstream ADDR ...");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------- upstream

fn upstream(addr: &str, always_close: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        eprintln!("egress_load: upstream on {addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(stream, always_close));
        }
    });
}

/// Answers requests on one connection until one asks to close (or
/// `always_close`), the client closes, or a request is malformed.
async fn serve(mut stream: tokio::net::TcpStream, always_close: bool) {
    use tokio::io::AsyncReadExt;
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let end = loop {
            if let Some(end) = find_end(&buf[..filled]) {
                break end;
            }
            if filled == buf.len() {
                return;
            }
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let close = always_close
            || head.contains("\r\nconnection: close\r\n")
            || head.lines().next().is_some_and(|l| l.ends_with("http/1.0"));
        if !answer(&mut stream, &buf[..end], close).await || close {
            return;
        }
        buf.copy_within(end..filled, 0);
        filled -= end;
    }
}

/// Answers one request head; false if the connection broke.
async fn answer(stream: &mut tokio::net::TcpStream, head: &[u8], close: bool) -> bool {
    use tokio::io::AsyncWriteExt;
    let connection = if close { "Connection: close\r\n" } else { "" };
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let path = std::str::from_utf8(line)
        .unwrap_or_default()
        .split(' ')
        .nth(1)
        .unwrap_or_default();
    let bytes = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok());
    let Some(mut left) = bytes else {
        let small = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{connection}\r\nok");
        return stream.write_all(small.as_bytes()).await.is_ok();
    };
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {left}\r\n{connection}\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        if stream.write_all(&ZEROS[..n]).await.is_err() {
            return false;
        }
        left -= n as u64;
    }
    true
}

/// The end of the head (`\r\n\r\n`) in `buf`, if there.
fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

// ---------------------------------------------------------------- measure

struct Args {
    upstream: SocketAddr,
    upstream_pid: Option<u32>,
    targets: Vec<Target>,
    subject: String,
    peer: String,
    bytes: u64,
    runs: usize,
    seconds: f64,
    rounds: usize,
    concurrency: usize,
    samples: usize,
    gap: Duration,
    parts: Vec<String>,
    out: Option<PathBuf>,
}

/// Where requests go: straight to the upstream, or through a proxy.
#[derive(Clone)]
struct Target {
    name: String,
    proxy: Option<SocketAddr>,
    pid: Option<u32>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Args {
    let mut args = Args {
        upstream: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream_pid: None,
        targets: vec![Target {
            name: "direct".to_owned(),
            proxy: None,
            pid: None,
        }],
        subject: "airlock".to_owned(),
        peer: "tinyproxy".to_owned(),
        bytes: 1 << 30,
        runs: 5,
        seconds: 5.0,
        rounds: 3,
        concurrency: 16,
        samples: 2000,
        gap: Duration::ZERO,
        parts: ["bulk", "rps", "latency", "tunnel"]
            .map(String::from)
            .to_vec(),
        out: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let num = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{flag}: not a number"))
        };
        let count = || usize::try_from(num()).expect("count fits usize");
        match flag.as_str() {
            "--upstream" => args.upstream = value.parse().expect("--upstream: IP:PORT"),
            "--upstream-pid" => args.upstream_pid = Some(value.parse().expect("pid")),
            "--proxy" => {
                let (name, rest) = value.split_once('=').expect("--proxy NAME=ADDR[,PID]");
                let (addr, pid) = match rest.split_once(',') {
                    Some((addr, pid)) => (addr, Some(pid.parse().expect("pid"))),
                    None => (rest, None),
                };
                args.targets.push(Target {
                    name: name.to_owned(),
                    proxy: Some(addr.parse().expect("--proxy: IP:PORT")),
                    pid,
                });
            }
            "--subject" => args.subject.clone_from(&value),
            "--peer" => args.peer.clone_from(&value),
            "--bytes" => args.bytes = num(),
            "--runs" => args.runs = count(),
            "--seconds" => args.seconds = value.parse().expect("--seconds: a number"),
            "--rounds" => args.rounds = count(),
            "--concurrency" => args.concurrency = count(),
            "--samples" => args.samples = count(),
            "--gap-us" => args.gap = Duration::from_micros(num()),
            "--parts" => args.parts = value.split(',').map(String::from).collect(),
            "--out" => args.out = Some(PathBuf::from(&value)),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// CPU seconds (user + system) process `pid` has used so far, from
/// `/proc/PID/stat`; 0 if it cannot be read.
fn cpu_secs(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // After the command name in parentheses; utime and stime are fields 14
    // and 15 of the whole line, in clock ticks.
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let per_sec = f64::from(u32::try_from(rustix::param::clock_ticks_per_second()).unwrap_or(100));
    ticks(11)
        .zip(ticks(12))
        .map_or(0.0, |(u, s)| (u + s) / per_sec)
}

/// CPU seconds the whole machine has been busy (all CPUs, from the first
/// line of `/proc/stat`: everything but idle and iowait).
fn machine_busy_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    // guest and guest_nice (9th, 10th) are already counted in user.
    let total: f64 = ticks.iter().take(8).sum();
    let per_sec = f64::from(u32::try_from(rustix::param::clock_ticks_per_second()).unwrap_or(100));
    (total - idle) / per_sec
}

/// CPU seconds of (proxy, upstream, this process, the whole machine) at
/// one moment.
#[derive(Clone, Copy, Default)]
struct Cpu {
    proxy: f64,
    upstream: f64,
    client: f64,
    machine: f64,
}

impl Cpu {
    fn now(target: &Target, args: &Args) -> Cpu {
        Cpu {
            proxy: target.pid.map_or(0.0, |p| cpu_secs(Some(p))),
            upstream: args.upstream_pid.map_or(0.0, |p| cpu_secs(Some(p))),
            client: cpu_secs(None),
            machine: machine_busy_secs(),
        }
    }

    fn add_since(&mut self, start: Cpu, end: Cpu) {
        self.proxy += end.proxy - start.proxy;
        self.upstream += end.upstream - start.upstream;
        self.client += end.client - start.client;
        self.machine += end.machine - start.machine;
    }

    /// CPU seconds of other work on the machine meanwhile.
    fn other(&self) -> f64 {
        (self.machine - self.proxy - self.upstream - self.client).max(0.0)
    }

    fn json(&self, wall: f64) -> Value {
        let pct = |s: f64| if wall > 0.0 { 100.0 * s / wall } else { 0.0 };
        json!({
            "wall_s": wall,
            "proxy_cpu_s": self.proxy, "proxy_cpu_pct": pct(self.proxy),
            "upstream_cpu_s": self.upstream, "upstream_cpu_pct": pct(self.upstream),
            "client_cpu_s": self.client, "client_cpu_pct": pct(self.client),
            "other_cpu_s": self.other(), "other_cpu_pct": pct(self.other()),
        })
    }
}

fn measure(args: &Args) {
    let part = |name: &str| args.parts.iter().any(|p| p == name);
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).expect("create --out");
    }
    // One request of each kind per target first: a proxy that refuses or
    // fails stops the run here rather than producing rates of errors.
    for t in &args.targets {
        let us =
            small_request(t, args.upstream, false).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        let got =
            bulk_once(t, args.upstream, 1 << 20).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        eprintln!(
            "check {}: small request {us:.0} µs, 1 MiB via CONNECT {got:.0} ms",
            t.name
        );
    }
    let mut results = serde_json::Map::new();
    let mut summary = String::new();
    summary += &format!(
        "egress proxy benchmark: upstream {}, {} CPUs, targets {}\n",
        args.upstream,
        std::thread::available_parallelism().map_or(0, usize::from),
        args.targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if part("bulk") {
        let (json, text) = bulk(args);
        results.insert("bulk".to_owned(), json);
        summary += &text;
    }
    if part("rps") {
        let (json, text) = rps(args);
        results.insert("rps".to_owned(), json);
        summary += &text;
    }
    if part("latency") {
        let (json, text) = latency(args, false);
        results.insert("latency".to_owned(), json);
        summary += &text;
    }
    if part("tunnel") {
        let (json, text) = latency(args, true);
        results.insert("tunnel".to_owned(), json);
        summary += &text;
    }
    summary += &goals(args, &results);
    print!("{summary}");
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&Value::Object(results)).expect("json");
        std::fs::write(out.join("results.json"), text + "\n").expect("write results.json");
    }
}

fn write_csv(args: &Args, name: &str, text: &str) {
    if let Some(out) = &args.out {
        std::fs::write(out.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
}

/// Connects to the target's proxy, or straight to the upstream.
fn connect(t: &Target, upstream: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(t.proxy.unwrap_or(upstream))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Reads a response head; returns the status code and how many bytes of
/// the body (or tunnel) came with it.
fn read_head(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<(u16, usize)> {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..MAX_HEAD])?;
        if n == 0 {
            return Err(std::io::Error::other("closed before a response head"));
        }
        filled += n;
        if let Some(end) = find_end(&buf[..filled]) {
            let status = std::str::from_utf8(&buf[..end])
                .ok()
                .and_then(|h| h.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Ok((status, filled - end));
        }
        if filled == MAX_HEAD {
            return Err(std::io::Error::other("response head too large"));
        }
    }
}

/// One transfer of `bytes` through CONNECT; returns milliseconds.
fn bulk_once(t: &Target, upstream: SocketAddr, bytes: u64) -> std::io::Result<f64> {
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let mut stream = connect(t, upstream)?;
    if t.proxy.is_some() {
        let connect = format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n");
        stream.write_all(connect.as_bytes())?;
        let (status, extra) = read_head(&mut stream, &mut buf)?;
        if status != 200 || extra != 0 {
            return Err(std::io::Error::other(format!("CONNECT answered {status}")));
        }
    }
    let get =
        format!("GET /bytes/{bytes} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n");
    stream.write_all(get.as_bytes())?;
    let (status, extra) = read_head(&mut stream, &mut buf)?;
    if status != 200 {
        return Err(std::io::Error::other(format!("GET answered {status}")));
    }
    let mut got = extra as u64;
    loop {
        match stream.read(&mut buf)? {
            0 => break,
            n => got += n as u64,
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if got != bytes {
        return Err(std::io::Error::other(format!("got {got} of {bytes} bytes")));
    }
    Ok(ms)
}

/// The small request, as the target needs it.
fn small_head(t: &Target, upstream: SocketAddr) -> String {
    match t.proxy {
        Some(_) => format!(
            "GET http://{upstream}/small HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n"
        ),
        None => format!("GET /small HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n"),
    }
}

/// One small request on a new connection; returns µs from before
/// `connect` to the first response byte. Reads the response to the close.
/// The small request on a new connection; returns the microseconds from
/// before `connect` to the first response byte. With `tunnel`, through a
/// proxy it goes in a CONNECT tunnel, sent once the `200` arrives (as a
/// client starting TLS would).
fn small_request(t: &Target, upstream: SocketAddr, tunnel: bool) -> std::io::Result<f64> {
    let mut head = small_head(t, upstream);
    let mut buf = [0u8; MAX_HEAD];
    let start = Instant::now();
    let mut stream = connect(t, upstream)?;
    if tunnel && t.proxy.is_some() {
        let connect = format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n");
        stream.write_all(connect.as_bytes())?;
        if read_head(&mut stream, &mut buf)? != (200, 0) {
            return Err(std::io::Error::other("CONNECT not answered 200 alone"));
        }
        head = small_head(
            &Target {
                proxy: None,
                ..t.clone()
            },
            upstream,
        );
    }
    stream.write_all(head.as_bytes())?;
    let mut n = stream.read(&mut buf)?;
    let us = start.elapsed().as_secs_f64() * 1e6;
    let ok = n >= 12 && &buf[9..12] == b"200";
    while n > 0 {
        n = stream.read(&mut buf)?;
    }
    if !ok {
        return Err(std::io::Error::other("response is not 200"));
    }
    Ok(us)
}

/// (median, min, max) of `values`.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (
        percentile(&v, 50.0),
        v.first().copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}

/// The nearest-rank percentile of sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * v.len() as f64).ceil().max(1.0);
    // In range: 1 <= rank <= len.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = rank as usize - 1;
    v[i.min(v.len() - 1)]
}

fn bulk(args: &Args) -> (Value, String) {
    let gib = args.bytes as f64 / f64::from(1u32 << 30);
    let mut csv = String::from("run,target,bytes,ms,gib_per_s,other_cpu_pct\n");
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, (Cpu, f64)> = BTreeMap::new();
    for run in 1..=args.runs {
        for t in &args.targets {
            let before = Cpu::now(t, args);
            let ms = bulk_once(t, args.upstream, args.bytes)
                .unwrap_or_else(|e| panic!("bulk via {}: {e}", t.name));
            let after = Cpu::now(t, args);
            let rate = gib / (ms / 1000.0);
            let mut this = Cpu::default();
            this.add_since(before, after);
            let other = 100.0 * this.other() / (ms / 1000.0);
            csv += &format!(
                "{run},{},{},{ms:.3},{rate:.4},{other:.0}\n",
                t.name, args.bytes
            );
            rates.entry(&t.name).or_default().push(rate);
            let entry = cpu.entry(&t.name).or_default();
            entry.0.add_since(before, after);
            entry.1 += ms / 1000.0;
        }
    }
    write_csv(args, "bulk.csv", &csv);
    let mut json = serde_json::Map::new();
    let mut text = format!(
        "\nthroughput: {gib} GiB through CONNECT, {} runs each, interleaved\n\
         {:<10} {:>8} {:>8} {:>8}   CPU s per GiB: {:>6} {:>8} {:>6}   other work\n",
        args.runs, "target", "median", "min", "max", "proxy", "upstream", "client"
    );
    for t in &args.targets {
        let (median, min, max) = spread(&rates[t.name.as_str()]);
        let (c, wall) = cpu[t.name.as_str()];
        let total = gib * args.runs as f64;
        text += &format!(
            "{:<10} {median:>8.2} {min:>8.2} {max:>8.2}   GiB/s{:>13.2} {:>8.2} {:>6.2}   {:>4.0}% CPU\n",
            t.name,
            c.proxy / total,
            c.upstream / total,
            c.client / total,
            100.0 * c.other() / wall
        );
        json.insert(
            t.name.clone(),
            json!({
                "gib_per_s": rates[t.name.as_str()],
                "median_gib_per_s": median, "min_gib_per_s": min, "max_gib_per_s": max,
                "cpu": c.json(wall),
            }),
        );
    }
    (Value::Object(json), text)
}

/// One round of `rps` against one target: (complete responses, errors,
/// wall seconds).
fn rps_round(t: &Target, args: &Args) -> (u64, u64, f64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let head = small_head(t, args.upstream);
    let addr = t.proxy.unwrap_or(args.upstream);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let (ok, errors) = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let head = head.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut buf = [0u8; 4096];
                while Instant::now() < deadline {
                    let one = async {
                        let mut s = tokio::net::TcpStream::connect(addr).await?;
                        s.set_nodelay(true)?;
                        s.write_all(head.as_bytes()).await?;
                        let mut filled = 0;
                        loop {
                            let n = s.read(&mut buf[filled..]).await?;
                            if n == 0 {
                                break;
                            }
                            filled = (filled + n).min(buf.len() - 1);
                        }
                        std::io::Result::Ok(filled >= 12 && &buf[9..12] == b"200")
                    };
                    match tokio::time::timeout(IO_TIMEOUT, one).await {
                        Ok(Ok(true)) => ok += 1,
                        _ => errors += 1,
                    }
                }
                (ok, errors)
            }));
        }
        let (mut ok, mut errors) = (0, 0);
        for task in tasks {
            let (o, e) = task.await.expect("rps task");
            ok += o;
            errors += e;
        }
        (ok, errors)
    });
    (ok, errors, start.elapsed().as_secs_f64())
}

fn rps(args: &Args) -> (Value, String) {
    let mut csv = String::from("round,target,requests,errors,seconds,req_per_s,other_cpu_pct\n");
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut errs: BTreeMap<&str, u64> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, (Cpu, f64, u64)> = BTreeMap::new();
    for round in 1..=args.rounds {
        for t in &args.targets {
            let before = Cpu::now(t, args);
            let (ok, errors, secs) = rps_round(t, args);
            let after = Cpu::now(t, args);
            let rate = ok as f64 / secs;
            let mut this = Cpu::default();
            this.add_since(before, after);
            let other = 100.0 * this.other() / secs;
            csv += &format!(
                "{round},{},{ok},{errors},{secs:.3},{rate:.1},{other:.0}\n",
                t.name
            );
            rates.entry(&t.name).or_default().push(rate);
            *errs.entry(&t.name).or_default() += errors;
            let entry = cpu.entry(&t.name).or_default();
            entry.0.add_since(before, after);
            entry.1 += secs;
            entry.2 += ok;
        }
    }
    write_csv(args, "rps.csv", &csv);
    let mut json = serde_json::Map::new();
    let mut text = format!(
        "\nrequests/s: small GET, new connection each, concurrency {}, {} s x {} rounds\n\
         {:<10} {:>8} {:>8} {:>8} {:>6}   CPU µs per request: {:>5} {:>8} {:>6}   other work\n",
        args.concurrency,
        args.seconds,
        args.rounds,
        "target",
        "median",
        "min",
        "max",
        "errors",
        "proxy",
        "upstream",
        "client"
    );
    for t in &args.targets {
        let name = t.name.as_str();
        let (median, min, max) = spread(&rates[name]);
        let (c, wall, ok) = cpu[name];
        let per = |s: f64| if ok > 0 { s * 1e6 / ok as f64 } else { 0.0 };
        text += &format!(
            "{:<10} {median:>8.0} {min:>8.0} {max:>8.0} {:>6}   {:>24.1} {:>8.1} {:>6.1}   {:>4.0}% CPU\n",
            t.name,
            errs[name],
            per(c.proxy),
            per(c.upstream),
            per(c.client),
            100.0 * c.other() / wall
        );
        json.insert(
            t.name.clone(),
            json!({
                "req_per_s": rates[name],
                "median_req_per_s": median, "min_req_per_s": min, "max_req_per_s": max,
                "errors": errs[name],
                "cpu": c.json(wall),
            }),
        );
    }
    (Value::Object(json), text)
}

/// Time to the first byte of small requests on new connections; with
/// `tunnel`, through CONNECT tunnels (see [`small_request`]).
fn latency(args: &Args, tunnel: bool) -> (Value, String) {
    let mut csv = String::from("sample,target,us\n");
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, (Cpu, f64)> = BTreeMap::new();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 1..=args.samples {
        // Shuffle the order: a proxy is still closing its two connections
        // when the client has its answer, and that work lands on whichever
        // target comes next.
        let mut order: Vec<&Target> = args.targets.iter().collect();
        for k in (1..order.len()).rev() {
            let j = usize::try_from(rng.next() % (k as u64 + 1)).expect("j <= k");
            order.swap(k, j);
        }
        for t in order {
            std::thread::sleep(args.gap);
            // CPU time is read around each sample, outside the timed part;
            // clock ticks are coarse, but their sum over many samples is not.
            let before = Cpu::now(t, args);
            let started = Instant::now();
            let us = small_request(t, args.upstream, tunnel)
                .unwrap_or_else(|e| panic!("latency via {}: {e}", t.name));
            let wall = started.elapsed().as_secs_f64();
            let entry = cpu.entry(&t.name).or_default();
            entry.0.add_since(before, Cpu::now(t, args));
            entry.1 += wall;
            csv += &format!("{i},{},{us:.1}\n", t.name);
            samples.entry(&t.name).or_default().push(us);
        }
    }
    write_csv(
        args,
        if tunnel { "tunnel.csv" } else { "latency.csv" },
        &csv,
    );
    let direct = {
        let mut v = samples["direct"].clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    };
    let mut json = serde_json::Map::new();
    let mut text = format!(
        "\n{}: connect to first response byte, sequential, {} samples each, interleaved, {} µs apart (µs)\n\
         {:<10} {:>8} {:>8} {:>8} {:>8} {:>10}   CPU µs per request: {:>5} {:>8} {:>6}\n",
        if tunnel {
            "latency through CONNECT (direct: plain)"
        } else {
            "latency"
        },
        args.samples,
        args.gap.as_micros(),
        "target",
        "p50",
        "p90",
        "p99",
        "max",
        "added p50",
        "proxy",
        "upstream",
        "client"
    );
    for t in &args.targets {
        let mut v = samples[t.name.as_str()].clone();
        v.sort_by(f64::total_cmp);
        let (p50, p90, p99) = (
            percentile(&v, 50.0),
            percentile(&v, 90.0),
            percentile(&v, 99.0),
        );
        let max = v.last().copied().unwrap_or(0.0);
        let (c, wall) = cpu[t.name.as_str()];
        let per = |s: f64| s * 1e6 / v.len() as f64;
        text += &format!(
            "{:<10} {p50:>8.1} {p90:>8.1} {p99:>8.1} {max:>8.1} {:>10.1}   {:>24.1} {:>8.1} {:>6.1}\n",
            t.name,
            p50 - direct,
            per(c.proxy),
            per(c.upstream),
            per(c.client)
        );
        json.insert(
            t.name.clone(),
            json!({"p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": max,
                   "added_p50_us": p50 - direct, "cpu": c.json(wall)}),
        );
    }
    (Value::Object(json), text)
}

/// A fixed-seed generator for the sample order (same order every run).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The issue's goals, `--subject` against `--peer` (and direct).
fn goals(args: &Args, results: &serde_json::Map<String, Value>) -> String {
    let (s, p) = (args.subject.as_str(), args.peer.as_str());
    let get = |part: &str, name: &str, key: &str| {
        results
            .get(part)
            .and_then(|r| r.get(name))
            .and_then(|r| r.get(key))
            .and_then(Value::as_f64)
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut text = format!("\ngoals ({s} against {p}):\n");
    let ratio = |part: &str, key: &str| Some(get(part, s, key)? / get(part, p, key)?);
    if let Some(r) = ratio("bulk", "median_gib_per_s") {
        text += &format!(
            "  throughput  {r:.2}x (goal >= 2x): {}\n",
            verdict(r >= 2.0)
        );
    }
    if let Some(r) = ratio("rps", "median_req_per_s") {
        text += &format!(
            "  requests/s  {r:.2}x (goal >= 2x): {}\n",
            verdict(r >= 2.0)
        );
    }
    if let Some(added) = get("latency", s, "added_p50_us") {
        text += &format!(
            "  added p50   {added:.1} µs (goal <= 100 µs): {}\n",
            verdict(added <= 100.0)
        );
    }
    if let (Some(added), Some(peer)) = (
        get("tunnel", s, "added_p50_us"),
        get("tunnel", p, "added_p50_us"),
    ) {
        text += &format!(
            "  added p50 through CONNECT: {added:.1} µs ({p}: {peer:.1} µs; a new upstream connection and one more round trip each)\n"
        );
    }
    text
}
