//! The internet checksum (RFC 1071).

/// One's-complement sum of `data` as big-endian 16-bit words (odd tail padded
/// with zero), added to `initial`, folded to 16 bits (so a few such sums
/// add up in a `u32` without overflow) but not complemented.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // 32-bit words into a 64-bit accumulator: the one's-complement sum of
    // the 16-bit words is the same once folded (RFC 1071, section 2).
    let mut acc = u64::from(initial);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut chunks = words.remainder().chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    #[allow(clippy::cast_possible_truncation, reason = "folded below 2^17")]
    let folded = acc as u32;
    folded
}

/// Fold a sum to 16 bits and complement it: the checksum field value.
#[inline]
pub fn finish(s: u32) -> u16 {
    // Two folds bring any u32 below 2^16: the first leaves at most 0x1fffe.
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    #[allow(clippy::cast_possible_truncation, reason = "folded below 2^16")]
    let folded = s as u16;
    !folded
}

/// The checksum field `hc` after one 16-bit word it covers changed from
/// `old` to `new` (RFC 1624, eqn. 3), without summing the data again.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    finish(u32::from(!hc) + u32::from(!old) + u32::from(new))
}

/// Checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// The IPv6 pseudo-header's contribution (RFC 8200 section 8.1).
pub fn ipv6_pseudo(src: &[u8; 16], dst: &[u8; 16], len: u32, next_header: u8) -> u32 {
    let s = sum(src, 0);
    let s = sum(dst, s);
    let s = sum(&len.to_be_bytes(), s);
    sum(&[0, 0, 0, next_header], s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to 0xddf2 (folded).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&d, 0)), !0xddf2);
    }

    #[test]
    fn a_valid_header_sums_to_zero() {
        let mut h = [
            0x45, 0, 0, 0x28, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, 7, 198, 51, 100, 10,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn an_incremental_update_equals_a_new_sum() {
        let mut d = [0x08, 0x00, 0, 0, 0x12, 0x34, 0x00, 0x01, 0xab, 0xcd];
        let c = checksum(&d);
        d[2..4].copy_from_slice(&c.to_be_bytes());
        d[0] = 0;
        let updated = update16(c, 0x0800, 0x0000);
        d[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(updated, checksum(&d));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0xab]), checksum(&[0xab, 0x00]));
    }
}
