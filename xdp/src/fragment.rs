//! Fragmented datagrams. Only a datagram's first fragment carries the ports, so it is
//! balanced like a whole packet and its backend remembered here, keyed by what names the
//! datagram for reassembly (addresses, protocol, identification); the fragments after it
//! carry no ports and follow that entry to the same backend, where the datagram is
//! reassembled. A later fragment arriving before its first, or after the entry is gone
//! (LRU eviction, backend replaced), is passed (`PassFragment`) as before.
//!
//! Too big after encapsulation: a fragment is never sent with DF, so there is no sender
//! to tell (a "fragmentation needed" answer to a packet without DF is not what RFC 1191
//! defines, and one to a later fragment quotes no ports, so the sender's UDP or TCP
//! cannot match it to a socket); such a fragment is dropped and counted (`DropTooBig`) by
//! the caller's MTU check. Paths to the backends need the client's MTU plus the
//! encapsulation overhead (README, "MTU").

use lb_common::{BackendValue, FlowKey, FragmentKey, FragmentValue, FAMILY_V4, FAMILY_V6};

use crate::{lookup, maps::FRAGMENTS};

/// A packet's place in its datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not fragmented (an atomic fragment, offset 0 without more fragments, counts too).
    Whole,
    /// Offset 0 with more to come: ports present, balanced, remembered.
    First,
    /// Offset above 0: no ports; follows the first fragment's entry.
    Later,
}

/// The IPv4 datagram's key: the 16-bit identification in the key's first two bytes.
#[inline(always)]
pub fn key_v4(src: [u8; 4], dst: [u8; 4], proto: u8, id_be: u16) -> FragmentKey {
    let [i0, i1] = id_be.to_ne_bytes();
    FragmentKey {
        src: lb_common::v4_addr(src),
        dst: lb_common::v4_addr(dst),
        id_be: u32::from_ne_bytes([i0, i1, 0, 0]),
        proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

/// Remembers the backend a first fragment went to. A full LRU evicts its oldest entry;
/// an error only costs the datagram's later fragments (passed, as without this table).
#[inline(always)]
pub fn remember(key: &FragmentKey, service_id: u32, backend_id: u32, backend: &BackendValue) {
    let value = FragmentValue {
        backend_id,
        backend_generation: backend.generation,
        service_id,
        _pad: 0,
    };
    let _ = FRAGMENTS.insert(key, value, 0);
}

/// The service id, backend id and backend a later fragment follows, if its datagram's
/// first fragment was sent and that backend still lives.
#[inline(always)]
pub fn follow(key: &FragmentKey) -> Option<(u32, u32, BackendValue)> {
    // SAFETY: copied out at once; a recycled LRU entry fails the generation check or
    // names a live backend.
    let entry = unsafe { FRAGMENTS.get(key).copied() }?;
    let backend = lookup::backend(entry.backend_id)?;
    if backend.generation != entry.backend_generation {
        return None;
    }
    Some((entry.service_id, entry.backend_id, backend))
}

/// The IPv6 datagram's key, from the packet's flow key (addresses, the fragment header's
/// next header) and the fragment header's identification.
#[inline(always)]
fn key_v6(flow: &FlowKey, id_be: u32) -> FragmentKey {
    FragmentKey {
        src: flow.src,
        dst: flow.dst,
        id_be,
        proto: flow.proto,
        family: FAMILY_V6,
        _pad: [0; 2],
    }
}

// The IPv6 path's stack has no room for a fragment key beside the flow key, so its key is
// built in subprograms of their own.
#[inline(never)]
pub fn remember_v6(
    flow: &FlowKey,
    id_be: u32,
    service_id: u32,
    backend_id: u32,
    backend: &BackendValue,
) {
    remember(&key_v6(flow, id_be), service_id, backend_id, backend);
}

#[inline(never)]
pub fn follow_v6(flow: &FlowKey, id_be: u32) -> Option<(u32, u32, BackendValue)> {
    follow(&key_v6(flow, id_be))
}
