//! The webhook signature: `sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`.
//!
//! Signing the timestamp with the body lets a receiver refuse a replayed
//! request: it checks the signature with [`verify`], then refuses a
//! timestamp older than a few minutes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of the signature header's value, naming the scheme.
pub const SCHEME: &str = "sha256=";

fn mac(key: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Airlock-Signature` value for `body` sent at `timestamp` (the
/// `X-Airlock-Timestamp` value, unix seconds in decimal).
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let tag = mac(key, timestamp, body).finalize().into_bytes();
    format!("{SCHEME}{}", hex_encode(&tag))
}

/// Whether `header` (the `X-Airlock-Signature` value) is the signature of
/// `body` sent at `timestamp` (the `X-Airlock-Timestamp` value) with `key`.
///
/// The comparison takes the same time wherever the first difference is.
/// It does not look at how old `timestamp` is: a receiver should also
/// refuse one more than a few minutes from its own clock.
pub fn verify(key: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix(SCHEME) else {
        return false;
    };
    let Some(tag) = hex_decode(hex) else {
        return false;
    };
    mac(key, timestamp, body).verify_slice(&tag).is_ok()
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The bytes of `hex` (either case), or `None` if it is not hex.
fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let hex = hex_encode(&bytes);
        assert_eq!(&hex[..8], "00010203");
        assert_eq!(hex_decode(&hex), Some(bytes.clone()));
        assert_eq!(hex_decode(&hex.to_uppercase()), Some(bytes));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn matches_an_independent_hmac_sha256() {
        // Python: hmac.new(key, b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign(
                b"0123456789abcdef0123456789abcdef",
                "1700000000",
                b"{\"a\":1}"
            ),
            "sha256=f05f2539e3ae1c49aec5f8cfdad75ef6b06480b133973ffbb7ec9e18827af177"
        );
    }

    #[test]
    fn verify_accepts_only_the_right_signature() {
        let key = b"0123456789abcdef0123456789abcdef";
        let header = sign(key, "1700000000", b"{\"a\":1}");
        assert!(verify(key, "1700000000", b"{\"a\":1}", &header));
        assert!(verify(
            key,
            "1700000000",
            b"{\"a\":1}",
            &header.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify(key, "1700000001", b"{\"a\":1}", &header));
        assert!(!verify(key, "1700000000", b"{\"a\":2}", &header));
        assert!(!verify(b"another key", "1700000000", b"{\"a\":1}", &header));
        assert!(!verify(
            key,
            "1700000000",
            b"{\"a\":1}",
            &header[SCHEME.len()..]
        ));
        assert!(!verify(key, "1700000000", b"{\"a\":1}", "sha256="));
        assert!(!verify(
            key,
            "1700000000",
            b"{\"a\":1}",
            &header[..header.len() - 2]
        ));
    }
}
