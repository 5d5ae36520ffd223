//! The LRU flow table: an established flow stays on its backend when the backend set or the
//! Maglev table changes, as long as that backend is still live. Entries are written by a
//! flow's first packet that is not a TCP SYN without ACK (see `select` in balance.rs).

use lb_common::{v4_addr, BackendValue, FlowKey, FlowValue, FAMILY_V4};

use crate::{lookup, maps::FLOWS, parse::Ipv4Packet};

#[inline(always)]
pub fn key(pkt: &Ipv4Packet) -> FlowKey {
    FlowKey {
        src: v4_addr(pkt.saddr),
        dst: v4_addr(pkt.daddr),
        sport_be: pkt.sport_be,
        dport_be: pkt.dport_be,
        proto: pkt.proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

/// The backend this flow already uses, if it is still the same live backend.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<(u32, BackendValue)> {
    // SAFETY: copied out at once; a concurrent LRU eviction can at worst hand us a recycled
    // entry, which the generation check below rejects or which names a valid backend.
    let entry = unsafe { FLOWS.get(key).copied() }?;
    let backend = lookup::backend(entry.backend_id)?;
    if backend.generation != entry.backend_generation {
        return None;
    }
    Some((entry.backend_id, backend))
}

#[inline(always)]
pub fn record(key: &FlowKey, backend_id: u32, backend: &BackendValue) {
    let value = FlowValue {
        backend_id,
        backend_generation: backend.generation,
    };
    // A full LRU evicts its oldest entry; an error here only costs the flow its stickiness.
    let _ = FLOWS.insert(key, value, 0);
}
