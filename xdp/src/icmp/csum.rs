//! The Internet checksum (RFC 1071) over packet bytes, for the answers' ICMP and ICMPv6
//! checksums. Words are summed as loaded (native order): the one's-complement sum is the
//! same in either byte order, so the folded result is stored back as loaded.

use aya_ebpf::programs::XdpContext;

/// The most 16-bit words summed in one call: an ICMPv6 header and the longest quote.
const MAX_WORDS: usize = (super::answer::IPV6_QUOTE_MAX + super::answer::ICMP_HLEN) / 2;

/// The unfolded sum of `len` packet bytes from `start` (an odd last byte padded with
/// zero), stopping at the end of the packet.
///
/// One cursor walks the bytes and is checked against the end before every read (the
/// verifier does not relate two pointers built separately from a variable length). An odd
/// last byte is read as the second half of the word that ends with it: a one-byte read
/// compiles to a `cursor < end` check, which the verifier does not accept for a read.
#[inline(always)]
pub fn sum(ctx: &XdpContext, start: usize, len: usize) -> u32 {
    let end = ctx.data_end();
    let words = len / 2;
    let mut cursor = ctx.data() + start;
    let mut total: u32 = 0;
    let mut i = 0;
    while i < MAX_WORDS && i < words {
        if cursor + 2 > end {
            return total;
        }
        // SAFETY: checked against the packet's end just above.
        total += u32::from(unsafe { *(cursor as *const u16) });
        cursor += 2;
        i += 1;
    }
    let last_word = cursor - 1;
    if len % 2 == 1 && words > 0 && last_word + 2 <= end {
        // SAFETY: checked against the packet's end just above; `last_word` is at or after
        // `start` since at least one word was summed.
        let pair = unsafe { *(last_word as *const [u8; 2]) };
        total += u32::from(u16::from_ne_bytes([pair[1], 0]));
    }
    total
}

/// A 16-bit word as it sits on the wire, for pseudo-header fields.
#[inline(always)]
pub fn wire_word(value: u16) -> u32 {
    u32::from(value.to_be())
}

/// The checksum field for a folded-in `sum`.
#[inline(always)]
pub fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
