//! Byte search over 64-bit words, the same on every target.
//!
//! `str::find(char)` (core's `memchr`) scans `usize` words: 8 bytes at a time
//! natively but 4 in `wasm32`, where every loop back-edge also pays an epoch
//! check (the plugin's time budget). These scan 16 bytes per iteration with
//! `u64` arithmetic, which Wasm runs natively on a 64-bit host, so a rule
//! spends about the same number of iterations inside the sandbox as outside.

const LO: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Bit 7 of each byte of the result is set exactly where `word`'s byte equals
/// `byte` (no false positives, so the lowest or highest set bit is the match).
#[inline(always)]
fn eq_mask(word: u64, byte: u8) -> u64 {
    let x = word ^ (LO * u64::from(byte));
    // A byte of `x` is zero iff adding 0x7f to its low 7 bits leaves bit 7
    // clear and its own bit 7 is clear; no carry crosses bytes.
    !(((x & LOW7) + LOW7) | x | LOW7)
}

#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// First index of `byte` in `hay`.
pub fn find_byte(hay: &[u8], byte: u8) -> Option<usize> {
    let mut i = 0;
    while i + 16 <= hay.len() {
        let (a, b) = (eq_mask(word(hay, i), byte), eq_mask(word(hay, i + 8), byte));
        if a | b != 0 {
            return Some(if a != 0 {
                i + (a.trailing_zeros() / 8) as usize
            } else {
                i + 8 + (b.trailing_zeros() / 8) as usize
            });
        }
        i += 16;
    }
    hay[i..].iter().position(|&c| c == byte).map(|p| i + p)
}

/// Last index of `byte` in `hay`.
pub fn rfind_byte(hay: &[u8], byte: u8) -> Option<usize> {
    let mut end = hay.len();
    while end >= 16 {
        let (a, b) = (
            eq_mask(word(hay, end - 16), byte),
            eq_mask(word(hay, end - 8), byte),
        );
        if a | b != 0 {
            return Some(if b != 0 {
                end - 8 + (7 - b.leading_zeros() / 8) as usize
            } else {
                end - 16 + (7 - a.leading_zeros() / 8) as usize
            });
        }
        end -= 16;
    }
    hay[..end].iter().rposition(|&c| c == byte)
}

/// First index of the substring `needle` in `hay` (a scan for its first byte,
/// then a comparison at each candidate).
pub fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut i = 0;
    while let Some(off) = find_byte(&hay[i..], first) {
        let at = i + off;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Last index of the substring `needle` in `hay`.
pub fn rfind_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut end = hay.len();
    while let Some(at) = rfind_byte(&hay[..end], first) {
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        end = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every position and length, against the obvious scans.
    #[test]
    fn matches_the_naive_scans_everywhere() {
        let mut buf: Vec<u8> = (0..70u8).map(|i| b'a' + i % 7).collect();
        buf[5] = 0x80;
        buf[40] = 0xff;
        for len in 0..buf.len() {
            let hay = &buf[..len];
            for byte in [b'a', b'c', b'g', b'z', 0x80, 0xff, 0x7f, 0] {
                let want = hay.iter().position(|&c| c == byte);
                assert_eq!(find_byte(hay, byte), want, "find {byte:#x} len {len}");
                let want = hay.iter().rposition(|&c| c == byte);
                assert_eq!(rfind_byte(hay, byte), want, "rfind {byte:#x} len {len}");
            }
        }
        // One match at each position of a long haystack.
        for at in 0..64 {
            let mut hay = vec![b'.'; 64];
            hay[at] = b'<';
            assert_eq!(find_byte(&hay, b'<'), Some(at));
            assert_eq!(rfind_byte(&hay, b'<'), Some(at));
            // Bytes that differ from the needle only in bit 7 or by one are not matches.
            hay[at] = b'<' | 0x80;
            assert_eq!(find_byte(&hay, b'<'), None);
            hay[at] = b'<' + 1;
            assert_eq!(rfind_byte(&hay, b'<'), None);
        }
    }

    #[test]
    fn substrings_first_and_last() {
        let hay = b"x</think>y</think>z </thin";
        assert_eq!(find_bytes(hay, b"</think>"), Some(1));
        assert_eq!(rfind_bytes(hay, b"</think>"), Some(10));
        assert_eq!(find_bytes(hay, b"</thinks>"), None);
        assert_eq!(rfind_bytes(b"", b"<"), None);
        assert_eq!(find_bytes(hay, b""), None);
        let long = "pad ".repeat(40) + "\\boxed{1} and \\boxed{2}";
        assert_eq!(
            rfind_bytes(long.as_bytes(), b"\\boxed"),
            long.rfind("\\boxed")
        );
        assert_eq!(
            find_bytes(long.as_bytes(), b"\\boxed"),
            long.find("\\boxed")
        );
    }
}
