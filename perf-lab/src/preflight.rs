//! Refuses to run where the measurements cannot be made, naming what is missing.

use std::process::{Command, Stdio};

use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    EbpfLoader,
};

use crate::objects::{layout::PROG_GEN, PERF_PROGRAMS};

#[derive(Debug, thiserror::Error)]
#[error("perf-lab cannot run here:\n  - {}", .missing.join("\n  - "))]
pub struct PreflightError {
    pub missing: Vec<String>,
}

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What a run needs beyond root, namespaces and live frames.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// nft, the iptables restore tools and conntrack: false when only BPF-based peers run.
    pub netfilter: bool,
    /// What the TCP topology uses (TCP and east-west layers).
    pub tcp: bool,
    /// A cgroup v2 mount for the socket programs (east-west layer).
    pub cgroup2: bool,
}

impl Needs {
    pub const ALL: Needs = Needs {
        netfilter: true,
        tcp: true,
        cgroup2: true,
    };
}

/// Checks privileges, tools and kernel features for what `needs` names.
pub fn check(needs: Needs) -> Result<(), PreflightError> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (BPF programs, network namespaces, netfilter)".to_string());
        return Err(PreflightError { missing });
    }
    for (tool, args, package) in [
        ("ip", &["-V"][..], "iproute2"),
        ("nsenter", &["--version"][..], "util-linux"),
        ("sysctl", &["-V"][..], "procps"),
    ] {
        if !have(tool, args) {
            missing.push(format!("`{tool}` (package {package})"));
        }
    }
    if needs.netfilter {
        for (tool, args, package) in [
            ("nft", &["--version"][..], "nftables"),
            ("iptables-legacy-restore", &["--version"][..], "iptables"),
            ("iptables-nft-restore", &["--version"][..], "iptables"),
            ("ip6tables-legacy-restore", &["--version"][..], "iptables"),
            ("ip6tables-nft-restore", &["--version"][..], "iptables"),
            ("conntrack", &["--version"][..], "conntrack"),
        ] {
            if !have(tool, args) {
                missing.push(format!("`{tool}` (package {package})"));
            }
        }
    }
    if needs.tcp && !have("ethtool", &["--version"]) {
        missing.push("`ethtool` (package ethtool; turns off tx checksum offload)".to_string());
    }
    if needs.cgroup2 {
        if let Err(e) = lb_daemon::loader::default_cgroup_root() {
            missing.push(format!(
                "a cgroup v2 mount (ferrolb's socket programs): {e}"
            ));
        }
    }
    if !have("ip", &["netns", "list"]) {
        missing.push("network namespaces (ip netns)".to_string());
    }
    match live_frames_supported() {
        Ok(()) => {}
        Err(e) => missing.push(format!(
            "BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (kernel >= 5.18, BPF enabled): {e}"
        )),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError { missing })
    }
}

/// Loads the generator and runs it once in live-frame mode on the loopback (whose frames
/// go nowhere: the generator's XDP_TX on lo is dropped by the kernel).
fn live_frames_supported() -> Result<(), String> {
    let mut ebpf = EbpfLoader::new()
        .load(PERF_PROGRAMS)
        .map_err(|e| e.to_string())?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_GEN)
        .ok_or("generator missing")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    prog.load().map_err(|e| e.to_string())?;
    // An ARP-less, IP-less frame: the generator's config is empty, so it returns XDP_ABORTED
    // (too short) before touching anything, which still proves the mode is accepted.
    let frame = [0u8; 14];
    let mut ctx = Vec::new();
    for word in [0u32, frame.len() as u32, 0, 1, 0, 0] {
        ctx.extend_from_slice(&word.to_ne_bytes());
    }
    prog.test_run(TestRunOptions {
        data_in: Some(&frame),
        ctx_in: Some(&ctx),
        repeat: 1,
        attrs: TestRunAttrs::new().xdp_live_frames(1),
        ..Default::default()
    })
    .map(drop)
    .map_err(|e| e.to_string())
}
