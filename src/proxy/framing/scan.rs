//! The two byte scans a head is mostly made of: how long a token runs (a field name), and where
//! the first control byte is (the end of a field value, a target or a reason). Sixteen bytes at
//! a time with SSE2 and SSSE3 where the processor has them, eight at a time otherwise.

/// Token characters (RFC 9110 5.6.2): method, field names, list elements.
pub(super) static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = matches!(c as u8,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
            | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z');
        c += 1;
    }
    t
};

pub(super) fn is_tchar(c: u8) -> bool {
    TCHAR[c as usize]
}

/// How many bytes at the start of `bytes` are token characters.
pub(super) fn token_len(bytes: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 && std::arch::is_x86_feature_detected!("ssse3") {
        return x86::token_len(bytes);
    }
    token_len_bytewise(bytes)
}

fn token_len_bytewise(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&c| !is_tchar(c))
        .unwrap_or(bytes.len())
}

/// Where the first byte below `limit` (at most 0x80), or DEL, is: a control byte, or with a
/// `limit` of 0x21 a space too.
pub(super) fn find_stop(bytes: &[u8], limit: u8) -> Option<usize> {
    debug_assert!(limit <= 0x80);
    #[cfg(target_arch = "x86_64")]
    {
        let (at, found) = x86::find_stop(bytes, limit);
        if found {
            return Some(at);
        }
        find_stop_words(&bytes[at..], limit).map(|n| at + n)
    }
    #[cfg(not(target_arch = "x86_64"))]
    find_stop_words(bytes, limit)
}

/// [`find_stop`] eight bytes at a time in a `u64`.
fn find_stop_words(bytes: &[u8], limit: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("chunks of 8"));
        // A byte's high bit is set where it is below `limit` (or DEL), and wrongly only above
        // such a byte, where a borrow runs on: the lowest one set is always right.
        let below = x.wrapping_sub(ONES * u64::from(limit)) & !x & HIGH;
        let del = x ^ (ONES * 0x7f);
        let del = del.wrapping_sub(ONES) & !del & HIGH;
        let hits = below | del;
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = words.remainder();
    rest.iter()
        .position(|&c| c < limit || c == 0x7f)
        .map(|n| at + n)
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use super::TCHAR;

    /// For each high nibble, one bit (0 where no byte with that high nibble is a token
    /// character); for each low nibble, the bits of the high nibbles that make a token
    /// character with it. A byte is one when `LOW[low] & HIGH[high]` is not 0.
    const TABLES: ([u8; 16], [u8; 16]) = {
        let mut low = [0u8; 16];
        let mut high = [0u8; 16];
        let mut bit = 0;
        let mut h = 0;
        while h < 16 {
            let mut any = false;
            let mut l = 0;
            while l < 16 {
                if TCHAR[h * 16 + l] {
                    low[l] |= 1 << bit;
                    any = true;
                }
                l += 1;
            }
            if any {
                high[h] = 1 << bit;
                bit += 1;
            }
            h += 1;
        }
        // token characters have six high nibbles (2 to 7): six bits
        assert!(bit <= 8);
        (low, high)
    };

    /// Token bytes at the start of `bytes`, which holds at least 16; the caller has checked
    /// that the processor has SSSE3.
    pub(super) fn token_len(bytes: &[u8]) -> usize {
        debug_assert!(bytes.len() >= 16);
        // SAFETY: the caller has checked that the processor has SSSE3.
        unsafe { token_len_ssse3(bytes) }
    }

    #[target_feature(enable = "ssse3")]
    unsafe fn token_len_ssse3(bytes: &[u8]) -> usize {
        // SAFETY (the loads): each reads the 16 bytes at `at`, which `at + 16 <= len` keeps
        // inside `bytes`; the last block overlaps the one before it instead of reading past.
        unsafe {
            let low = _mm_loadu_si128(TABLES.0.as_ptr().cast());
            let high = _mm_loadu_si128(TABLES.1.as_ptr().cast());
            let nibble = _mm_set1_epi8(0x0f);
            let mut at = 0;
            loop {
                let x = _mm_loadu_si128(bytes.as_ptr().add(at).cast());
                let l = _mm_shuffle_epi8(low, _mm_and_si128(x, nibble));
                let h = _mm_shuffle_epi8(high, _mm_and_si128(_mm_srli_epi16(x, 4), nibble));
                let other = _mm_cmpeq_epi8(_mm_and_si128(l, h), _mm_setzero_si128());
                let mask = _mm_movemask_epi8(other) as u32;
                if mask != 0 {
                    return at + mask.trailing_zeros() as usize;
                }
                if at + 16 == bytes.len() {
                    return bytes.len();
                }
                // the next block, or the last 16 bytes (rechecking some: all tokens)
                at = (at + 16).min(bytes.len() - 16);
            }
        }
    }

    /// [`super::find_stop`] over the whole 16-byte blocks of `bytes` (SSE2 is part of
    /// x86_64): where the first stop byte is and `true`, or how far it looked and `false`.
    pub(super) fn find_stop(bytes: &[u8], limit: u8) -> (usize, bool) {
        let mut at = 0;
        // SAFETY: SSE2 is always there on x86_64; each load reads the 16 bytes at `at`, which
        // `at + 16 <= len` keeps inside `bytes`.
        unsafe {
            let top = _mm_set1_epi8((limit - 1) as i8);
            let del = _mm_set1_epi8(0x7f);
            while at + 16 <= bytes.len() {
                let x = _mm_loadu_si128(bytes.as_ptr().add(at).cast());
                // x <= limit - 1, unsigned: the minimum of the two is x itself
                let below = _mm_cmpeq_epi8(_mm_min_epu8(x, top), x);
                let stop = _mm_or_si128(below, _mm_cmpeq_epi8(x, del));
                let mask = _mm_movemask_epi8(stop) as u32;
                if mask != 0 {
                    return (at + mask.trailing_zeros() as usize, true);
                }
                at += 16;
            }
        }
        (at, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, at every position of scans of every length up to 40, in a run of
    /// token bytes: the fast scans agree with a byte at a time.
    #[test]
    fn scans_agree_with_bytewise() {
        for len in 0..40 {
            for pos in 0..len {
                for c in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = c;
                    assert_eq!(token_len(&v), token_len_bytewise(&v), "{len} {pos} {c:#x}");
                    for limit in [b' ', b' ' + 1] {
                        let slow = v.iter().position(|&b| b < limit || b == 0x7f);
                        assert_eq!(find_stop(&v, limit), slow, "{len} {pos} {c:#x}");
                        assert_eq!(find_stop_words(&v, limit), slow, "{len} {pos} {c:#x}");
                    }
                }
            }
            let v = vec![b'a'; len];
            assert_eq!(token_len(&v), len);
            assert_eq!(find_stop(&v, b' '), None);
        }
    }
}
