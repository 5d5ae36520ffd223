//! Compiles perf-lab's eBPF programs (generator, ceiling, counter) for the BPF target and
//! embeds them, as lb-daemon's build.rs does for the datapath.
use aya_build::{build_ebpf, Package, Toolchain};

fn main() -> anyhow::Result<()> {
    build_ebpf(
        [Package {
            name: "lb-perf-ebpf",
            root_dir: "ebpf",
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
