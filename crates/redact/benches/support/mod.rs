//! Test data for the benchmarks: build-log text and secrets, generated from
//! a fixed seed so that every run measures the same bytes.

/// A small, fast, seeded generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).expect("usize fits in u64");
        usize::try_from(self.next() % n).expect("below a usize")
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chars(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n).map(|_| char::from(*self.pick(alphabet))).collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &[u8] = b"0123456789abcdef";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const PRINTABLE: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~";

/// `n` secrets shaped like the credentials CI jobs get: tokens with a
/// vendor prefix, cloud keys, hex API keys, passwords, JWTs, and a few
/// multi-line private keys.
pub fn secrets(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let s = match i % 10 {
                0 => format!("ghp_{}", rng.chars(ALNUM, 36)),
                1 => format!("AKIA{}", rng.chars(UPPER_DIGITS, 16)),
                2 => rng.chars(B64, 40),
                3 => rng.chars(HEX, 32),
                4 | 5 => {
                    let len = 12 + rng.below(13);
                    rng.chars(PRINTABLE, len)
                }
                6 => format!(
                    "eyJhbGciOiJIUzI1NiJ9.{}.{}",
                    rng.chars(ALNUM, 60),
                    rng.chars(ALNUM, 43)
                ),
                7 => format!(
                    "xoxb-{}-{}",
                    rng.chars(b"0123456789", 12),
                    rng.chars(ALNUM, 24)
                ),
                8 if i % 50 == 8 => {
                    let mut key = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
                    for _ in 0..5 {
                        key.push_str(&rng.chars(B64, 64));
                        key.push('\n');
                    }
                    key.push_str("-----END OPENSSH PRIVATE KEY-----\n");
                    key
                }
                _ => format!("npm_{}", rng.chars(ALNUM, 36)),
            };
            s.into_bytes()
        })
        .collect()
}

const CRATES: &[&str] = &[
    "serde",
    "serde_derive",
    "proc-macro2",
    "quote",
    "syn",
    "libc",
    "tokio",
    "mio",
    "bytes",
    "hyper",
    "rustls",
    "ring",
    "aho-corasick",
    "regex",
    "regex-syntax",
    "memchr",
    "clap",
    "clap_builder",
    "anstream",
    "tracing",
    "tracing-core",
    "thiserror",
    "anyhow",
    "once_cell",
    "futures-util",
    "pin-project-lite",
    "smallvec",
    "hashbrown",
    "indexmap",
    "itoa",
];
const WORDS: &[&str] = &[
    "parse", "config", "handler", "request", "response", "builder", "client", "server", "state",
    "cache", "index", "token", "session", "stream", "buffer", "reader", "writer", "error", "value",
];

/// About `size` bytes of build-log text: compiler, test runner, package
/// manager, container build and timestamped lines. Every `secret_every`
/// lines (if not 0), a line prints one of `secrets` in one of its forms.
pub fn build_log(size: usize, seed: u64, secrets: &[Vec<u8>], secret_every: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(size + 256);
    let mut line_no = 0usize;
    while out.len() < size {
        line_no += 1;
        if secret_every != 0 && line_no.is_multiple_of(secret_every) && !secrets.is_empty() {
            let secret = rng.pick(secrets);
            let forms = redact::variants(secret);
            out.extend_from_slice(b"+ export TOKEN=");
            out.extend_from_slice(forms[rng.below(forms.len())].bytes());
            out.push(b'\n');
            continue;
        }
        let krate = rng.pick(CRATES);
        let (a, b, c) = (rng.below(3), rng.below(40), rng.below(30));
        let line = match rng.below(16) {
            0..=3 => format!("   Compiling {krate} v{a}.{b}.{c}\n"),
            4 => format!("    Checking {krate} v{a}.{b}.{c} (/home/runner/work/app/app/crates/{krate})\n"),
            5 => format!(
                "warning: unused variable: `{}`\n  --> crates/{krate}/src/{}.rs:{}:{}\n   |\n",
                rng.pick(WORDS),
                rng.pick(WORDS),
                rng.below(900) + 1,
                rng.below(80) + 1
            ),
            6..=8 => format!(
                "test {}::{}::{}_{} ... ok\n",
                rng.pick(WORDS),
                rng.pick(WORDS),
                rng.pick(WORDS),
                rng.below(100)
            ),
            9 => format!(
                "[2025-03-0{}T12:{:02}:{:02}.{:03}Z INFO  airlock::step] step {} finished in {} ms\n",
                a + 1,
                b,
                c,
                rng.below(1000),
                rng.below(50),
                rng.below(90_000)
            ),
            10 => format!(
                "gcc -O2 -g -Wall -Wextra -fPIC -I/usr/include/openssl -c src/{}.c -o build/{}.o\n",
                rng.pick(WORDS),
                rng.pick(WORDS)
            ),
            11 => format!(
                " ---> Running in {}\nStep {}/{} : RUN apt-get install -y --no-install-recommends lib{}-dev\n",
                rng.chars(HEX, 12),
                a + 1,
                b + 5,
                rng.pick(WORDS)
            ),
            12 => format!(
                "Downloaded {krate} v{a}.{b}.{c} (sha256:{})\n",
                rng.chars(HEX, 64)
            ),
            13 => format!(
                "npm WARN deprecated {}@{a}.{b}.{c}: this package is no longer supported\n",
                rng.pick(WORDS)
            ),
            14 => format!(
                "test result: ok. {} passed; 0 failed; {} ignored; 0 measured; 0 filtered out; finished in {}.{:02}s\n",
                b * 7,
                c,
                a,
                rng.below(100)
            ),
            _ => format!(
                "    Finished `release` profile [optimized + debuginfo] target(s) in {}m {}s\n",
                a,
                b
            ),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}
