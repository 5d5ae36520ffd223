//! Whether an interface's driver reports the VLAN tag in XDP metadata: the kernel's
//! `netdev` generic-netlink family lists a device's `xdp-rx-metadata-features`, set for
//! each metadata op the driver implements. A device-bound balancer on a driver without
//! `vlan-tag` would load and attach but never see a stripped tag (the kfunc answers "not
//! supported"), so the loader asks first.

use std::io;

use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

/// The generic-netlink controller, which names families' ids.
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_RX_METADATA_FEATURES: u16 = 5;
const NETDEV_XDP_RX_METADATA_VLAN_TAG: u64 = 4;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
/// nlmsghdr and genlmsghdr.
const HEADERS: usize = 16 + 4;

#[derive(Debug, thiserror::Error)]
pub enum RxMetadataError {
    #[error("generic netlink: {0}")]
    Netlink(#[from] io::Error),
    #[error("the kernel has no netdev generic-netlink family (before 6.3)")]
    NoFamily,
    #[error("the kernel's answer to {0} is malformed")]
    Malformed(&'static str),
}

/// Whether the driver of interface `ifindex` implements the VLAN-tag metadata op.
pub fn reports_vlan_tag(ifindex: u32) -> Result<bool, RxMetadataError> {
    let mut socket = Socket::new(NETLINK_GENERIC)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let family = request(
        &socket,
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        &attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0"),
    )
    .map_err(|e| match e {
        RxMetadataError::Netlink(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            RxMetadataError::NoFamily
        }
        e => e,
    })?;
    let id = find(&family, CTRL_ATTR_FAMILY_ID)
        .and_then(|v| Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?)))
        .ok_or(RxMetadataError::Malformed("the netdev family's id"))?;
    let device = request(
        &socket,
        id,
        NETDEV_CMD_DEV_GET,
        &attr(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes()),
    )?;
    // Absent on kernels that predate the attribute: no metadata op is reported then.
    let Some(features) = find(&device, NETDEV_A_DEV_XDP_RX_METADATA_FEATURES) else {
        return Ok(false);
    };
    let features = features
        .get(..8)
        .and_then(|v| v.try_into().ok())
        .map(u64::from_ne_bytes)
        .ok_or(RxMetadataError::Malformed("the device's metadata features"))?;
    Ok(features & NETDEV_XDP_RX_METADATA_VLAN_TAG != 0)
}

/// One netlink attribute, padded to 4 bytes.
fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// Sends one generic-netlink request and returns the attributes of its answer.
fn request(
    socket: &Socket,
    family: u16,
    cmd: u8,
    attrs: &[u8],
) -> Result<Vec<u8>, RxMetadataError> {
    let len = HEADERS + attrs.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&family.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel fills it in
    msg.extend_from_slice(&[cmd, 1, 0, 0]); // command, version, reserved
    msg.extend_from_slice(attrs);
    socket.send(&msg, 0)?;
    let (answer, _) = socket.recv_from_full()?;
    if answer.len() < HEADERS {
        return Err(RxMetadataError::Malformed("a generic-netlink request"));
    }
    if u16::from_ne_bytes([answer[4], answer[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
        return Err(io::Error::from_raw_os_error(-code).into());
    }
    let total = u32::from_ne_bytes([answer[0], answer[1], answer[2], answer[3]]) as usize;
    Ok(answer
        .get(HEADERS..total.min(answer.len()))
        .unwrap_or_default()
        .to_vec())
}

/// The value of the first attribute of `kind` in `attrs`.
fn find(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let mut rest = attrs;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let this = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if this == kind {
            return Some(&rest[4..len]);
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}
