//! Standard base64 as Go's `encoding/json` reads `[]byte` fields (Secret
//! `data`, `caBundle`, ...): padding required, `\r`/`\n` ignored anywhere,
//! and errors naming the same input offset Go names
//! (`illegal base64 data at input byte 4`), so clients see the same text.

use std::fmt;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Go's `CorruptInputError`: the offset of the first bad input byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptInput(pub usize);

impl fmt::Display for CorruptInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "illegal base64 data at input byte {}", self.0)
    }
}

impl std::error::Error for CorruptInput {}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn is_newline(c: u8) -> bool {
    c == b'\n' || c == b'\r'
}

pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes like Go's `base64.StdEncoding.DecodeString`.
pub fn decode(s: &str) -> Result<Vec<u8>, CorruptInput> {
    let src = s.as_bytes();
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    loop {
        // One quantum of up to four sextets.
        let mut buf = [0u8; 4];
        let mut len = 4;
        let mut j = 0;
        let mut done = false;
        while j < 4 {
            if si == src.len() {
                match j {
                    0 => return Ok(out),
                    // Padding is required: a short final quantum is corrupt.
                    _ => return Err(CorruptInput(si - j)),
                }
            }
            let c = src[si];
            si += 1;
            if let Some(v) = sextet(c) {
                buf[j] = v;
                j += 1;
                continue;
            }
            if is_newline(c) {
                continue;
            }
            if c != b'=' || j < 2 {
                return Err(CorruptInput(si - 1));
            }
            if j == 2 {
                // "==" expected; the first '=' is consumed.
                while si < src.len() && is_newline(src[si]) {
                    si += 1;
                }
                if si == src.len() {
                    return Err(CorruptInput(src.len()));
                }
                if src[si] != b'=' {
                    return Err(CorruptInput(si - 1));
                }
                si += 1;
            }
            while si < src.len() && is_newline(src[si]) {
                si += 1;
            }
            if si < src.len() {
                // Trailing garbage after padding.
                return Err(CorruptInput(si));
            }
            len = j;
            done = true;
            break;
        }
        let v = u32::from(buf[0]) << 18
            | u32::from(buf[1]) << 12
            | u32::from(buf[2]) << 6
            | u32::from(buf[3]);
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..len - 1]);
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let e = encode(s.as_bytes());
            assert_eq!(decode(&e).unwrap(), s.as_bytes(), "{e}");
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(decode("Zm9v\nYmFy\r\n").unwrap(), b"foobar");
    }

    #[test]
    fn errors_name_go_offsets() {
        assert_eq!(decode("Zm9v!").unwrap_err(), CorruptInput(4));
        assert_eq!(decode("Zm8").unwrap_err(), CorruptInput(0));
        assert_eq!(decode("Zm9vY").unwrap_err(), CorruptInput(4));
        assert_eq!(decode("Zg=").unwrap_err(), CorruptInput(3));
        assert_eq!(decode("Zm8=x").unwrap_err(), CorruptInput(4));
        assert_eq!(decode("=").unwrap_err(), CorruptInput(0));
        assert_eq!(
            decode("not base64").unwrap_err().to_string(),
            "illegal base64 data at input byte 3"
        );
    }
}
