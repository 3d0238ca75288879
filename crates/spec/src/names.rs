//! Identifier rules: job ids, pipeline names, environment variable names and
//! secret names.

/// The job id / pipeline name rule, for messages.
pub(crate) const ID_RULE: &str = "[a-z0-9][a-z0-9_-]{0,63}";
/// The environment variable name rule, for messages.
pub(crate) const ENV_RULE: &str = "[A-Za-z_][A-Za-z0-9_]*";
/// The secret name rule, for messages.
pub(crate) const SECRET_RULE: &str = "[A-Za-z_][A-Za-z0-9_]{0,127}";
/// Environment variables the runner sets; pipelines may not.
pub(crate) const RESERVED_ENV_PREFIX: &str = "AIRLOCK_";

/// `[a-z0-9][a-z0-9_-]{0,63}`: job ids and pipeline names.
pub(crate) fn is_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    first_ok
        && s.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `[A-Za-z_][A-Za-z0-9_]*`: environment variable names.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `[A-Za-z_][A-Za-z0-9_]{0,127}`: secret names.
pub(crate) fn is_secret_name(s: &str) -> bool {
    s.len() <= 128 && is_env_name(s)
}

/// The default pipeline name derived from a file stem: lowercased, other
/// characters replaced by `-`, leading `-`/`_` dropped, at most 64 bytes;
/// `pipeline` when nothing is left.
pub(crate) fn name_from_stem(stem: &str) -> String {
    let sanitised: String = stem
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| *c == '-' || *c == '_')
        .take(64)
        .collect();
    if sanitised.is_empty() {
        "pipeline".to_owned()
    } else {
        sanitised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "0", "build", "a-b_c", "9lives", &"a".repeat(64)] {
            assert!(is_id(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a.b", "a b", "é", &"a".repeat(65)] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn env_and_secret_names() {
        for ok in ["A", "_", "a_1", "PATH", "_X9"] {
            assert!(is_env_name(ok) && is_secret_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É"] {
            assert!(!is_env_name(bad) && !is_secret_name(bad), "{bad}");
        }
        assert!(is_secret_name(&"S".repeat(128)));
        assert!(!is_secret_name(&"S".repeat(129)));
        assert!(is_env_name(&"S".repeat(129)));
    }

    #[test]
    fn stems() {
        assert_eq!(name_from_stem("airlock"), "airlock");
        assert_eq!(name_from_stem("My Pipeline.v2"), "my-pipeline-v2");
        assert_eq!(name_from_stem("_ci"), "ci");
        assert_eq!(name_from_stem("..."), "pipeline");
        assert_eq!(name_from_stem("ÄB"), "b");
        assert_eq!(name_from_stem(&"x".repeat(100)).len(), 64);
        assert!(is_id(&name_from_stem("Ünïcödé — name!")));
    }
}
