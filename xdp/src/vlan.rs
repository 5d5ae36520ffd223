//! VLAN admission. By default only untagged frames are balanced; a tagged frame (802.1Q or
//! 802.1ad) is passed untouched (`PassVlan`) unless its VLAN id is one the daemon listed
//! in the config (`LbConfig::allowed_vlans`).
//!
//! The tag is read from two places. A NIC's rx VLAN stripping (and a veth whose peer
//! sends with tx VLAN offload) takes it out of the frame into the packet's metadata: the
//! kfunc `bpf_xdp_metadata_rx_vlan_tag` reads it there, in a device-bound program on a
//! driver that implements it (see `lb-daemon/src/loader/devbound.rs`); every other load
//! answers "not supported" in its place. A tag still in the frame is read in band, taken
//! off for the balancer's fixed-offset parsing and put back if the frame goes up the
//! stack, so the stack still sees it on its VLAN (and on an ICMP answer to the client). A
//! tag in the metadata stays there for the stack; an ICMP answer to such a frame is sent
//! untagged (the transmit path adds no tag), a limit the docs state. A forwarded frame
//! leaves encapsulated, untagged, on the route the kernel names for the backend. See
//! docs/architecture.md, "VLANs and fragments".

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use lb_common::{
    wire::{ETH_P_IP, ETH_P_IPV6},
    xdp_metadata::{DEVICE_BOUND_CALL, RX_VLAN_TAG_CALL},
    XdpReason,
};

use crate::{
    maps::CONFIG,
    parse::ptr_at,
    verdict::{self, Forward},
};

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
const VID_MASK: u16 = 0x0fff;
/// Destination and source MAC: what moves when a tag is taken out or put back.
const MACS_LEN: usize = 12;

/// A tag taken off an admitted frame: TPID (high half) and TCI (low half), host order;
/// [`Tag::NONE`] for an untagged frame, and for one whose tag is in the packet's metadata
/// (it stays there: nothing to put back). One scalar, so the family paths (BPF
/// subprograms) take it in a register.
#[derive(Clone, Copy)]
pub struct Tag(u32);

impl Tag {
    /// The frame came untagged (a TPID is never 0).
    pub const NONE: Tag = Tag(0);
}

/// The VLAN id of the tag the NIC took out of the frame, or [`NO_METADATA_TAG`] when the
/// frame had none (`-ENODATA`) or this load or driver cannot say (`-EOPNOTSUPP`, what the
/// loader puts in place of the call outside a device-bound load).
///
/// A leaf subprogram of its own: with the kfunc call inlined into `admit`, the verifier
/// walked the family paths after it past its one-million-instruction limit (measured:
/// 843k instructions as a leaf, over 1M inlined).
#[inline(never)]
fn metadata_vid(ctx: &XdpContext) -> u32 {
    let mut tpid_be: u16 = 0;
    let mut tci: u16 = 0;
    // SAFETY: a call to a constant address is how the BPF backend emits a helper call
    // (`call imm`, as aya-ebpf's helper bindings do); this id is the placeholder the
    // loader rewrites before the verifier sees it, into the kfunc
    // `int bpf_xdp_metadata_rx_vlan_tag(const struct xdp_md *, __be16 *, u16 *)` or into
    // `r0 = -EOPNOTSUPP`, so the signature matches what runs.
    let rx_vlan_tag: unsafe extern "C" fn(*mut xdp_md, *mut u16, *mut u16) -> i32 =
        unsafe { core::mem::transmute(RX_VLAN_TAG_CALL as usize) };
    // SAFETY: `ctx.ctx` is this run's xdp_md; both pointers are to live stack slots of
    // the size the kfunc writes.
    let ret = unsafe { rx_vlan_tag(ctx.ctx, &mut tpid_be, &mut tci) };
    if ret != 0 {
        return NO_METADATA_TAG;
    }
    u32::from(tci & VID_MASK)
}

/// [`metadata_vid`]'s answer when the metadata holds no tag.
const NO_METADATA_TAG: u32 = u32::MAX;

/// Whether this load is device-bound (can read tags from the metadata). A placeholder call
/// the loader rewrites into the constant `r0 = 1` or `r0 = 0` (see
/// `lb_common::xdp_metadata`), so the verifier drops the branch a load never takes.
#[inline(always)]
fn device_bound() -> bool {
    // SAFETY: as in `metadata_vid`: a constant address is how a helper call is emitted,
    // and the loader rewrites this one into `r0 = <constant>` before the verifier sees it.
    let bound: unsafe extern "C" fn() -> u64 =
        unsafe { core::mem::transmute(DEVICE_BOUND_CALL as usize) };
    // SAFETY: see above; it takes no arguments.
    unsafe { bound() != 0 }
}

/// Whether the frame is an untagged IPv4 or IPv6 one that [`admit`] would admit as
/// `Tag::NONE` without looking further: in a load that is not device-bound no tag can be
/// in the metadata, and the ethertype says IP. Inlined into the entry point, so the
/// common frame skips `admit`'s two subprogram calls (about 16 ns here).
#[inline(always)]
pub fn plain_ip(ctx: &XdpContext) -> bool {
    if device_bound() {
        return false;
    }
    let Some(ether_type) = ptr_at::<u16>(ctx, MACS_LEN) else {
        return false;
    };
    // SAFETY: ptr_at checked the bounds.
    let ether_type = u16::from_be(unsafe { *ether_type });
    ether_type == ETH_P_IP || ether_type == ETH_P_IPV6
}

/// Whether the frame may be balanced: `Ok(Tag::NONE)` for an untagged frame, `Ok(tag)`
/// for an admitted one whose tag is now off, `Err(PassVlan)` for any other tagged frame
/// (a VLAN not listed, stacked tags, a tag cut short), which stays as it came.
///
/// A subprogram of its own, so its buffers do not sit in the entry point's frame under
/// the family paths' (BPF's 512-byte stack counts the whole call chain).
#[inline(never)]
pub fn admit(ctx: &XdpContext) -> Result<Tag, XdpReason> {
    // A tag in the metadata is judged first; a listed one goes on to the frame's own
    // check below, as an untagged frame does (a second tag in the frame is then judged
    // as any tag in the frame is).
    let vid = metadata_vid(ctx);
    if vid != NO_METADATA_TAG && !allowed(vid as u16) {
        return Err(XdpReason::PassVlan);
    }
    let Some(head) = ptr_at::<[u16; 9]>(ctx, 0) else {
        // Shorter than a tagged header: an untagged frame's parser judges it.
        return untagged_or_short(ctx);
    };
    // SAFETY: ptr_at checked the bounds.
    let head = unsafe { *head };
    let tpid = u16::from_be(head[6]);
    if tpid != ETH_P_8021Q && tpid != ETH_P_8021AD {
        return Ok(Tag::NONE);
    }
    let tci = u16::from_be(head[7]);
    let inner = u16::from_be(head[8]);
    if inner == ETH_P_8021Q || inner == ETH_P_8021AD || !allowed(tci & VID_MASK) {
        return Err(XdpReason::PassVlan);
    }
    let macs: [u16; 6] = [head[0], head[1], head[2], head[3], head[4], head[5]];
    let moved: *mut [u16; 6] = ptr_at(ctx, VLAN_HLEN).ok_or(XdpReason::PassVlan)?;
    // SAFETY: ptr_at checked the bounds.
    unsafe { *moved = macs };
    // SAFETY: shrinking the head by bytes the packet has (checked above).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, VLAN_HLEN as i32) } != 0 {
        return Err(XdpReason::DropEncapFailed);
    }
    Ok(Tag(u32::from(tpid) << 16 | u32::from(tci)))
}

/// A frame shorter than a tagged header: tagged if its ethertype says so (then passed),
/// else untagged.
#[inline(always)]
fn untagged_or_short(ctx: &XdpContext) -> Result<Tag, XdpReason> {
    let Some(ether_type) = ptr_at::<u16>(ctx, MACS_LEN) else {
        return Ok(Tag::NONE);
    };
    // SAFETY: ptr_at checked the bounds.
    let tpid = u16::from_be(unsafe { *ether_type });
    if tpid == ETH_P_8021Q || tpid == ETH_P_8021AD {
        return Err(XdpReason::PassVlan);
    }
    Ok(Tag::NONE)
}

/// VID 0 only carries a priority (an untagged frame's); other ids must be listed.
#[inline(always)]
fn allowed(vid: u16) -> bool {
    if vid == 0 {
        return true;
    }
    let Some(config) = CONFIG.get(0) else {
        return false;
    };
    let mut i = 0;
    while i < config.allowed_vlans.len() {
        if config.allowed_vlans[i] == vid {
            return true;
        }
        i += 1;
    }
    false
}

/// Puts an admitted frame's tag back on what goes back to its VLAN: a frame going up the
/// stack (so the stack receives it on its VLAN) and an ICMP answer sent back to the
/// client. A forwarded frame leaves encapsulated on the backend's route, untagged; a
/// dropped one keeps what the balancer made of it.
#[inline(always)]
pub fn restore(
    ctx: &XdpContext,
    tag: Tag,
    outcome: Result<Forward, XdpReason>,
) -> Result<Forward, XdpReason> {
    if tag.0 == 0 {
        return outcome;
    }
    let back = match &outcome {
        Ok(forward) => {
            forward.action == xdp_action::XDP_PASS
                || forward.reason == XdpReason::RejectedIcmp
                || forward.reason == XdpReason::TooBigAnswered
        }
        Err(reason) => verdict::action_for(*reason) == xdp_action::XDP_PASS,
    };
    if !back {
        return outcome;
    }
    // Never deliver a frame on the wrong VLAN: a tag that cannot go back drops it.
    put_back(ctx, tag).ok_or(XdpReason::DropEncapFailed)?;
    outcome
}

/// Grows the head by a tag and writes the MACs and `tag` in front of the ethertype.
#[inline(never)]
fn put_back(ctx: &XdpContext, tag: Tag) -> Option<()> {
    // SAFETY: the helper validates the delta against the headroom (`admit` released 4
    // bytes; an answer's head moved within the same 256-byte headroom).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(VLAN_HLEN as i32)) } != 0 {
        return None;
    }
    let head = ptr_at::<[u16; 8]>(ctx, 0)?;
    let macs = ptr_at::<[u16; 6]>(ctx, VLAN_HLEN)?;
    let tpid_be = ((tag.0 >> 16) as u16).to_be();
    let tci_be = (tag.0 as u16).to_be();
    // SAFETY: both ranges were bounds-checked by ptr_at; the MACs are copied out before
    // the header they overlap is written.
    unsafe {
        let m = *macs;
        *head = [m[0], m[1], m[2], m[3], m[4], m[5], tpid_be, tci_be];
    }
    Some(())
}
