//! The shipped rules on one `exec` observation, evaluated many times: what
//! the job's monitor thread spends on the rules per exec of `/bin/true`
//! (benches/monitor.sh's job) and of a long compiler command line.
//!
//! ```sh
//! cargo run --release -p monitor --example evaluate [ROUNDS]
//! ```

use std::time::Instant;

use monitor::{Kind, Observation, Rules};

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |r| r.parse().expect("ROUNDS is a number"));
    let rules = Rules::builtin();
    let long = format!(
        "cc -O2 -g -Wall -fPIC {} -c src/net/parser.c -o target/obj/1f2e3d4c.o",
        (0..40)
            .map(|i| format!("-I vendor/lib{i}/include"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (name, path, argv) in [
        ("true", "/bin/true", "/bin/true".to_string()),
        ("cc, long argv", "/usr/bin/cc", long),
    ] {
        let obs = exec(path, &argv);
        let mut fired = 0usize;
        let started = Instant::now();
        for _ in 0..rounds {
            fired += std::hint::black_box(&rules)
                .evaluate(std::hint::black_box(&obs))
                .count();
        }
        let ns = started.elapsed().as_secs_f64() * 1e9 / f64::from(rounds);
        println!(
            "{name}: {ns:.0} ns per evaluation ({} bytes of argv, {fired} rules fired)",
            argv.len()
        );
    }
}

/// An exec as the job's monitor builds it.
fn exec(path: &str, argv: &str) -> Observation {
    let binary = path.rsplit('/').next().unwrap_or(path);
    Observation::new(Kind::Exec)
        .with("pid", 42u64)
        .with("ppid", 7u64)
        .with("uid", 0u64)
        .with("binary", binary)
        .with("parent", "sh")
        .with("path", path)
        .with("argv", argv)
        .with("new_binary", false)
}
