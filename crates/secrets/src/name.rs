//! What a secret may be called and how long its value may be.

use crate::error::SecretsError;

/// The shortest value the store accepts, in bytes.
///
/// The redactor masks every occurrence of a secret in a job's output. A
/// value of a few bytes occurs by chance in ordinary output (`true`, `1234`,
/// `admin`), so masking it garbles logs, and every mask shows a reader
/// where the value appeared, which narrows it down. Buildkite's masker uses
/// the same floor.
pub const MIN_SECRET_LEN: usize = 6;

/// The longest value the store accepts, in bytes (64 KiB).
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// The longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The secret name rule, for messages.
pub const NAME_RULE: &str = "[A-Za-z_][A-Za-z0-9_]{0,127}";

/// Whether `name` is a valid secret name: [`NAME_RULE`], the same rule as
/// an environment variable name, so that every secret can be injected as one.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NAME_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks `name` against [`NAME_RULE`].
pub(crate) fn check_name(name: &str) -> Result<(), SecretsError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(SecretsError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Checks the length of `value`, the value of secret `name`.
pub(crate) fn check_value(name: &str, value: &[u8]) -> Result<(), SecretsError> {
    if value.len() < MIN_SECRET_LEN {
        return Err(SecretsError::ValueTooShort {
            name: name.to_owned(),
            len: value.len(),
        });
    }
    if value.len() > MAX_SECRET_LEN {
        return Err(SecretsError::ValueTooLong {
            name: name.to_owned(),
            len: value.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let longest = "A".repeat(MAX_NAME_LEN);
        for ok in ["A", "_", "a_1", "DEPLOY_TOKEN", "_X9", longest.as_str()] {
            assert!(is_valid_name(ok), "{ok}");
        }
        let too_long = "A".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "1A", "A-B", "A.B", "A B", "É", "A/B", too_long.as_str()] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn value_lengths() {
        assert!(check_value("N", b"12345").is_err());
        assert!(check_value("N", b"123456").is_ok());
        assert!(check_value("N", &vec![b'x'; MAX_SECRET_LEN]).is_ok());
        assert!(check_value("N", &vec![b'x'; MAX_SECRET_LEN + 1]).is_err());
    }
}
