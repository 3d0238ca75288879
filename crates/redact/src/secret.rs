//! A value to mask, held in memory that is zeroed when it is dropped.

use std::fmt;

use zeroize::Zeroizing;

use crate::{RedactError, MAX_SECRET_LEN, MIN_SECRET_LEN};

/// A value to mask: any bytes, between [`MIN_SECRET_LEN`] and
/// [`MAX_SECRET_LEN`] long.
///
/// The bytes are zeroed when the `Secret` is dropped, and its `Debug` form
/// shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Copies `value` into a new secret, after [`check`]ing its length.
    pub fn new(value: &[u8]) -> Result<Secret, RedactError> {
        check(value)?;
        Ok(Secret(Zeroizing::new(value.to_vec())))
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (never zero).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a secret has at least [`MIN_SECRET_LEN`] bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Checks that `value` can be masked: at least [`MIN_SECRET_LEN`] and at most
/// [`MAX_SECRET_LEN`] bytes.
///
/// The CLI runs the same check when a secret is stored, so that a value the
/// redactor would refuse never gets into the store.
pub fn check(value: &[u8]) -> Result<(), RedactError> {
    let len = value.len();
    if len < MIN_SECRET_LEN {
        return Err(RedactError::TooShort { len });
    }
    if len > MAX_SECRET_LEN {
        return Err(RedactError::TooLong { len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_short_and_long_values() {
        for len in 0..MIN_SECRET_LEN {
            let err = Secret::new(&vec![b'a'; len]).unwrap_err();
            assert!(matches!(err, RedactError::TooShort { len: l } if l == len));
            assert!(err.to_string().contains("at least 6 bytes"), "{err}");
        }
        assert!(Secret::new(b"abcdef").is_ok());
        assert!(Secret::new(&vec![b'a'; MAX_SECRET_LEN]).is_ok());
        let err = Secret::new(&vec![b'a'; MAX_SECRET_LEN + 1]).unwrap_err();
        assert!(matches!(err, RedactError::TooLong { .. }), "{err}");
    }

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::new(b"hunter2hunter2").unwrap();
        let shown = format!("{s:?}");
        assert_eq!(shown, "Secret(14 bytes)");
        assert_eq!(s.expose(), b"hunter2hunter2");
        assert_eq!(s.len(), 14);
        assert!(!s.is_empty());
    }
}
