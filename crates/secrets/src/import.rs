//! Reading secrets from an age-encrypted dotenv file.
//!
//! The file is decrypted with the X25519 identities (`AGE-SECRET-KEY-1…`
//! lines, as `age-keygen` writes them) of an identity file, in memory only:
//! the plaintext lives in one buffer that is allocated once, never grows,
//! and is wiped when the import ends. Binary and ASCII-armored (`age -a`)
//! files are both accepted.
//!
//! The plaintext is dotenv-style text, one secret per line:
//!
//! ```text
//! # comments and blank lines are ignored
//! DEPLOY_TOKEN=abc123def456
//! export NPM_TOKEN = npm_0123456789     <- "export " and spaces around = are fine
//! PASSWORD="  kept verbatim  "          <- quotes keep spaces; no escapes
//! ```
//!
//! An unquoted value is trimmed of spaces and tabs; a value in matching
//! single or double quotes is the text between them, verbatim (no escape
//! sequences, no inline comments). A value may not span lines. Errors name
//! the line number and never quote the line, which may hold a value.

use std::fs::File;
use std::io::{BufReader, Read};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use age::armor::ArmoredReader;
use zeroize::Zeroizing;

use crate::error::SecretsError;
use crate::name;

/// The largest plaintext an import accepts (64 secrets of the largest size).
pub(crate) const MAX_PLAINTEXT: usize = 64 * name::MAX_SECRET_LEN;
/// The largest identity file read.
const MAX_IDENTITY_FILE: usize = 64 * 1024;

/// One `NAME=value` line: the name, and where the value is in the
/// plaintext.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) value: Range<usize>,
}

/// Decrypts the age file `file` with the X25519 identities in `identity`.
pub(crate) fn decrypt(file: &Path, identity: &Path) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let identities = read_identities(identity)?;
    let read_err = |source| SecretsError::ImportRead {
        path: file.to_owned(),
        source,
    };
    let decrypt_err = |source| SecretsError::AgeDecrypt {
        path: file.to_owned(),
        source,
    };
    let input = File::open(file).map_err(read_err)?;
    let decryptor =
        age::Decryptor::new(ArmoredReader::new(BufReader::new(input))).map_err(decrypt_err)?;
    if decryptor.is_scrypt() {
        return Err(SecretsError::Identity {
            path: file.to_owned(),
            reason: "the file is encrypted with a passphrase; encrypt it to the X25519 recipient of the identity (age -r age1...)".into(),
        });
    }
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(decrypt_err)?;
    // Capacity for one byte past the limit plus slack: the buffer never
    // reallocates, so no unwiped copy of the plaintext is left behind.
    let mut plaintext = Zeroizing::new(Vec::with_capacity(MAX_PLAINTEXT + 64));
    reader
        .take(u64::try_from(MAX_PLAINTEXT + 1).unwrap_or(u64::MAX))
        .read_to_end(&mut plaintext)
        .map_err(read_err)?;
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(SecretsError::ImportLine {
            path: file.to_owned(),
            line: 0,
            reason: format!("the decrypted file is larger than {MAX_PLAINTEXT} bytes"),
        });
    }
    Ok(plaintext)
}

/// The X25519 identities of an identity file.
fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, SecretsError> {
    let err = |reason: String| SecretsError::Identity {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|source| SecretsError::ImportRead {
        path: path.to_owned(),
        source,
    })?;
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_IDENTITY_FILE + 64));
    file.take(u64::try_from(MAX_IDENTITY_FILE + 1).unwrap_or(u64::MAX))
        .read_to_end(&mut text)
        .map_err(|source| SecretsError::ImportRead {
            path: path.to_owned(),
            source,
        })?;
    if text.len() > MAX_IDENTITY_FILE {
        return Err(err("too large for an age identity file".into()));
    }
    let mut identities = Vec::new();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let number = index + 1;
        let parsed = std::str::from_utf8(line)
            .ok()
            .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .ok_or_else(|| {
                err(format!(
                    "line {number}: not an age X25519 identity (AGE-SECRET-KEY-1...); plugin, post-quantum and SSH identities are not supported"
                ))
            })?;
        let identity = age::x25519::Identity::from_str(parsed)
            .map_err(|why| err(format!("line {number}: invalid X25519 identity: {why}")))?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(err("no identity (AGE-SECRET-KEY-1...) in the file".into()));
    }
    Ok(identities)
}

/// Splits decrypted dotenv text into entries. `path` is for messages only.
pub(crate) fn parse_dotenv(path: &Path, text: &[u8]) -> Result<Vec<Entry>, SecretsError> {
    let mut entries: Vec<(Entry, usize)> = Vec::new();
    let mut start = 0;
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line_start = start;
        start += raw.len() + 1;
        let number = index + 1;
        let err = |reason: String| SecretsError::ImportLine {
            path: path.to_owned(),
            line: number,
            reason,
        };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let Some(eq) = raw.iter().position(|&b| b == b'=') else {
            return Err(err("expected NAME=value".into()));
        };
        let mut key = raw[..eq].trim_ascii();
        if let Some(rest) = key.strip_prefix(b"export") {
            if rest.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                key = rest.trim_ascii();
            }
        }
        let name = std::str::from_utf8(key)
            .ok()
            .filter(|n| name::is_valid_name(n))
            .ok_or_else(|| {
                err(format!(
                    "the text before = is not a secret name (expected {})",
                    name::NAME_RULE
                ))
            })?;
        // Positions within `raw`, then shifted to the whole text.
        let value_start = eq + 1 + leading_blanks(&raw[eq + 1..]);
        let value_end = raw.len() - trailing_blanks(&raw[value_start..]);
        let mut value = value_start..value_end;
        if let Some(&quote) = raw.get(value.start).filter(|q| **q == b'"' || **q == b'\'') {
            if value.len() < 2 || raw[value.end - 1] != quote {
                return Err(err(format!(
                    "the value of {name} opens a {} quote that does not close on this line (values may not span lines)",
                    if quote == b'"' { "double" } else { "single" }
                )));
            }
            value = value.start + 1..value.end - 1;
        }
        if let Some((_, first)) = entries.iter().find(|(e, _)| e.name == name) {
            return Err(err(format!("{name} is set twice (first on line {first})")));
        }
        let value = line_start + value.start..line_start + value.end;
        name::check_value(name, &text[value.clone()])?;
        entries.push((
            Entry {
                name: name.to_owned(),
                value,
            },
            number,
        ));
    }
    if entries.is_empty() {
        return Err(SecretsError::ImportLine {
            path: path.to_owned(),
            line: 0,
            reason: "no NAME=value line".into(),
        });
    }
    Ok(entries.into_iter().map(|(e, _)| e).collect())
}

fn leading_blanks(s: &[u8]) -> usize {
    s.iter().take_while(|b| **b == b' ' || **b == b'\t').count()
}

fn trailing_blanks(s: &[u8]) -> usize {
    s.iter()
        .rev()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(String, String)>, SecretsError> {
        let entries = parse_dotenv(Path::new("f.age"), text.as_bytes())?;
        Ok(entries
            .into_iter()
            .map(|e| (e.name, text[e.value].to_owned()))
            .collect())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn dotenv_lines() {
        let text = "# comment\n\nA_TOKEN=abcdef123\r\n  export B = spaced-out  \nC=\"  quoted  \"\nD='x=y#z!'\n  # indented comment\nexport_E=plainvalue";
        assert_eq!(
            parse(text).expect("parse"),
            pairs(&[
                ("A_TOKEN", "abcdef123"),
                ("B", "spaced-out"),
                ("C", "  quoted  "),
                ("D", "x=y#z!"),
                ("export_E", "plainvalue"),
            ])
        );
    }

    #[test]
    fn dotenv_errors_name_the_line_not_the_value() {
        let cases = [
            ("A=abcdefg\nno equals sign here\n", 2, "expected NAME=value"),
            ("1BAD=abcdefgh\n", 1, "not a secret name"),
            ("A=\"abcdefgh\nmore\"\n", 1, "does not close"),
            ("A=abcdefgh\nA=abcdefgh\n", 2, "set twice (first on line 1)"),
        ];
        for (text, line, want) in cases {
            let err = parse(text).expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(
                matches!(err, SecretsError::ImportLine { line: l, .. } if l == line),
                "{msg}"
            );
            assert!(!msg.contains("abcdefg"), "{msg}");
        }
        let err = parse("A=longenough\nB=tiny\n").expect_err("short");
        assert!(
            matches!(err, SecretsError::ValueTooShort { ref name, len: 4 } if name == "B"),
            "{err}"
        );
        assert!(parse("# nothing\n\n").is_err());
    }
}
