//! The Internet checksum (RFC 1071) over packet bytes, for the answers' ICMP and ICMPv6
//! checksums. Words are summed as loaded (native order): the one's-complement sum is the
//! same in either byte order, so the folded result is stored back as loaded.

use aya_ebpf::programs::XdpContext;

use crate::parse::ptr_at;

/// The most 16-bit words summed in one call: an ICMPv6 header and the longest quote.
const MAX_WORDS: usize = (super::answer::IPV6_QUOTE_MAX + super::answer::ICMP_HLEN) / 2;

/// The unfolded sum of `len` packet bytes from `start` (an odd last byte padded with
/// zero), stopping at the end of the packet.
#[inline(always)]
pub fn sum(ctx: &XdpContext, start: usize, len: usize) -> u32 {
    let words = len / 2;
    let mut total: u32 = 0;
    let mut i = 0;
    while i < MAX_WORDS && i < words {
        let Some(word) = ptr_at::<u16>(ctx, start + 2 * i) else {
            break;
        };
        // SAFETY: ptr_at checked the bounds.
        total += u32::from(unsafe { *word });
        i += 1;
    }
    if len % 2 == 1 {
        if let Some(last) = ptr_at::<u8>(ctx, start + len - 1) {
            // SAFETY: ptr_at checked the bounds.
            total += u32::from(u16::from_ne_bytes([unsafe { *last }, 0]));
        }
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
