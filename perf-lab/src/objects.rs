//! perf-lab's eBPF object, compiled by build.rs and embedded, and the map layouts it
//! shares with this side.

use aya::include_bytes_aligned;

#[path = "../ebpf/src/layout.rs"]
pub mod layout;

/// Generator (`perf_gen`), ceiling (`perf_redirect`) and sink (`perf_count`).
pub static PERF_PROGRAMS: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-perf-ebpf"));

// SAFETY: repr(C) plain data, no implicit padding (sizes asserted in layout.rs).
unsafe impl aya::Pod for layout::GenConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for layout::RedirectConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for layout::GenTemplate {}
