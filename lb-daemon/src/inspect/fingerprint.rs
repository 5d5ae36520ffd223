//! The settings fingerprint: a digest of everything that decides which backend the XDP
//! balancer picks for a new flow, read from the maps. LB nodes behind one ECMP router must
//! pick alike, so equal fingerprints mean equal choices for every flow:
//!
//! - the flow-hash seed (the datapath config), which picks the slot;
//! - per external service: its frontend, its flags and affinity timeout (the verdict and
//!   stickiness), its source ranges (who may open a flow: a node admitting a source its
//!   peers refuse breaks that source's connections when ECMP moves them), its table
//!   size, and its Maglev table slot by slot as backend
//!   identities (address and whether the record is live), never as backend ids, which
//!   are local to a node.
//!
//! What it leaves out differs between nodes without changing choices: ids and regions,
//! counters, next hops, encapsulation sources, the flow table. The digest is FNV-1a
//! (64 bit) over a fixed byte encoding with a version tag; it detects differences, it is
//! not a cryptographic commitment.

use std::collections::{BTreeMap, HashMap};

use lb_common::{BackendValue, ServiceValue, BACKEND_F_ACTIVE};
use lb_model::{Frontend, IpNetwork, Scope};
use serde::Serialize;

use crate::maps::{BalancerMaps, MapsError};

/// Bumped whenever the encoding changes, so fingerprints of different encodings differ.
const VERSION: &[u8] = b"ferrolb-fingerprint-2";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprints {
    /// Of the seed and every service: equal on two nodes means equal choices.
    pub settings: String,
    pub flow_hash_seed: u32,
    /// Of the seed and one service, by frontend (`Frontend`'s `Display`), to find which
    /// service differs.
    pub services: BTreeMap<String, String>,
}

/// FNV-1a, 64 bit.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        let mut h = Self(0xcbf2_9ce4_8422_2325);
        h.write(VERSION);
        h
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn u32(&mut self, v: u32) {
        self.write(&v.to_le_bytes());
    }

    fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// A backend as the fingerprint sees it: its identity and whether it is live.
fn identity(backend: Option<&BackendValue>) -> [u8; 18] {
    let mut out = [0u8; 18];
    if let Some(b) = backend {
        out[..16].copy_from_slice(&b.addr);
        out[16] = b.family;
        out[17] = u8::from(b.flags & BACKEND_F_ACTIVE != 0);
    }
    out
}

/// One service's digest, given its sorted source ranges, its slots as backend ids and the
/// backends by id.
fn service_digest(
    seed: u32,
    frontend: &Frontend,
    value: &ServiceValue,
    ranges: &[IpNetwork],
    slots: &[u32],
    backends: &HashMap<u32, BackendValue>,
) -> String {
    let mut h = Fnv::new();
    h.u32(seed);
    let key = frontend.key();
    h.write(&key.addr);
    h.write(&[key.family, key.proto]);
    h.write(&key.port_be.to_be_bytes());
    h.u32(value.flags);
    h.u32(value.affinity_timeout_s);
    h.u32(ranges.len() as u32);
    for range in ranges {
        let address = match range.network() {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(a) => a.octets(),
        };
        h.write(&address);
        h.write(&[u8::from(range.is_ipv4()), range.prefix()]);
    }
    h.u32(value.table_size);
    for id in slots {
        h.write(&identity(backends.get(id)));
    }
    h.hex()
}

/// The fingerprints of what the maps at hand hold.
pub fn fingerprints(maps: &BalancerMaps) -> Result<Fingerprints, MapsError> {
    let seed = maps.read_config()?.flow_hash_seed;
    let backends: HashMap<u32, BackendValue> = maps.backend_entries()?.into_iter().collect();
    let mut ranges = super::source_ranges::by_service(maps)?;
    let mut services = BTreeMap::new();
    let mut ordered = Vec::new();
    for (key, value) in maps.scoped_service_entries(Scope::External)? {
        let Some(frontend) = Frontend::from_key(&key) else {
            continue;
        };
        let slots = maps.read_slots(value.table_base, value.table_size)?;
        let own_ranges = ranges.remove(&value.service_id).unwrap_or_default();
        let digest = service_digest(seed, &frontend, &value, &own_ranges, &slots, &backends);
        ordered.push((frontend, digest.clone()));
        services.insert(frontend.to_string(), digest);
    }
    ordered.sort();
    let mut h = Fnv::new();
    h.u32(seed);
    h.u32(ordered.len() as u32);
    for (_, digest) in &ordered {
        h.write(digest.as_bytes());
    }
    Ok(Fingerprints {
        settings: h.hex(),
        flow_hash_seed: seed,
        services,
    })
}

#[cfg(test)]
mod tests {
    use lb_model::Protocol;

    use super::*;

    fn backend(last: u8, active: bool) -> BackendValue {
        BackendValue {
            addr: lb_common::v4_addr([198, 18, 0, last]),
            family: lb_common::FAMILY_V4,
            flags: if active { BACKEND_F_ACTIVE } else { 0 },
            ..BackendValue::default()
        }
    }

    #[test]
    fn ids_do_not_matter_identities_seed_and_slots_do() {
        let frontend = Frontend {
            vip: "198.18.100.1".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            scope: Scope::External,
        };
        let value = ServiceValue {
            table_size: 3,
            ..ServiceValue::default()
        };
        // Node A gave 198.18.0.11 id 1 and .12 id 2; node B the other way round.
        let a = HashMap::from([(1, backend(11, true)), (2, backend(12, true))]);
        let b = HashMap::from([(7, backend(12, true)), (9, backend(11, true))]);
        let on_a = service_digest(5, &frontend, &value, &[], &[1, 2, 1], &a);
        assert_eq!(
            on_a,
            service_digest(5, &frontend, &value, &[], &[9, 7, 9], &b)
        );
        assert_ne!(
            on_a,
            service_digest(6, &frontend, &value, &[], &[1, 2, 1], &a)
        );
        assert_ne!(
            on_a,
            service_digest(5, &frontend, &value, &[], &[1, 1, 2], &a)
        );
        let retired = HashMap::from([(1, backend(11, true)), (2, backend(12, false))]);
        assert_ne!(
            on_a,
            service_digest(5, &frontend, &value, &[], &[1, 2, 1], &retired)
        );
        let other_port = Frontend {
            port: 81,
            ..frontend
        };
        assert_ne!(
            on_a,
            service_digest(5, &other_port, &value, &[], &[1, 2, 1], &a)
        );
        let ranges =
            |list: &[&str]| -> Vec<IpNetwork> { list.iter().map(|r| r.parse().unwrap()).collect() };
        let limited =
            |list: &[&str]| service_digest(5, &frontend, &value, &ranges(list), &[1, 2, 1], &a);
        assert_ne!(on_a, limited(&["198.18.0.0/16"]));
        assert_ne!(limited(&["198.18.0.0/16"]), limited(&["198.18.0.0/17"]));
        assert_ne!(limited(&["198.18.0.0/16"]), limited(&["198.19.0.0/16"]));
        assert_eq!(limited(&["198.18.0.0/16"]), limited(&["198.18.0.0/16"]));
    }
}
