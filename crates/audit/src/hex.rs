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
    // Table look-ups without a branch per digit (the verifier decodes a
    // hash per entry): an invalid digit maps to 0xff, whose high bits
    // survive the OR of all of them.
    let mut out = [0_u8; N];
    let mut bad = 0_u8;
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (hi, lo) = (VALUES[usize::from(pair[0])], VALUES[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// Each byte's value as a hex digit, 0xff for a non-digit.
static VALUES: [u8; 256] = {
    let mut table = [0xff_u8; 256];
    let mut i: u8 = 0;
    while i < 10 {
        table[(b'0' + i) as usize] = i;
        i += 1;
    }
    let mut i: u8 = 0;
    while i < 6 {
        table[(b'a' + i) as usize] = 10 + i;
        table[(b'A' + i) as usize] = 10 + i;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let bytes = [0_u8, 1, 0xab, 0xff];
        assert_eq!(super::encode(&bytes), "0001abff");
        assert_eq!(super::decode_array::<4>(b"0001ABff"), Some(bytes));
        assert_eq!(super::decode_array::<4>(b"0001abf"), None);
        assert_eq!(super::decode_array::<4>(b"0001abfg"), None);
        assert_eq!(super::decode_array::<1>(b"fF"), Some([0xff]));
        for bad in [b"/0", b"0:", b"@0", b"G0", b"`0", b"g0", b"\xff0"] {
            assert_eq!(super::decode_array::<1>(&bad[..2]), None, "{bad:?}");
        }
    }
}
