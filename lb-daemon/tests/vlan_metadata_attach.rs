//! Installing the balancer device-bound (VLAN tags from the packet's metadata) and
//! falling back, on a veth pair in a namespace of its own: what `install_balancer` says
//! it did is what the kernel runs (`attached_tag_source`, which `ferrolb list` prints),
//! across fresh attaches and in-place swaps of the pinned link.

mod support;

use std::{fs::File, os::fd::AsRawFd, path::Path};

use aya::programs::XdpMode;
use lb_daemon::loader::{self, Attachment, MapSizes, VlanMetadata, VlanTagSource};
use support::{require_root, PinDir};

/// A network namespace with a veth pair (`vm-a` up) and a tap (`vm-tap`), deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Self {
        let _ = lb_lab::run("ip", &["netns", "del", name]);
        lb_lab::run("ip", &["netns", "add", name]).expect("netns");
        let me = Self(name.to_string());
        for args in [
            &[
                "link", "add", "vm-a", "type", "veth", "peer", "name", "vm-b",
            ][..],
            &["link", "set", "vm-a", "up"],
            &["link", "set", "vm-b", "up"],
            // tun/tap: native XDP, but no XDP metadata ops.
            &["tuntap", "add", "mode", "tap", "name", "vm-tap"],
            &["link", "set", "vm-tap", "up"],
        ] {
            let mut full = vec!["-n", name];
            full.extend_from_slice(args);
            lb_lab::run("ip", &full).expect("veth pair");
        }
        me
    }

    /// Moves the calling thread (this test's own) into the namespace.
    fn enter(&self) {
        let file = File::open(format!("/run/netns/{}", self.0)).expect("netns file");
        // SAFETY: setns on a valid namespace file descriptor; it changes only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = lb_lab::run("ip", &["netns", "del", &self.0]);
    }
}

fn install(pin: &Path, mode: XdpMode, setting: VlanMetadata) -> (Attachment, VlanTagSource) {
    install_on("vm-a", pin, mode, setting)
}

fn install_on(
    iface: &str,
    pin: &Path,
    mode: XdpMode,
    setting: VlanMetadata,
) -> (Attachment, VlanTagSource) {
    loader::install_balancer(iface, pin, mode, &MapSizes::default(), setting)
        .expect("install balancer")
}

fn running(pin: &Path) -> VlanTagSource {
    loader::attached_tag_source(&pin.join(loader::XDP_LINK_PIN))
        .expect("ask the kernel")
        .expect("a link is pinned")
}

#[test]
fn the_balancer_reads_vlan_tags_from_metadata_where_mode_and_driver_allow_and_says_so_elsewhere() {
    if !require_root("device-bound XDP on veth") {
        return;
    }
    let netns = Netns::create(&format!("vm-meta{}", std::process::id()));
    // bpffs is the same in every namespace; the pins go first on drop, then the namespace.
    let pin = PinDir::new("vm-meta");
    netns.enter();

    // Native mode, the default setting: device-bound, and the kernel runs that program.
    let got = install(&pin.path, XdpMode::Driver, VlanMetadata::Auto);
    assert_eq!(got, (Attachment::New, VlanTagSource::MetadataAndFrame));
    assert_eq!(running(&pin.path), VlanTagSource::MetadataAndFrame);

    // Switched off: the generic program swapped into the same link.
    let got = install(&pin.path, XdpMode::Driver, VlanMetadata::Off);
    assert_eq!(got, (Attachment::Replaced, VlanTagSource::FrameOnly));
    assert_eq!(running(&pin.path), VlanTagSource::FrameOnly);

    // And back: a device-bound program swaps into a native-mode link.
    let got = install(&pin.path, XdpMode::Driver, VlanMetadata::Auto);
    assert_eq!(got, (Attachment::Replaced, VlanTagSource::MetadataAndFrame));
    assert_eq!(running(&pin.path), VlanTagSource::MetadataAndFrame);

    // Generic (SKB) mode cannot run a device-bound program: frame only, said so.
    support::remove_pins(&pin.path);
    let got = install(&pin.path, XdpMode::Skb, VlanMetadata::Auto);
    assert_eq!(got, (Attachment::New, VlanTagSource::FrameOnly));
    assert_eq!(running(&pin.path), VlanTagSource::FrameOnly);
    // The kernel refuses to swap a device-bound program into a generic-mode link; the
    // loader falls back instead of failing.
    let got = install(&pin.path, XdpMode::Driver, VlanMetadata::Auto);
    assert_eq!(got, (Attachment::Replaced, VlanTagSource::FrameOnly));
    assert_eq!(running(&pin.path), VlanTagSource::FrameOnly);
}
