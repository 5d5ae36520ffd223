//! Read-only views of what the kernel holds: services of both scopes with their backends
//! and table shares, counters, and `explain` for one 5-tuple, as the XDP balancer meets it
//! ([`explain`]) or as a socket of this node's pods and processes does ([`socket`]). They
//! read the pinned maps, never the daemon's memory, so they show what packets and sockets
//! actually meet.

mod explain;
pub mod fingerprint;
pub mod socket;
mod source_ranges;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use lb_common::{Counter, ServiceValue, XdpReason, BACKEND_F_ACTIVE, SERVICE_F_REJECT};
use serde::Serialize;

use lb_model::{addr_from_bytes, Frontend, Protocol, Scope};

use crate::maps::{BalancerMaps, MapsError};

pub use explain::{explain, Explainer, Explanation, FlowEntryView};

#[derive(Debug, Serialize)]
pub struct BackendView {
    pub id: u32,
    pub address: Option<IpAddr>,
    pub active: bool,
    /// Slots of this service's Maglev table the backend owns.
    pub slots: u32,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub frontend: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// Who balances it: the XDP balancer (`external`) or the socket programs (`internal`).
    pub scope: Scope,
    pub service_id: u32,
    /// Without an active backend the frontend refuses rather than drops (the socket
    /// programs; the XDP balancer drops either way).
    pub reject: bool,
    pub table_size: u32,
    pub table_base: u32,
    /// `loadBalancerSourceRanges`: only these sources open flows; empty allows all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<String>,
    pub backends: Vec<BackendView>,
    /// Packets through the XDP balancer and selections by the socket programs (one per
    /// connect or datagram; they add no bytes).
    pub packets: u64,
    pub bytes: u64,
}

/// Backend addresses and whether each is active, by id.
type BackendAddresses = HashMap<u32, (Option<IpAddr>, bool)>;

fn backend_addresses(maps: &BalancerMaps) -> Result<BackendAddresses, MapsError> {
    Ok(maps
        .backend_entries()?
        .into_iter()
        .map(|(id, b)| {
            (
                id,
                (
                    addr_from_bytes(&b.addr, b.family),
                    b.flags & BACKEND_F_ACTIVE != 0,
                ),
            )
        })
        .collect())
}

/// How many slots of a service's Maglev table each backend id owns.
fn table_shares(
    maps: &BalancerMaps,
    service: &ServiceValue,
) -> Result<BTreeMap<u32, u32>, MapsError> {
    let mut owned: BTreeMap<u32, u32> = BTreeMap::new();
    for id in maps.read_slots(service.table_base, service.table_size)? {
        *owned.entry(id).or_default() += 1;
    }
    Ok(owned)
}

/// Every service record of both scopes, by frontend.
pub fn list_services(maps: &BalancerMaps) -> Result<Vec<ServiceView>, MapsError> {
    let addresses = backend_addresses(maps)?;
    let mut ranges = source_ranges::by_service(maps)?;
    let mut out = Vec::new();
    for scope in [Scope::External, Scope::Internal] {
        for (key, value) in maps.scoped_service_entries(scope)? {
            let Some(frontend) = Frontend::from_scoped_key(&key, scope) else {
                continue;
            };
            let mut view = service_view(maps, &addresses, frontend, &value)?;
            if scope == Scope::External {
                let own = ranges.remove(&value.service_id).unwrap_or_default();
                view.source_ranges = own.iter().map(ToString::to_string).collect();
            }
            out.push(view);
        }
    }
    out.sort_by_key(|s| (s.vip, s.port, s.protocol, s.scope));
    Ok(out)
}

fn service_view(
    maps: &BalancerMaps,
    addresses: &BackendAddresses,
    frontend: Frontend,
    value: &ServiceValue,
) -> Result<ServiceView, MapsError> {
    let mut backends = Vec::new();
    for (id, slots) in table_shares(maps, value)? {
        let (address, active) = addresses.get(&id).copied().unwrap_or((None, false));
        let counter = maps.backend_counter(id)?;
        backends.push(BackendView {
            id,
            address,
            active,
            slots,
            packets: counter.packets,
            bytes: counter.bytes,
        });
    }
    let counter = maps.service_counter(value.service_id)?;
    Ok(ServiceView {
        frontend: frontend.to_string(),
        vip: frontend.vip,
        port: frontend.port,
        protocol: frontend.protocol,
        scope: frontend.scope,
        service_id: value.service_id,
        reject: value.flags & SERVICE_F_REJECT != 0,
        table_size: value.table_size,
        table_base: value.table_base,
        source_ranges: Vec::new(),
        backends,
        packets: counter.packets,
        bytes: counter.bytes,
    })
}

#[derive(Debug, Serialize)]
pub struct ReasonCount {
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

pub fn reason_counts(maps: &BalancerMaps) -> Result<Vec<ReasonCount>, MapsError> {
    Ok(named_counts(
        XdpReason::ALL.iter().map(|r| r.name()),
        &maps.reason_counters()?,
    ))
}

/// Counters by reason label; a reason the map has no counter for (an older datapath)
/// reads zero.
pub fn named_counts<'a>(
    names: impl Iterator<Item = &'static str> + 'a,
    counters: &[Counter],
) -> Vec<ReasonCount> {
    names
        .zip(
            counters
                .iter()
                .chain(std::iter::repeat(&Counter::default())),
        )
        .map(|(reason, c)| ReasonCount {
            reason,
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect()
}

/// A client's flow as `explain` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tuple {
    pub protocol: Protocol,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl Tuple {
    /// The frontend the tuple's destination names in `scope`.
    pub fn frontend(&self, scope: Scope) -> Frontend {
        Frontend {
            vip: self.dst,
            port: self.dport,
            protocol: self.protocol,
            scope,
        }
    }
}

impl std::str::FromStr for Tuple {
    type Err = String;

    /// `tcp 198.18.0.10:40000 198.18.100.1:80` or `tcp [2001:db8::10]:40000 [2001:db8::1]:80`
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [proto, src, dst] = parts.as_slice() else {
            return Err(format!("expected `PROTO SRC:PORT DST:PORT`, got {s:?}"));
        };
        let protocol = match *proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(format!("unknown protocol {other:?} (tcp or udp)")),
        };
        let parse = |what: &str| -> Result<(IpAddr, u16), String> {
            let sock: std::net::SocketAddr = what.parse().map_err(|e| format!("{what:?}: {e}"))?;
            Ok((sock.ip(), sock.port()))
        };
        let (src, sport) = parse(src)?;
        let (dst, dport) = parse(dst)?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(format!(
                "{s:?}: source and destination of different families"
            ));
        }
        Ok(Self {
            protocol,
            src,
            sport,
            dst,
            dport,
        })
    }
}
