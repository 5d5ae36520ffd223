//! Helpers shared by the kernel tests: privilege checks and pin directories that clean up
//! after themselves, also when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[allow(unused_imports)] // each test binary uses its own subset
pub use lb_lab::{require_root, ScratchDir};

/// The two binaries cargo built for this package's tests.
pub fn bins() -> lb_lab::Binaries {
    lb_lab::Binaries {
        ferrolb: PathBuf::from(env!("CARGO_BIN_EXE_ferrolb")),
        lab: PathBuf::from(env!("CARGO_BIN_EXE_ferrolb-lab")),
    }
}

/// A pin directory under bpffs, removed with everything in it on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(tag: &str) -> Self {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/ferrolb-test-{tag}-{}",
            std::process::id()
        ));
        remove_pins(&path);
        Self { path }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_pins(&self.path);
    }
}

pub fn remove_pins(path: &Path) {
    let _ = lb_daemon::loader::uninstall(path);
    let _ = std::fs::remove_dir_all(path);
}

/// `inner` (an Ethernet frame) wrapped in an outer IPv4 header from the LB to `outer_dst`
/// with protocol `outer_proto`, as the balancer sends it.
pub fn encapsulate(
    inner: &[u8],
    outer_proto: u8,
    outer_src: [u8; 4],
    outer_dst: [u8; 4],
) -> Vec<u8> {
    let mut ip = etherparse::Ipv4Header::new(
        (inner.len() - 14) as u16,
        64,
        etherparse::IpNumber(outer_proto),
        outer_src,
        outer_dst,
    )
    .unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    let mut v = inner[..14].to_vec();
    ip.write(&mut v).unwrap();
    v.extend_from_slice(&inner[14..]);
    v
}
