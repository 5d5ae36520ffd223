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
    GenConfig, GenTemplate, RedirectConfig, GEN_NEW_FLOWS, GEN_REPLAY, OFF_IP_CSUM, OFF_IP_SADDR,
    OFF_TCP_CSUM, OFF_TCP_SPORT, TEMPLATE_LEN,
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

/// Index 0: frames, index 1: bytes.
#[map(name = "PERF_COUNT")]
static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

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

#[xdp]
pub fn perf_gen(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + TEMPLATE_LEN > end {
        return xdp_action::XDP_ABORTED;
    }
    let (Some(cfg), Some(template)) = (GEN_CONFIG.get(0), GEN_TEMPLATE.get(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: TEMPLATE_LEN bytes of packet were checked above; word-sized copies keep the
    // verifier's view simple (7 x 8 + 4 = 60 bytes).
    unsafe {
        let dst = start as *mut u8;
        let src = template.bytes.as_ptr();
        let mut i = 0;
        while i < 7 {
            let word = core::ptr::read_unaligned(src.add(i * 8) as *const u64);
            core::ptr::write_unaligned(dst.add(i * 8) as *mut u64, word);
            i += 1;
        }
        let tail = core::ptr::read_unaligned(src.add(56) as *const u32);
        core::ptr::write_unaligned(dst.add(56) as *mut u32, tail);
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
    let saddr =
        cfg.src_base + ((tuple / u64::from(cfg.port_count)) % u64::from(cfg.src_count)) as u32;

    let (old_hi, old_lo) = split(cfg.tmpl_saddr);
    let (new_hi, new_lo) = split(saddr);
    let ip_csum = csum_replace(
        cfg.tmpl_ip_csum as u16,
        [old_hi, old_lo, 0],
        [new_hi, new_lo, 0],
    );
    // The TCP checksum covers the pseudo header (source address) and the source port.
    let tcp_csum = csum_replace(
        cfg.tmpl_tcp_csum as u16,
        [old_hi, old_lo, cfg.tmpl_sport as u16],
        [new_hi, new_lo, port],
    );
    // SAFETY: all offsets lie inside the TEMPLATE_LEN bytes checked above.
    unsafe {
        let p = start as *mut u8;
        core::ptr::write_unaligned(p.add(OFF_IP_SADDR) as *mut u32, saddr.to_be());
        core::ptr::write_unaligned(p.add(OFF_IP_CSUM) as *mut u16, ip_csum.to_be());
        core::ptr::write_unaligned(p.add(OFF_TCP_SPORT) as *mut u16, port.to_be());
        core::ptr::write_unaligned(p.add(OFF_TCP_CSUM) as *mut u16, tcp_csum.to_be());
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
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(frames) = COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *frames += 1 };
    }
    if let Some(bytes) = COUNT.get_ptr_mut(1) {
        // SAFETY: per-CPU slot.
        unsafe { *bytes += len };
    }
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
