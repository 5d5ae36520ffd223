//! perf-lab's eBPF programs: the live-frame traffic generator, the bare-redirect ceiling and
//! the counting sink at the backends. One object; every load gets its own maps, so each
//! backend namespace counts on its own.
#![no_std]
#![no_main]

// Names and constants there are shared with userspace; not all are used on this side.
#[allow(dead_code)]
mod layout;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_redirect,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use layout::{
    GenConfig, GenTemplate, RedirectConfig, COUNT_BYTES, COUNT_FRAMES, COUNT_IGNORED,
    GEN_FAMILY_V6, GEN_NEW_FLOWS, GEN_REPLAY, OFF_IP6_SADDR_LOW, OFF_IP_CSUM, OFF_IP_SADDR,
    OFF_TCP6_CSUM, OFF_TCP6_SPORT, OFF_TCP_CSUM, OFF_TCP_SPORT, TEMPLATE_LEN, TEMPLATE_LEN_V6,
};

#[map(name = "PERF_GEN_CONFIG")]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

/// The generator's sequence number. A plain array, not per CPU: userspace pins the
/// generator thread to one CPU, and a per-CPU counter would restart from another CPU's
/// value (repeating tuples) if the thread ever ran elsewhere.
#[map(name = "PERF_GEN_TMPL")]
static GEN_TEMPLATE: Array<GenTemplate> = Array::with_max_entries(1, 0);

#[map(name = "PERF_GEN_SEQ")]
static GEN_SEQ: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "PERF_REDIRECT_CFG")]
static REDIRECT_CONFIG: Array<RedirectConfig> = Array::with_max_entries(1, 0);

/// `COUNT_FRAMES`, `COUNT_BYTES`, `COUNT_IGNORED` (see layout.rs).
#[map(name = "PERF_COUNT")]
static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(3, 0);

/// Ones' complement update of a checksum (RFC 1624, eqn. 3) when 16-bit words change.
#[inline(always)]
fn csum_replace(csum: u16, old: [u16; 3], new: [u16; 3]) -> u16 {
    let mut sum = u32::from(!csum);
    let mut i = 0;
    while i < 3 {
        sum += u32::from(!old[i]) + u32::from(new[i]);
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[inline(always)]
fn split(addr: u32) -> (u16, u16) {
    ((addr >> 16) as u16, addr as u16)
}

/// Copies `WORDS` u64s and then `TAIL` (0, 2 or 4) bytes from `src` to `dst`: word-sized
/// copies keep the verifier's view simple.
///
/// # Safety
/// Both pointers must be valid for `WORDS * 8 + TAIL` bytes.
#[inline(always)]
unsafe fn copy_template<const WORDS: usize, const TAIL: usize>(dst: *mut u8, src: *const u8) {
    let mut i = 0;
    while i < WORDS {
        let word = core::ptr::read_unaligned(src.add(i * 8) as *const u64);
        core::ptr::write_unaligned(dst.add(i * 8) as *mut u64, word);
        i += 1;
    }
    let at = WORDS * 8;
    if TAIL == 4 {
        let tail = core::ptr::read_unaligned(src.add(at) as *const u32);
        core::ptr::write_unaligned(dst.add(at) as *mut u32, tail);
    } else if TAIL == 2 {
        let tail = core::ptr::read_unaligned(src.add(at) as *const u16);
        core::ptr::write_unaligned(dst.add(at) as *mut u16, tail);
    }
}

const _: () = assert!(7 * 8 + 4 == TEMPLATE_LEN && 9 * 8 + 2 == TEMPLATE_LEN_V6);

#[xdp]
pub fn perf_gen(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let (Some(cfg), Some(template)) = (GEN_CONFIG.get(0), GEN_TEMPLATE.get(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    let v6 = cfg.family == GEN_FAMILY_V6;
    // SAFETY: each branch checks the bytes of packet it copies (constant lengths, which
    // the verifier follows); the template holds TEMPLATE_MAX bytes.
    unsafe {
        let dst = start as *mut u8;
        let src = template.bytes.as_ptr();
        if v6 {
            if start + TEMPLATE_LEN_V6 > end {
                return xdp_action::XDP_ABORTED;
            }
            copy_template::<9, 2>(dst, src);
        } else {
            if start + TEMPLATE_LEN > end {
                return xdp_action::XDP_ABORTED;
            }
            copy_template::<7, 4>(dst, src);
        }
    }
    let Some(seq_slot) = GEN_SEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: map value pointer from a successful lookup; one writer (see GEN_SEQ).
    let seq = unsafe {
        let seq = *seq_slot;
        *seq_slot = seq + 1;
        seq
    };
    let tuple = match cfg.mode {
        GEN_NEW_FLOWS => seq,
        GEN_REPLAY if cfg.flows > 0 => seq % u64::from(cfg.flows),
        _ => return xdp_action::XDP_TX,
    };
    if cfg.port_count == 0 || cfg.src_count == 0 {
        return xdp_action::XDP_ABORTED;
    }
    let port = (cfg.port_base + (tuple % u64::from(cfg.port_count)) as u32) as u16;
    // IPv4: the whole address; IPv6: its low 32 bits.
    let saddr =
        cfg.src_base + ((tuple / u64::from(cfg.port_count)) % u64::from(cfg.src_count)) as u32;

    let (old_hi, old_lo) = split(cfg.tmpl_saddr);
    let (new_hi, new_lo) = split(saddr);
    // The TCP checksum covers the pseudo header (source address) and the source port.
    let tcp_csum = csum_replace(
        cfg.tmpl_tcp_csum as u16,
        [old_hi, old_lo, cfg.tmpl_sport as u16],
        [new_hi, new_lo, port],
    );
    let p = start as *mut u8;
    if v6 {
        if start + TEMPLATE_LEN_V6 > end {
            return xdp_action::XDP_ABORTED;
        }
        // SAFETY: all offsets lie inside the TEMPLATE_LEN_V6 bytes checked above.
        unsafe {
            core::ptr::write_unaligned(p.add(OFF_IP6_SADDR_LOW) as *mut u32, saddr.to_be());
            core::ptr::write_unaligned(p.add(OFF_TCP6_SPORT) as *mut u16, port.to_be());
            core::ptr::write_unaligned(p.add(OFF_TCP6_CSUM) as *mut u16, tcp_csum.to_be());
        }
    } else {
        if start + TEMPLATE_LEN > end {
            return xdp_action::XDP_ABORTED;
        }
        let ip_csum = csum_replace(
            cfg.tmpl_ip_csum as u16,
            [old_hi, old_lo, 0],
            [new_hi, new_lo, 0],
        );
        // SAFETY: all offsets lie inside the TEMPLATE_LEN bytes checked above.
        unsafe {
            core::ptr::write_unaligned(p.add(OFF_IP_SADDR) as *mut u32, saddr.to_be());
            core::ptr::write_unaligned(p.add(OFF_IP_CSUM) as *mut u16, ip_csum.to_be());
            core::ptr::write_unaligned(p.add(OFF_TCP_SPORT) as *mut u16, port.to_be());
            core::ptr::write_unaligned(p.add(OFF_TCP_CSUM) as *mut u16, tcp_csum.to_be());
        }
    }
    // In live-frame mode XDP_TX sends the frame out of the ctx's ingress interface.
    xdp_action::XDP_TX
}

/// The ceiling: rewrite the MACs and redirect, nothing else.
#[xdp]
pub fn perf_redirect(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 14 > end {
        return xdp_action::XDP_DROP;
    }
    let Some(cfg) = REDIRECT_CONFIG.get(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: the 14 Ethernet header bytes were checked above.
    unsafe {
        let p = start as *mut u8;
        core::ptr::write_unaligned(p as *mut [u8; 6], cfg.dst_mac);
        core::ptr::write_unaligned(p.add(6) as *mut [u8; 6], cfg.src_mac);
        bpf_redirect(cfg.ifindex, 0) as u32
    }
}

/// The sink at the backends: counts what arrives and drops it, so the count is exactly the
/// delivered frames and nothing above XDP spends CPU on them.
#[xdp]
pub fn perf_count(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let len = (end - start) as u64;
    if is_ipv6_control(start, end) {
        if let Some(ignored) = COUNT.get_ptr_mut(COUNT_IGNORED) {
            // SAFETY: per-CPU slot.
            unsafe { *ignored += 1 };
        }
        return xdp_action::XDP_DROP;
    }
    if let Some(frames) = COUNT.get_ptr_mut(COUNT_FRAMES) {
        // SAFETY: per-CPU slot.
        unsafe { *frames += 1 };
    }
    if let Some(bytes) = COUNT.get_ptr_mut(COUNT_BYTES) {
        // SAFETY: per-CPU slot.
        unsafe { *bytes += len };
    }
    xdp_action::XDP_DROP
}

/// An IPv6 frame whose first next header is ICMPv6 (58) or hop-by-hop options (0, as MLD
/// reports carry): neighbour discovery and multicast listener chatter of the DUT's own
/// IPv6 stack, never a generator frame (those are TCP, or IP6IP6 after ferrolb).
#[inline(always)]
fn is_ipv6_control(start: usize, end: usize) -> bool {
    if start + 14 + 8 > end {
        return false;
    }
    // SAFETY: 22 bytes checked above.
    let (ether_type, next) = unsafe {
        let p = start as *const u8;
        (
            u16::from_be(core::ptr::read_unaligned(p.add(12) as *const u16)),
            *p.add(14 + 6),
        )
    };
    ether_type == 0x86dd && (next == 58 || next == 0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
