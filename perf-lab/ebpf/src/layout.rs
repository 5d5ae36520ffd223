//! Map value layouts shared by the eBPF programs and perf-lab's userspace, which includes
//! this file with `#[path]`, so both sides compile the same definitions.

/// Generator mode: send the template unchanged.
pub const GEN_FIXED: u32 = 0;
/// Generator mode: every frame gets a 5-tuple never sent before in this process.
pub const GEN_NEW_FLOWS: u32 = 1;
/// Generator mode: cycle through `flows` tuples (established flows).
pub const GEN_REPLAY: u32 = 2;

/// Byte offsets inside the generator's template: Ethernet, IPv4 without options, TCP.
pub const OFF_IP_CSUM: usize = 14 + 10;
pub const OFF_IP_SADDR: usize = 14 + 12;
pub const OFF_TCP_SPORT: usize = 14 + 20;
pub const OFF_TCP_CSUM: usize = 14 + 20 + 16;
/// Frames are the Ethernet minimum (60 bytes without FCS): headers plus 6 bytes of padding.
pub const TEMPLATE_LEN: usize = 60;

/// The frame the generator writes over every live frame before varying it: a page of the
/// live-frame pool is recycled without being reset, so it holds whatever the DUT left in
/// it (a decremented TTL, an outer header pushed in front, rewritten MACs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenTemplate {
    pub bytes: [u8; TEMPLATE_LEN],
}

/// How the generator rewrites the template frame. Source address and port are derived from
/// a sequence number; the checksums are patched from the template's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    pub mode: u32,
    /// Number of distinct tuples in replay mode.
    pub flows: u32,
    /// First source address, host byte order.
    pub src_base: u32,
    pub src_count: u32,
    pub port_base: u32,
    pub port_count: u32,
    /// The template's source address (host order), source port and checksums as they sit in
    /// the template read as big-endian numbers.
    pub tmpl_saddr: u32,
    pub tmpl_sport: u32,
    pub tmpl_ip_csum: u32,
    pub tmpl_tcp_csum: u32,
}
const _: () = assert!(core::mem::size_of::<GenConfig>() == 40);

/// Where the ceiling program sends every frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectConfig {
    pub ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<RedirectConfig>() == 16);

/// Map and program names, used by both sides.
pub const MAP_GEN_CONFIG: &str = "PERF_GEN_CONFIG";
pub const MAP_GEN_SEQ: &str = "PERF_GEN_SEQ";
pub const MAP_GEN_TEMPLATE: &str = "PERF_GEN_TMPL";
pub const MAP_REDIRECT_CONFIG: &str = "PERF_REDIRECT_CFG";
pub const MAP_COUNT: &str = "PERF_COUNT";
pub const PROG_GEN: &str = "perf_gen";
pub const PROG_REDIRECT: &str = "perf_redirect";
pub const PROG_COUNT: &str = "perf_count";
