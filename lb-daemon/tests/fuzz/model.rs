//! A reference model of the XDP balancer's decision, written from the specification
//! (README, docs/architecture.md, the reason docs in common/src/reason.rs), not from the
//! eBPF code: frame in → action, reason and output frame. One function per feature, so a
//! new datapath feature is one more function and one more call in [`Model::decide`].
//!
//! What it models: VLAN admission (a tag goes back on what returns to the VLAN: frames
//! passed up and ICMP answers), Ethernet/IPv4/IPv6 parsing with their malformed cases,
//! fragments (first balanced and remembered, later following), ICMP errors about VIP
//! flows (`fuzz/icmp.rs`), service lookup, rejecting addresses and frontends (port
//! unreachable), source ranges, session affinity (Maglev over the client alone), Maglev,
//! the MTU check with its "fragmentation needed" / "packet too big" answers, the answer
//! rate limit (the harness runs it either unlimited or at rate 0) and IPIP/IP6IP6
//! encapsulation. Backends and tables stay fixed during a run and affinity entries never
//! expire within one (the harness sets the longest timeout), so a flow-table or affinity
//! entry always names the pick Maglev made when it was written: neither table needs a
//! model. Nor do the per-protocol flow tables or the new-flow insert budget: they decide
//! only whether an entry is written, and an unrecorded flow's next frame meets the same
//! Maglev pick (the harness checks the flow-table event counters against the verdicts).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use lb_common::{
    BackendValue, FlowKey, ServiceKey, ServiceValue, XdpReason, FAMILY_V4, FAMILY_V6,
    SERVICE_F_AFFINITY, SERVICE_F_REJECT, SERVICE_F_SOURCE_RANGES,
};
use lb_model::IpNetwork;

use super::icmp;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub const ETH_HLEN: usize = 14;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// What the datapath reads: services with their Maglev slots, backends, configuration,
/// and the static next hops the harness pinned.
pub struct Snapshot {
    pub services: HashMap<ServiceKey, (ServiceValue, Vec<u32>)>,
    pub backends: HashMap<u32, BackendValue>,
    pub flow_hash_seed: u32,
    pub allowed_vlans: Vec<u16>,
    pub encap_src_v4: [u8; 4],
    pub encap_src_v6: [u8; 16],
    pub lb_mac: [u8; 6],
    pub mtu: u32,
    /// A backend's next-hop MAC.
    pub backend_mac: fn(&BackendValue) -> [u8; 6],
    /// Each service's source ranges, by service id (services with the flag only).
    pub source_ranges: HashMap<u32, Vec<IpNetwork>>,
    /// Addresses (16-byte form, family) whose undefined ports are refused.
    pub rejecting: HashSet<([u8; 16], u8)>,
    /// Whether the ICMP answer rate lets answers out (the harness's rate is either
    /// beyond what the fuzzer can send, or 0).
    pub icmp_answers: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    pub reason: XdpReason,
    /// The frame as the program leaves it; `None` for drops (not compared).
    pub output: Option<Vec<u8>>,
}

/// The model's memory: datagrams whose first fragment was sent.
#[derive(Default)]
pub struct Model {
    fragments: HashMap<FragKey, u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FragKey {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
    family: u8,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Whole,
    First,
    Later,
}

/// A parsed packet: what the decision needs from either family. For an ICMP error about
/// a VIP flow, the addresses and ports are the client's flow's.
pub struct Packet {
    pub family: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub opening: bool,
    pub role: Role,
    pub frag_id: u32,
    /// IPv4 total length or IPv6 payload length plus 40: the inner packet's length.
    pub inner_len: u32,
    /// IPv4 DF (answers "fragmentation needed" only to DF packets).
    pub dont_fragment: bool,
    pub icmp_error: bool,
}

type Verdict = Result<Outcome, XdpReason>;

impl Model {
    pub fn decide(&mut self, snap: &Snapshot, frame: &[u8]) -> Outcome {
        let (body, tag) = match vlan(snap, frame) {
            Ok(admitted) => admitted,
            Err(reason) => return passed_or_dropped(reason, frame),
        };
        let result = match ether_type(&body) {
            Err(reason) => Err(reason),
            Ok(0x0800) => ipv4(&body)
                .or_else(|r| other_protocol(r, &body, icmp::error_v4))
                .and_then(|p| self.balance(snap, &body, &p)),
            Ok(0x86dd) => ipv6(&body)
                .or_else(|r| other_protocol(r, &body, icmp::error_v6))
                .and_then(|p| self.balance(snap, &body, &p)),
            Ok(_) => Err(XdpReason::PassNotIp),
        };
        match result {
            // An answer goes back to the client's VLAN; a forwarded frame leaves untagged.
            Ok(answered)
                if answered.action == XDP_TX
                    && answered.reason != XdpReason::Forwarded
                    && answered.reason != XdpReason::ForwardedIcmpError =>
            {
                Outcome {
                    output: answered.output.map(|o| with_tag(&o, frame, tag)),
                    ..answered
                }
            }
            Ok(forwarded) => forwarded,
            // A frame passed up the stack gets its tag back: it leaves as it came.
            Err(reason) if tag.is_some() => passed_or_dropped(reason, frame),
            Err(reason) => passed_or_dropped(reason, &body),
        }
    }

    /// Service, backend (with the fragment table), MTU, encapsulation.
    fn balance(&mut self, snap: &Snapshot, body: &[u8], p: &Packet) -> Verdict {
        let key = FragKey {
            src: p.src,
            dst: p.dst,
            id: p.frag_id,
            proto: p.proto,
            family: p.family,
        };
        let backend_id = if p.role == Role::Later {
            *self.fragments.get(&key).ok_or(XdpReason::PassFragment)?
        } else {
            let id = match select(snap, p) {
                Err(Refusal::Answer) => return answer(snap, body, p.family, reject(p.family)),
                picked => picked.map_err(Refusal::reason)?,
            };
            if p.role == Role::First {
                self.fragments.insert(key, id);
            }
            id
        };
        let backend = snap.backends[&backend_id];
        if p.family == FAMILY_V6 && backend.family != FAMILY_V6 {
            return Err(XdpReason::DropBackendMissing);
        }
        let overhead = if p.family == FAMILY_V4 { 20 } else { 40 };
        if p.inner_len + overhead > snap.mtu {
            return too_big(snap, body, p, snap.mtu - overhead);
        }
        Ok(Outcome {
            action: XDP_TX,
            reason: if p.icmp_error {
                XdpReason::ForwardedIcmpError
            } else {
                XdpReason::Forwarded
            },
            output: Some(encapsulate(snap, body, &backend)),
        })
    }
}

/// A packet that is neither TCP nor UDP may still be an ICMP error about a VIP flow.
fn other_protocol(
    reason: XdpReason,
    body: &[u8],
    error: fn(&[u8]) -> Result<Packet, XdpReason>,
) -> Result<Packet, XdpReason> {
    match reason {
        XdpReason::PassOtherProtocol => error(body),
        reason => Err(reason),
    }
}

/// Too big once encapsulated: "fragmentation needed" for IPv4 with DF, "packet too big"
/// for IPv6; never for an ICMP error (no error about an error), and IPv4 without DF is
/// dropped (the sender asked the path to fragment, which XDP cannot do).
fn too_big(snap: &Snapshot, body: &[u8], p: &Packet, fits: u32) -> Verdict {
    if p.icmp_error || (p.family == FAMILY_V4 && !p.dont_fragment) {
        return Err(XdpReason::DropTooBig);
    }
    let msg = if p.family == FAMILY_V4 {
        icmp::frag_needed(fits as u16)
    } else {
        icmp::packet_too_big(fits)
    };
    answer(snap, body, p.family, (msg, XdpReason::TooBigAnswered))
}

fn reject(family: u8) -> (icmp::Message, XdpReason) {
    let msg = if family == FAMILY_V4 {
        icmp::PORT_UNREACH_V4
    } else {
        icmp::PORT_UNREACH_V6
    };
    (msg, XdpReason::RejectedIcmp)
}

/// An answer, if the rate limit lets one out.
fn answer(
    snap: &Snapshot,
    body: &[u8],
    family: u8,
    (msg, reason): (icmp::Message, XdpReason),
) -> Verdict {
    if !snap.icmp_answers {
        return Err(XdpReason::DropIcmpRateLimited);
    }
    Ok(Outcome {
        action: XDP_TX,
        reason,
        output: Some(icmp::answer(body, family, msg)),
    })
}

/// `out` with the tag `frame` came with (if it had one) back after the MACs.
fn with_tag(out: &[u8], frame: &[u8], tag: Option<u16>) -> Vec<u8> {
    let mut tagged = out.to_vec();
    if tag.is_some() {
        tagged.splice(12..12, frame[12..16].iter().copied());
    }
    tagged
}

fn passed_or_dropped(reason: XdpReason, frame: &[u8]) -> Outcome {
    let pass = matches!(
        reason,
        XdpReason::PassNotIp
            | XdpReason::PassNotService
            | XdpReason::PassFragment
            | XdpReason::PassOtherProtocol
            | XdpReason::PassNotReady
            | XdpReason::PassVlan
    );
    Outcome {
        action: if pass { XDP_PASS } else { XDP_DROP },
        reason,
        output: pass.then(|| frame.to_vec()),
    }
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// VLAN admission: untagged frames as they are; a tag (802.1Q or 802.1ad) only with VID 0
/// or a listed VID and no second tag, taken off; everything else tagged is `PassVlan`.
fn vlan(snap: &Snapshot, frame: &[u8]) -> Result<(Vec<u8>, Option<u16>), XdpReason> {
    let is_tag = |t: u16| t == 0x8100 || t == 0x88a8;
    if frame.len() < ETH_HLEN || !is_tag(be16(frame, 12)) {
        return Ok((frame.to_vec(), None));
    }
    if frame.len() < 18 {
        return Err(XdpReason::PassVlan);
    }
    let vid = be16(frame, 14) & 0x0fff;
    if is_tag(be16(frame, 16)) || (vid != 0 && !snap.allowed_vlans.contains(&vid)) {
        return Err(XdpReason::PassVlan);
    }
    let mut body = frame[..12].to_vec();
    body.extend_from_slice(&frame[16..]);
    Ok((body, Some(vid)))
}

fn ether_type(frame: &[u8]) -> Result<u16, XdpReason> {
    if frame.len() < ETH_HLEN {
        return Err(XdpReason::DropMalformedIp);
    }
    Ok(be16(frame, 12))
}

/// The transport header's ports and whether it opens a TCP connection (SYN without ACK);
/// `l4` is where it starts, `room` how many bytes the IP header says it has.
fn transport(
    frame: &[u8],
    proto: u8,
    l4: usize,
    room: usize,
) -> Result<(u16, u16, bool), XdpReason> {
    let need = match proto {
        TCP => 20,
        UDP => 8,
        _ => return Err(XdpReason::PassOtherProtocol),
    };
    if frame.len() < l4 + need || room < need {
        return Err(XdpReason::DropMalformedL4);
    }
    let opening = proto == TCP && frame[l4 + 13] & 0x12 == 0x02;
    Ok((be16(frame, l4), be16(frame, l4 + 2), opening))
}

fn ipv4(f: &[u8]) -> Result<Packet, XdpReason> {
    if f.len() < ETH_HLEN + 20 || f[14] >> 4 != 4 || f[14] & 0x0f < 5 {
        return Err(XdpReason::DropMalformedIp);
    }
    let hlen = usize::from(f[14] & 0x0f) * 4;
    let tot_len = usize::from(be16(f, 16));
    if tot_len < hlen || ETH_HLEN + tot_len > f.len() {
        return Err(XdpReason::DropMalformedIp);
    }
    let frag = be16(f, 20);
    let mut p = Packet {
        family: FAMILY_V4,
        src: lb_common::v4_addr([f[26], f[27], f[28], f[29]]),
        dst: lb_common::v4_addr([f[30], f[31], f[32], f[33]]),
        proto: f[23],
        sport: 0,
        dport: 0,
        opening: false,
        role: Role::Whole,
        frag_id: u32::from(be16(f, 18)),
        inner_len: tot_len as u32,
        dont_fragment: frag & 0x4000 != 0,
        icmp_error: false,
    };
    if frag & 0x1fff != 0 {
        p.role = Role::Later;
        return Ok(p);
    }
    if frag & 0x2000 != 0 {
        p.role = Role::First;
    }
    (p.sport, p.dport, p.opening) = transport(f, p.proto, ETH_HLEN + hlen, tot_len - hlen)?;
    Ok(p)
}

fn ipv6(f: &[u8]) -> Result<Packet, XdpReason> {
    if f.len() < ETH_HLEN + 40 || f[14] >> 4 != 6 {
        return Err(XdpReason::DropMalformedIp);
    }
    let payload = usize::from(be16(f, 18));
    if ETH_HLEN + 40 + payload > f.len() {
        return Err(XdpReason::DropMalformedIp);
    }
    let mut p = Packet {
        family: FAMILY_V6,
        src: f[22..38].try_into().unwrap(),
        dst: f[38..54].try_into().unwrap(),
        proto: f[20],
        sport: 0,
        dport: 0,
        opening: false,
        role: Role::Whole,
        frag_id: 0,
        inner_len: payload as u32 + 40,
        dont_fragment: false,
        icmp_error: false,
    };
    let mut l4 = ETH_HLEN + 40;
    let mut room = payload;
    if p.proto == 44 {
        // A fragment header right after the fixed header (payload ≥ 8 puts it in the frame).
        if payload < 8 {
            return Err(XdpReason::DropMalformedIp);
        }
        p.proto = f[54];
        p.frag_id = u32::from_be_bytes(f[58..62].try_into().unwrap());
        let offset_m = be16(f, 56);
        if offset_m & 0xfff8 != 0 {
            p.role = Role::Later;
            return Ok(p);
        }
        if offset_m & 1 != 0 {
            p.role = Role::First;
        }
        l4 += 8;
        room -= 8;
    }
    (p.sport, p.dport, p.opening) = transport(f, p.proto, l4, room)?;
    Ok(p)
}

/// Why no backend was picked: a reason, or a refusal answered with port unreachable.
enum Refusal {
    Reason(XdpReason),
    Answer,
}

impl Refusal {
    fn reason(self) -> XdpReason {
        match self {
            Refusal::Reason(r) => r,
            Refusal::Answer => unreachable!("answered by the caller"),
        }
    }
}

impl From<XdpReason> for Refusal {
    fn from(r: XdpReason) -> Self {
        Refusal::Reason(r)
    }
}

/// The service, its source ranges, then Maglev over the flow (or, with session affinity,
/// over the client alone): `hash % table_size` indexes the service's slots. No service on
/// a rejecting address, or a rejecting service without backends, refuses (not an ICMP
/// error: no error is sent about an error).
fn select(snap: &Snapshot, p: &Packet) -> Result<u32, Refusal> {
    let key = ServiceKey {
        addr: p.dst,
        port_be: p.dport.to_be(),
        proto: p.proto,
        family: p.family,
    };
    let Some((service, slots)) = snap.services.get(&key) else {
        if !p.icmp_error && snap.rejecting.contains(&(p.dst, p.family)) {
            return Err(Refusal::Answer);
        }
        return Err(XdpReason::PassNotService.into());
    };
    if service.flags & SERVICE_F_SOURCE_RANGES != 0 {
        let ranges = &snap.source_ranges[&service.service_id];
        let src = address(p.family, &p.src);
        if !ranges.iter().any(|r| r.contains(src)) {
            return Err(XdpReason::DropSourceRange.into());
        }
    }
    if service.table_size == 0 {
        if service.flags & SERVICE_F_REJECT != 0 && !p.icmp_error {
            return Err(Refusal::Answer);
        }
        return Err(XdpReason::DropNoBackend.into());
    }
    let flow = FlowKey {
        src: p.src,
        dst: p.dst,
        sport_be: p.sport.to_be(),
        dport_be: p.dport.to_be(),
        proto: p.proto,
        family: p.family,
        _pad: [0; 2],
    };
    let affine = service.flags & SERVICE_F_AFFINITY != 0;
    let seed = snap.flow_hash_seed;
    let hash = match (p.family == FAMILY_V4, affine) {
        (true, false) => flow.flow_hash_v4(seed),
        (false, false) => flow.flow_hash_v6(seed),
        (true, true) => flow.client_hash_v4(seed),
        (false, true) => flow.client_hash_v6(seed),
    };
    let id = slots[(hash % service.table_size) as usize];
    Ok(snap
        .backends
        .contains_key(&id)
        .then_some(id)
        .ok_or(XdpReason::DropBackendMissing)?)
}

fn address(family: u8, addr: &[u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from(<[u8; 4]>::try_from(&addr[..4]).unwrap())
    } else {
        IpAddr::from(*addr)
    }
}

/// IPIP (RFC 2003) or IP6IP6 (RFC 2473): new Ethernet header to the backend's next hop,
/// outer header from the LB, the client's packet (and any bytes after it) untouched.
fn encapsulate(snap: &Snapshot, body: &[u8], backend: &BackendValue) -> Vec<u8> {
    let mut out = (snap.backend_mac)(backend).to_vec();
    out.extend_from_slice(&snap.lb_mac);
    if backend.family == FAMILY_V4 {
        out.extend_from_slice(&[0x08, 0x00]);
        let df = be16(body, 20) & 0x4000;
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[1] = body[15];
        ip[2..4].copy_from_slice(&(be16(body, 16) + 20).to_be_bytes());
        ip[4..6].copy_from_slice(&body[18..20]);
        ip[6..8].copy_from_slice(&df.to_be_bytes());
        ip[8] = 64;
        ip[9] = 4;
        ip[12..16].copy_from_slice(&snap.encap_src_v4);
        ip[16..20].copy_from_slice(&backend.addr[..4]);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&ip);
    } else {
        out.extend_from_slice(&[0x86, 0xdd]);
        out.extend_from_slice(&body[14..18]);
        out.extend_from_slice(&(be16(body, 18) + 40).to_be_bytes());
        out.extend_from_slice(&[41, 64]);
        out.extend_from_slice(&snap.encap_src_v6);
        out.extend_from_slice(&backend.addr);
    }
    out.extend_from_slice(&body[ETH_HLEN..]);
    out
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Distinct fragment keys the model holds (the harness keeps this far below the kernel
/// table's capacity, so the kernel's LRU never evicts).
impl Model {
    pub fn fragments_held(&self) -> usize {
        self.fragments.len()
    }
}
