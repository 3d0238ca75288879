//! `airlock secrets ...`: manage the encrypted secret store. Never prints a
//! value.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use secrets::{ExposeSecret, IfExists, KeySource, LeaseFilter, SecretOptions, SecretStore};
use zeroize::Zeroizing;

use crate::exit::{Exit, EXIT_OK};

/// `airlock secrets ...`
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store a secret. The value comes from standard input (not echoed on
    /// a terminal; one trailing newline is dropped) or from --from-file.
    Set {
        /// Secret name, `[A-Za-z_][A-Za-z0-9_]*`.
        name: String,
        /// Who may read it: patterns over PIPELINE/JOB, `*` matching any
        /// run of characters but `/` (e.g. `demo/*`, `*/deploy`). Repeatable;
        /// at least one.
        #[arg(long = "scope", value_name = "PATTERN", required = true)]
        scopes: Vec<String>,
        /// Read the value from this file, byte for byte.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Warn (in list and doctor) once the secret is older than this,
        /// e.g. 90d, 12h.
        #[arg(long, value_name = "AGE")]
        max_age: Option<String>,
        /// Replace an existing secret (as a new version, with these scopes).
        #[arg(long)]
        replace: bool,
    },
    /// List secrets: names, scopes, version, age — never values.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a new version of a secret; new leases get it.
    Rotate {
        /// Secret name.
        name: String,
        /// Generate a random value of N bytes (URL-safe base64).
        #[arg(long, value_name = "N", conflicts_with = "from_file")]
        generate: Option<usize>,
        /// Read the value from this file.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// Delete a secret and all its versions.
    Rm {
        /// Secret name.
        name: String,
        /// Also when leases are active (they are revoked).
        #[arg(long)]
        force: bool,
    },
    /// Import NAME=value lines from an age-encrypted file.
    Import {
        /// The encrypted file (as written by `age -r ...`).
        #[arg(long = "age", value_name = "FILE")]
        file: PathBuf,
        /// The age identity file (as written by `age-keygen`).
        #[arg(long, value_name = "KEY")]
        identity: PathBuf,
        /// Scopes of secrets the import creates. Repeatable; at least one.
        #[arg(long = "scope", value_name = "PATTERN", required = true)]
        scopes: Vec<String>,
    },
    /// Leases: which job holds (or held) which secret, and until when.
    Leases {
        /// Only this run's.
        #[arg(long, value_name = "RUN")]
        run: Option<i64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-wrap every secret under a new key (in keys/, or --to FILE).
    Rekey {
        /// Use the key in this file from now on instead of a new one in
        /// keys/.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
    },
}

/// The key the store opens with: `--key-file`, `$AIRLOCK_KEY_FILE`, or the
/// one in `HOME/keys/`.
pub fn key_source(flag: Option<PathBuf>) -> KeySource {
    flag.or_else(|| std::env::var_os("AIRLOCK_KEY_FILE").map(PathBuf::from))
        .map_or(KeySource::Home, KeySource::File)
}

/// Opens the store (creating it and its key on first use).
pub fn open(home: &Path, key: KeySource) -> Result<SecretStore> {
    SecretStore::open(home, key)
        .with_context(|| format!("cannot open the secret store in {}", home.display()))
}

/// Runs a `secrets` subcommand.
pub fn secrets(store: &SecretStore, command: SecretsCommand) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match command {
        SecretsCommand::Set {
            name,
            scopes,
            from_file,
            max_age,
            replace,
        } => {
            let mut options = SecretOptions::parse(&scopes).map_err(bad)?;
            if let Some(age) = max_age {
                options = options.with_max_age(parse_age(&age)?);
            }
            let value = read_value(&name, from_file.as_deref())?;
            // What the redactor cannot mask is never stored.
            redact::check(&value).map_err(|e| bad(format!("secret {name:?}: {e}")))?;
            let if_exists = if replace {
                IfExists::Replace
            } else {
                IfExists::Fail
            };
            let version = store.set(&name, &value, &options, if_exists).map_err(bad)?;
            writeln!(out, "secret {name}: version {version} stored")?;
        }
        SecretsCommand::List { json } => {
            let list = store.list()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                return Ok(EXIT_OK);
            }
            writeln!(
                out,
                "{:<24} {:>7}  {:<10}  {:<8}  SCOPES",
                "NAME", "VERSION", "AGE", "LEASES"
            )?;
            for s in &list {
                let stale = if s.stale { "  (stale: rotate it)" } else { "" };
                let scopes: Vec<&str> = s.scopes.iter().map(secrets::Scope::as_str).collect();
                writeln!(
                    out,
                    "{:<24} {:>7}  {:<10}  {:<8}  {}{stale}",
                    s.name,
                    s.version,
                    age(s.age),
                    s.active_leases,
                    scopes.join(" ")
                )?;
            }
        }
        SecretsCommand::Rotate {
            name,
            generate,
            from_file,
        } => {
            let value = match generate {
                Some(n) => {
                    let v = secrets::generate_value(n).map_err(bad)?;
                    Zeroizing::new(v.expose_secret().to_vec())
                }
                None => read_value(&name, from_file.as_deref())?,
            };
            redact::check(&value).map_err(|e| bad(format!("secret {name:?}: {e}")))?;
            let version = store.rotate(&name, &value).map_err(bad)?;
            writeln!(out, "secret {name}: version {version} is now current")?;
        }
        SecretsCommand::Rm { name, force } => {
            let revoked = store.rm(&name, force).map_err(bad)?;
            writeln!(
                out,
                "secret {name} removed ({} active lease(s) revoked)",
                revoked.len()
            )?;
        }
        SecretsCommand::Import {
            file,
            identity,
            scopes,
        } => {
            let options = SecretOptions::parse(&scopes).map_err(bad)?;
            let names = store.import_age(&file, &identity, &options).map_err(bad)?;
            writeln!(
                out,
                "imported {} secret(s): {}",
                names.len(),
                names.join(", ")
            )?;
        }
        SecretsCommand::Leases { run, json } => {
            let leases = store.leases(&LeaseFilter {
                run,
                ..LeaseFilter::default()
            })?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&leases)?)?;
                return Ok(EXIT_OK);
            }
            writeln!(
                out,
                "{:<32}  {:<20} {:>4}  {:>5}  {:<24} {:<8}",
                "LEASE", "SECRET", "VER", "RUN", "PIPELINE/JOB", "STATE"
            )?;
            for l in &leases {
                writeln!(
                    out,
                    "{:<32}  {:<20} {:>4}  {:>5}  {:<24} {:<8}",
                    l.id.as_str(),
                    l.secret,
                    l.version,
                    l.run,
                    format!("{}/{}", l.pipeline, l.job),
                    l.state.as_str()
                )?;
            }
        }
        SecretsCommand::Rekey { to } => {
            let key = to.map_or(KeySource::Home, KeySource::File);
            let id = store.rekey(key)?;
            writeln!(out, "every secret is now wrapped with key {id}")?;
        }
    }
    Ok(EXIT_OK)
}

/// A store error caused by the input (name, value, scope, missing secret)
/// is bad input (exit 2).
fn bad(e: impl std::fmt::Display) -> anyhow::Error {
    Exit::bad_input(e.to_string()).into()
}

/// `90d`, `12h`, `30m`, ...: the pipeline file's durations plus days.
fn parse_age(text: &str) -> Result<Duration> {
    if let Some(days) = text.strip_suffix('d') {
        let days: u64 = days.parse().map_err(|_| {
            bad(format!(
                "invalid max age {text:?}: expected e.g. 90d or 12h"
            ))
        })?;
        return Ok(Duration::from_secs(days.saturating_mul(86_400)));
    }
    spec::parse_duration(text).map_err(|e| bad(format!("invalid max age {text:?}: {e}")))
}

/// Reads a secret value from a file, or from stdin (without echo on a
/// terminal). The buffer is zeroized when dropped.
fn read_value(name: &str, file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(file) = file {
        let value =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        return Ok(Zeroizing::new(value));
    }
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let saved = if tty {
        eprint!("value for {name} (not echoed): ");
        let _ = std::io::stderr().flush();
        echo_off(&stdin)
    } else {
        None
    };
    let mut value = Zeroizing::new(Vec::new());
    let read = if tty {
        let mut line = Zeroizing::new(String::new());
        let r = stdin.read_line(&mut line).map(|_| ());
        value.extend_from_slice(line.as_bytes());
        r
    } else {
        stdin.lock().read_to_end(&mut value).map(|_| ())
    };
    if let Some(saved) = saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
        eprintln!();
    }
    read.context("cannot read the value from standard input")?;
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    Ok(value)
}

/// Turns terminal echo off; returns the settings to restore.
fn echo_off(stdin: &std::io::Stdin) -> Option<rustix::termios::Termios> {
    let saved = rustix::termios::tcgetattr(stdin).ok()?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &quiet).ok()?;
    Some(saved)
}

/// Warnings about stored secrets for `airlock doctor`: each secret older
/// than its max age, or why the store could not be read. Nothing when
/// there is no store yet.
pub fn stale_warnings(home: &Path) -> Vec<String> {
    if !home.join(secrets::DB_FILE).exists() {
        return Vec::new();
    }
    let list = SecretStore::open(home, key_source(None)).and_then(|store| store.list());
    match list {
        Ok(list) => list
            .iter()
            .filter(|s| s.stale)
            .map(|s| {
                format!(
                    "secret {} (version {}) is {} old, past its max age of {}: rotate it with `airlock secrets rotate {}`",
                    s.name,
                    s.version,
                    age(s.age),
                    s.max_age.map(age).unwrap_or_default(),
                    s.name
                )
            })
            .collect(),
        Err(e) => vec![format!("cannot read the secret store: {e}")],
    }
}

fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
