//! Compiles the eBPF crates for the BPF target with the nightly toolchain and bpf-linker,
//! so `cargo build -p lb-daemon` yields one self-contained binary with the objects inside.
use aya_build::{build_ebpf, Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../common/src");
    println!("cargo:rerun-if-changed=../hashing/src");
    build_ebpf(
        [
            Package {
                name: "lb-xdp",
                root_dir: "../xdp",
                ..Default::default()
            },
            Package {
                name: "lb-tc",
                root_dir: "../tc",
                ..Default::default()
            },
            Package {
                name: "lb-sock",
                root_dir: "../sock",
                ..Default::default()
            },
        ],
        Toolchain::default(),
    )
}
