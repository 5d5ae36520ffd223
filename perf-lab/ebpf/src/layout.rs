//! Map value layouts shared by the eBPF programs and perf-lab's userspace, which includes
//! this file with `#[path]`, so both sides compile the same definitions.

/// Generator mode: send the template unchanged.
pub const GEN_FIXED: u32 = 0;
/// Generator mode: every frame gets a 5-tuple never sent before in this process.
pub const GEN_NEW_FLOWS: u32 = 1;
/// Generator mode: cycle through `flows` tuples (established flows).
pub const GEN_REPLAY: u32 = 2;

/// Template family: Ethernet, IPv4 without options, TCP.
pub const GEN_FAMILY_V4: u32 = 4;
/// Template family: Ethernet, IPv6 without extension headers, TCP.
pub const GEN_FAMILY_V6: u32 = 6;

/// Byte offsets inside the IPv4 template: Ethernet, IPv4 without options, TCP.
pub const OFF_IP_CSUM: usize = 14 + 10;
pub const OFF_IP_SADDR: usize = 14 + 12;
pub const OFF_TCP_SPORT: usize = 14 + 20;
pub const OFF_TCP_CSUM: usize = 14 + 20 + 16;
/// IPv4 frames are the Ethernet minimum (60 bytes without FCS): headers plus 6 bytes of
/// padding.
pub const TEMPLATE_LEN: usize = 60;
/// Byte offsets inside the IPv6 template. The source address varies in its low 32 bits
/// (the last four bytes of the 16), so the same arithmetic as IPv4's serves; IPv6 has no
/// header checksum, the TCP checksum's pseudo header covers the address.
pub const OFF_IP6_SADDR_LOW: usize = 14 + 8 + 12;
pub const OFF_TCP6_SPORT: usize = 14 + 40;
pub const OFF_TCP6_CSUM: usize = 14 + 40 + 16;
/// IPv6 frames: 14 + 40 + 20 bytes of headers, no padding needed.
pub const TEMPLATE_LEN_V6: usize = 74;
/// Room in the template map for either family.
pub const TEMPLATE_MAX: usize = 80;

/// The frame the generator writes over every live frame before varying it: a page of the
/// live-frame pool is recycled without being reset, so it holds whatever the DUT left in
/// it (a decremented TTL, an outer header pushed in front, rewritten MACs). Its TCP flags
/// are sent as they are: userspace builds a SYN template for new flows and an ACK
/// template for established ones (ferrolb records a flow on its first ACK, never on a
/// SYN), each with its checksum computed over those flags, so the incremental patches
/// below stay right.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenTemplate {
    /// The frame, `TEMPLATE_LEN` (IPv4) or `TEMPLATE_LEN_V6` bytes used, the rest zero.
    pub bytes: [u8; TEMPLATE_MAX],
}

/// How the generator rewrites the template frame. Source address and port are derived from
/// a sequence number; the checksums are patched from the template's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    pub mode: u32,
    /// `GEN_FAMILY_V4` or `GEN_FAMILY_V6`: which template layout the offsets follow.
    pub family: u32,
    /// Number of distinct tuples in replay mode.
    pub flows: u32,
    /// First source address (IPv6: its low 32 bits), host byte order.
    pub src_base: u32,
    pub src_count: u32,
    pub port_base: u32,
    pub port_count: u32,
    /// The template's source address (IPv6: its low 32 bits; host order), source port and
    /// checksums as they sit in the template read as big-endian numbers (no IP checksum
    /// for IPv6).
    pub tmpl_saddr: u32,
    pub tmpl_sport: u32,
    pub tmpl_ip_csum: u32,
    pub tmpl_tcp_csum: u32,
}
const _: () = assert!(core::mem::size_of::<GenConfig>() == 44);

/// Where the ceiling program sends every frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectConfig {
    pub ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<RedirectConfig>() == 16);

/// Slots of the sink's counter: delivered frames and bytes, and the IPv6 control frames
/// (neighbour discovery, MLD: ICMPv6 or a hop-by-hop header first) the DUT's own stack
/// sends, which are dropped uncounted in the first two: the generator never sends them.
pub const COUNT_FRAMES: u32 = 0;
pub const COUNT_BYTES: u32 = 1;
pub const COUNT_IGNORED: u32 = 2;

/// Map and program names, used by both sides.
pub const MAP_GEN_CONFIG: &str = "PERF_GEN_CONFIG";
pub const MAP_GEN_SEQ: &str = "PERF_GEN_SEQ";
pub const MAP_GEN_TEMPLATE: &str = "PERF_GEN_TMPL";
pub const MAP_REDIRECT_CONFIG: &str = "PERF_REDIRECT_CFG";
pub const MAP_COUNT: &str = "PERF_COUNT";
pub const PROG_GEN: &str = "perf_gen";
pub const PROG_REDIRECT: &str = "perf_redirect";
pub const PROG_COUNT: &str = "perf_count";
