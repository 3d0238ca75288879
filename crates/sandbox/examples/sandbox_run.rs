//! Runs one command in a fresh sandbox with every layer (and a cgroup when
//! run as root), then tears it down: the unit measured by
//! `benches/sandbox.sh` against bwrap and unshare.
//!
//! Usage: sandbox_run [--no-cgroup] COMMAND [ARG]...

use std::time::{Duration, Instant};

use sandbox::cgroup::Limits;
use sandbox::{
    CgroupSpec, CommandOutcome, CommandSpec, Layers, Output, Sandbox, SandboxConfig, Spare,
};

fn main() {
    sandbox::run_if_init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cgroup = if args.first().is_some_and(|a| a == "--no-cgroup") {
        args.remove(0);
        false
    } else {
        rustix::process::geteuid().is_root()
    };
    if args.is_empty() {
        eprintln!("usage: sandbox_run [--no-cgroup] COMMAND [ARG]...");
        std::process::exit(2);
    }
    let config = SandboxConfig {
        hostname: "airlock-bench".into(),
        source: std::env::current_dir().unwrap_or_else(|_| "/".into()),
        workdir: "/workspace".into(),
        workspace_size: 64 << 20,
        tmp_size: 64 << 20,
        layers: match std::env::var("AIRLOCK_BENCH_LAYERS").as_deref() {
            Ok("none") => Layers {
                seccomp: false,
                landlock: false,
                capabilities: false,
                rlimits: false,
                proc_masking: false,
            },
            Ok("noseccomp") => Layers {
                seccomp: false,
                ..Layers::default()
            },
            _ => Layers::default(),
        },
        egress: false,
        cgroup: cgroup.then(|| CgroupSpec {
            name: sandbox::cgroup::name_for("bench", 0),
            limits: Limits {
                memory: Some(256 << 20),
                cpus: None,
                pids: Some(256),
            },
        }),
        secrets: Vec::new(),
    };
    // AIRLOCK_BENCH_ITERATIONS=N: time N sandboxes in this process and
    // print the phases (create, run, destroy) in microseconds.
    if let Some(n) = std::env::var("AIRLOCK_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        phases(&config, &args, n);
        return;
    }
    let code = match run(&config, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandbox_run: {e}");
            70
        }
    };
    std::process::exit(code);
}

fn phases(config: &SandboxConfig, argv: &[String], n: usize) {
    // AIRLOCK_BENCH_WARM=1: the spare is prepared before the clock starts,
    // as the engine's spare pool does while earlier work runs.
    let warm = std::env::var_os("AIRLOCK_BENCH_WARM").is_some();
    let mut samples: [Vec<u128>; 4] = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..n {
        let spare =
            warm.then(|| Spare::prepare(config.layers, config.cgroup.is_some()).expect("prepare"));
        let t0 = Instant::now();
        let mut sb = match spare {
            Some(spare) => spare.start(config).expect("start"),
            None => Sandbox::create(config).expect("create"),
        };
        let t1 = Instant::now();
        let command = CommandSpec {
            argv: argv.to_vec(),
            env: vec![],
            cwd: "/workspace".into(),
        };
        let mut first = None;
        sb.run(
            &command,
            Instant::now() + Duration::from_secs(10),
            &mut |o| {
                if let (Output::Data(_), None) = (o, first) {
                    first = Some(Instant::now());
                }
            },
        )
        .expect("run");
        let t2 = Instant::now();
        sb.destroy().expect("destroy");
        let t3 = Instant::now();
        samples[0].push((t1 - t0).as_micros());
        samples[1].push((t2 - t1).as_micros());
        samples[2].push((t3 - t2).as_micros());
        if let Some(first) = first {
            samples[3].push((first - t0).as_micros());
        }
    }
    let names = ["create", "run", "destroy", "to first output"];
    for (name, s) in names.iter().zip(samples.iter_mut()) {
        if s.is_empty() {
            continue;
        }
        s.sort_unstable();
        println!(
            "{name:8} p50 {:6} us  p99 {:6} us",
            s[s.len() / 2],
            s[s.len() * 99 / 100]
        );
    }
}

fn run(config: &SandboxConfig, argv: Vec<String>) -> Result<i32, Box<dyn std::error::Error>> {
    let mut sandbox = Sandbox::create(config)?;
    let command = CommandSpec {
        argv,
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/workspace".into(),
    };
    let mut out = std::io::stdout();
    let outcome = sandbox.run(
        &command,
        Instant::now() + Duration::from_secs(60),
        &mut |o| {
            if let Output::Data(d) = o {
                let _ = std::io::Write::write_all(&mut out, d);
            }
        },
    )?;
    let report = sandbox.destroy()?;
    if !report.is_clean() {
        return Err(format!("teardown left {report:?}").into());
    }
    Ok(match outcome {
        CommandOutcome::Exited(c) => c,
        _ => 1,
    })
}
