//! Where the balancer reads VLAN tags: the setting (`--vlan-metadata`), the outcome, and
//! the choice between the device-bound balancer (tags from the packet's metadata too)
//! and the generic one (tags in the frame only), with one warning naming why whenever
//! the setting asked for metadata and did not get it.

use std::path::Path;

use aya::programs::XdpMode;
use lb_common::program_names;
use tracing::warn;

use super::{
    attach_balancer,
    devbound::{generic_balancer, load_balancer_bound, DevboundError},
    load_object, reports_vlan_tag, Attachment, LoaderError, MapSizes, BALANCER_MAPS,
};

/// Whether the balancer should read VLAN tags from the packet's metadata (the setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanMetadata {
    /// Load the balancer device-bound where the XDP mode allows (native), else fall back
    /// to reading tags in the frame only, with a warning.
    Auto,
    /// Read tags in the frame only.
    Off,
}

/// Where the installed balancer reads VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanTagSource {
    /// Device-bound: from the packet's metadata (a tag the NIC stripped, where the driver
    /// reports it) and from the frame.
    MetadataAndFrame,
    /// From the frame only: a tag the NIC stripped is not seen.
    FrameOnly,
}

impl VlanTagSource {
    pub fn as_str(self) -> &'static str {
        match self {
            VlanTagSource::MetadataAndFrame => "metadata+frame",
            VlanTagSource::FrameOnly => "frame",
        }
    }
}

/// Installs the balancer device-bound on `iface` when `setting` and `mode` allow; `None`
/// when they do not or it failed (said once, as a warning), and the caller installs the
/// generic program instead.
pub(super) fn install_bound(
    iface: &str,
    ifindex: u32,
    pin_dir: &Path,
    mode: XdpMode,
    sizes: &MapSizes,
    setting: VlanMetadata,
) -> Option<Attachment> {
    // A device-bound program cannot attach in generic (SKB) mode.
    if setting == VlanMetadata::Off || matches!(mode, XdpMode::Skb) {
        return None;
    }
    let installed = (|| -> Result<Attachment, LoaderError> {
        if !reports_vlan_tag(ifindex).map_err(DevboundError::from)? {
            return Err(DevboundError::DriverReportsNoVlanTag.into());
        }
        // aya creates (or opens) and pins the maps; the program is loaded here.
        let name = program_names::XDP_BALANCER;
        let _maps = load_object(
            pin_dir,
            sizes,
            BALANCER_MAPS,
            generic_balancer()?,
            name,
            |_, _| Ok(()),
        )?;
        let mut prog = load_balancer_bound(pin_dir, ifindex)?;
        attach_balancer(&mut prog, iface, pin_dir, mode)
    })();
    match installed {
        Ok(attachment) => Some(attachment),
        Err(error) => {
            warn!(
                %iface,
                %error,
                "VLAN tags are read from the frame only: the balancer could not be loaded bound \
                 to the interface to read them from the packet's metadata, so a tag the NIC \
                 strips is not seen (turn stripping off: ethtool -K {iface} rxvlan off)"
            );
            None
        }
    }
}
