//! Helpers shared by the kernel tests: privilege checks and pin directories that clean up
//! after themselves, also when a test fails.
#![allow(dead_code)]

pub mod flows;
pub mod hold;
pub mod xdp;

use std::path::{Path, PathBuf};

#[allow(unused_imports)] // each test binary uses its own subset
pub use lb_lab::{require_root, ScratchDir};

/// The daemon cargo built for this package's tests, and the lab tools (`ferrolb-lab`, of
/// the `lb-lab` package) beside it. Cargo builds another package's binary only in a
/// workspace run, so the lab tools are (re)built here, with the same cargo, profile and
/// target directory: a no-op when they are current, and never a stale binary.
pub fn bins() -> lb_lab::Binaries {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let ferrolb = PathBuf::from(env!("CARGO_BIN_EXE_ferrolb"));
    let lab = ferrolb.with_file_name("ferrolb-lab");
    BUILT.call_once(|| {
        let profile_dir = ferrolb
            .parent()
            .expect("the binary is in a profile directory");
        let target_dir = profile_dir
            .parent()
            .expect("profile directories are in the target dir");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("unexpected binary path {}", ferrolb.display()),
        };
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "lb-lab", "--bin", "ferrolb-lab"])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("run cargo to build the lab tools");
        assert!(status.success(), "cargo build -p lb-lab failed");
    });
    lb_lab::Binaries { ferrolb, lab }
}

/// A config file's text: a TCP and a UDP service on the lab's VIP, both over `backends`.
pub fn tcp_and_udp_config(backends: &[impl AsRef<str>], tcp_port: u16, udp_port: u16) -> String {
    let list = backend_list(backends);
    let vip = lb_lab::VIP;
    format!(
        "services:\n  - {{name: web, vip: {vip}, port: {tcp_port}, protocol: tcp, backends: [{list}]}}\n  - {{name: echo, vip: {vip}, port: {udp_port}, protocol: udp, backends: [{list}]}}\n"
    )
}

/// Backends of weight 1 as a YAML flow list's items: `{address: A}, {address: B}`.
pub fn backend_list(backends: &[impl AsRef<str>]) -> String {
    backends
        .iter()
        .map(|b| format!("{{address: {}}}", b.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces the file in one rename: the documented way to update a config.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
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

/// Packets the datapath counted for `reason` in `subsystem` (`xdp`, `tc` or `sock`), as
/// `ferrolb --pin-dir PIN_DIR stats -o json` reports them.
pub fn datapath_counter(ferrolb: &Path, pin_dir: &Path, subsystem: &str, reason: &str) -> u64 {
    let out = lb_lab::run(
        &ferrolb.display().to_string(),
        &[
            "--pin-dir",
            &pin_dir.display().to_string(),
            "stats",
            "-o",
            "json",
        ],
    )
    .expect("ferrolb stats");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("stats JSON");
    stats[subsystem]
        .as_array()
        .and_then(|reasons| reasons.iter().find(|r| r["reason"] == reason))
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or_else(|| panic!("no {subsystem} counter {reason} in {stats}"))
}
