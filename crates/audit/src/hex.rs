//! Lowercase hexadecimal, as the log writes hashes.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Decodes exactly `N` bytes of hex (either case); `None` for anything else.
pub fn decode_array<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0_u8; N];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

fn value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let bytes = [0_u8, 1, 0xab, 0xff];
        assert_eq!(super::encode(&bytes), "0001abff");
        assert_eq!(super::decode_array::<4>(b"0001ABff"), Some(bytes));
        assert_eq!(super::decode_array::<4>(b"0001abf"), None);
        assert_eq!(super::decode_array::<4>(b"0001abfg"), None);
    }
}
