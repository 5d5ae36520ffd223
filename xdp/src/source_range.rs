//! `loadBalancerSourceRanges`: a service whose record carries `SERVICE_F_SOURCE_RANGES`
//! opens flows only for sources inside one of its ranges, looked up in the one LPM trie
//! that holds every service's ranges (see `lb_common::SourceRangeKey`).
//!
//! Only new flows are checked: a flow the flow table already carries keeps going after a
//! range change, as kube-proxy's conntrack entries do (its firewall sees new connections
//! only). A source outside the ranges never gets a flow entry, so every packet of it is
//! checked and dropped.

use aya_ebpf::maps::lpm_trie::Key;
use lb_common::{
    FlowKey, ServiceValue, SourceRangeKey, XdpReason, FAMILY_V6, SERVICE_F_SOURCE_RANGES,
    SOURCE_RANGE_ID_BITS,
};

use crate::maps::SOURCE_RANGES;

/// `Ok` when `flow`'s source may open a flow to `service`: the service lists no ranges, or
/// one of them holds the source.
#[inline(always)]
pub fn check(service: &ServiceValue, flow: &FlowKey) -> Result<(), XdpReason> {
    if service.flags & SERVICE_F_SOURCE_RANGES == 0 {
        return Ok(());
    }
    let address_bits = if flow.family == FAMILY_V6 { 128 } else { 32 };
    let key = Key::new(
        SOURCE_RANGE_ID_BITS + address_bits,
        SourceRangeKey {
            service_id: service.service_id,
            addr: flow.src,
        },
    );
    match SOURCE_RANGES.get(&key) {
        Some(_) => Ok(()),
        None => Err(XdpReason::DropSourceRange),
    }
}
