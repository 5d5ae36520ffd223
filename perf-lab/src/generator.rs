//! The live-frame generator (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES) and the
//! template frames it sends.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use etherparse::PacketBuilder;

use crate::{
    netns::Netns,
    objects::{
        layout::{
            GenConfig, GenTemplate, GEN_FAMILY_V4, GEN_FAMILY_V6, GEN_FIXED, GEN_NEW_FLOWS,
            GEN_REPLAY, MAP_GEN_CONFIG, MAP_GEN_SEQ, MAP_GEN_TEMPLATE, OFF_IP6_SADDR_LOW,
            OFF_IP_CSUM, OFF_IP_SADDR, OFF_TCP6_CSUM, OFF_TCP6_SPORT, OFF_TCP_CSUM, OFF_TCP_SPORT,
            PROG_GEN, TEMPLATE_LEN, TEMPLATE_LEN_V6, TEMPLATE_MAX,
        },
        PERF_PROGRAMS,
    },
    programs::{attach_loaded, create_parking, prog_err, set_first, ProgramsError, PARK_IFS},
    services::{SOURCE_BASE, SOURCE_BASE6, SOURCE_COUNT},
};

/// How the generator varies the 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flows {
    /// Every frame a tuple never sent before in this process.
    New,
    /// A fixed set of tuples, cycled.
    Established { flows: u32 },
}

/// What one generator burst did.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    pub sent: u64,
    pub elapsed: Duration,
    /// CPU time the generator thread was charged, which includes the softirq work (DUT and
    /// sink) that ran on its CPU when its batches ended. On a shared machine wall time
    /// also contains other tenants' time slices; this does not.
    pub thread_cpu: Duration,
}

fn thread_cpu_time() -> Duration {
    // SAFETY: timespec is plain C data, for which all zeroes is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const BATCH: u32 = 64;
const PORT_BASE: u32 = 1024;
const PORT_COUNT: u32 = 60_000;
/// New-flow sequence numbers start past any replay set, so they never reuse its tuples.
const NEW_FLOW_SEQ_START: u64 = 1 << 24;

/// The XDP live-frame generator (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES): the kernel
/// builds frames from a template and the program rewrites each one before it is sent out
/// of the source veth.
pub struct Generator {
    ebpf: Ebpf,
    next_new_seq: u64,
    cpu: usize,
}

/// The TCP segment a template carries. The generator copies the template's flags into
/// every frame as they are; only source address, port and checksums vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// SYN without ACK, for new flows: a connection opening (ferrolb balances it without a
    /// flow-table insert; conntrack creates an entry in SYN_SENT).
    Syn,
    /// ACK without SYN, for established flows: a segment of a running connection
    /// (ferrolb records the flow on the first one and hits it on replays; conntrack picks
    /// it up mid-stream with `nf_conntrack_tcp_loose` on).
    Ack,
}

/// A `segment` from the first generator source of `dst`'s family to `dst:dport`, with
/// valid checksums; an IPv4 frame is padded to the Ethernet minimum (60 bytes), an IPv6
/// one is 74 bytes of headers.
pub fn template(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    dst: IpAddr,
    dport: u16,
    segment: Segment,
) -> Result<Vec<u8>, ProgramsError> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let (builder, len) = match dst {
        IpAddr::V4(dst) => (
            eth.ipv4(SOURCE_BASE.octets(), dst.octets(), 64),
            TEMPLATE_LEN,
        ),
        IpAddr::V6(dst) => (
            eth.ipv6(SOURCE_BASE6.octets(), dst.octets(), 64),
            TEMPLATE_LEN_V6,
        ),
    };
    let builder = match segment {
        Segment::Syn => builder.tcp(PORT_BASE as u16, dport, 1, 64_240).syn(),
        Segment::Ack => builder.tcp(PORT_BASE as u16, dport, 2, 64_240).ack(1),
    };
    let mut frame = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut frame, &[])
        .map_err(|e| ProgramsError::Template(e.to_string()))?;
    if frame.len() > len {
        return Err(ProgramsError::Template(format!(
            "{} bytes of headers, the generator takes {len}",
            frame.len()
        )));
    }
    frame.resize(len, 0);
    Ok(frame)
}

fn be16(frame: &[u8], off: usize) -> u32 {
    u32::from(u16::from_be_bytes([frame[off], frame[off + 1]]))
}

fn be32(frame: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([frame[off], frame[off + 1], frame[off + 2], frame[off + 3]])
}

/// The generator's view of a template: its family and what it patches, read from the
/// frame (the family from its length, which `template` fixes per family).
fn template_config(frame: &[u8]) -> Result<GenConfig, ProgramsError> {
    let base = GenConfig {
        src_count: SOURCE_COUNT,
        port_base: PORT_BASE,
        port_count: PORT_COUNT,
        ..Default::default()
    };
    match frame.len() {
        TEMPLATE_LEN => Ok(GenConfig {
            family: GEN_FAMILY_V4,
            src_base: u32::from(SOURCE_BASE),
            tmpl_saddr: be32(frame, OFF_IP_SADDR),
            tmpl_sport: be16(frame, OFF_TCP_SPORT),
            tmpl_ip_csum: be16(frame, OFF_IP_CSUM),
            tmpl_tcp_csum: be16(frame, OFF_TCP_CSUM),
            ..base
        }),
        TEMPLATE_LEN_V6 => Ok(GenConfig {
            family: GEN_FAMILY_V6,
            // The low 32 bits of the source vary; the base's are those of SOURCE_BASE6.
            src_base: u128::from(SOURCE_BASE6) as u32,
            tmpl_saddr: be32(frame, OFF_IP6_SADDR_LOW),
            tmpl_sport: be16(frame, OFF_TCP6_SPORT),
            tmpl_ip_csum: 0,
            tmpl_tcp_csum: be16(frame, OFF_TCP6_CSUM),
            ..base
        }),
        n => Err(ProgramsError::Template(format!(
            "frame is {n} bytes, the generator takes {TEMPLATE_LEN} (IPv4) or \
             {TEMPLATE_LEN_V6} (IPv6)"
        ))),
    }
}

impl Generator {
    /// Loads the generator, parked on a down veth in `park` (see [`create_parking`]); it
    /// will run pinned to `cpu`.
    pub fn load(cpu: usize, park: &Netns) -> Result<Self, ProgramsError> {
        let mut ebpf = EbpfLoader::new().load(PERF_PROGRAMS)?;
        create_parking(park)?;
        attach_loaded(park, &mut ebpf, PROG_GEN, PARK_IFS[0])?;
        Ok(Self {
            ebpf,
            next_new_seq: NEW_FLOW_SEQ_START,
            cpu,
        })
    }

    fn configure(
        &mut self,
        frame: &[u8],
        flows: Option<Flows>,
        seq: u64,
    ) -> Result<(), ProgramsError> {
        let (mode, count) = match flows {
            None => (GEN_FIXED, 0),
            Some(Flows::New) => (GEN_NEW_FLOWS, 0),
            Some(Flows::Established { flows }) => (GEN_REPLAY, flows),
        };
        let config = GenConfig {
            mode,
            flows: count,
            ..template_config(frame)?
        };
        let mut bytes = [0u8; TEMPLATE_MAX];
        bytes[..frame.len()].copy_from_slice(frame);
        set_first(&mut self.ebpf, MAP_GEN_TEMPLATE, GenTemplate { bytes })?;
        set_first(&mut self.ebpf, MAP_GEN_CONFIG, config)?;
        set_first(&mut self.ebpf, MAP_GEN_SEQ, seq)
    }

    /// Sends frames out of `ifindex` in `ns` until `budget` has passed or `max_frames` are
    /// sent, in syscalls of growing size (so a slow peer cannot stretch one syscall far
    /// past the budget).
    pub fn burst(
        &mut self,
        ns: &Netns,
        ifindex: u32,
        frame: &[u8],
        flows: Flows,
        budget: Duration,
        max_frames: u64,
    ) -> Result<Burst, ProgramsError> {
        let seq = match flows {
            Flows::New => self.next_new_seq,
            Flows::Established { .. } => 0,
        };
        self.configure(frame, Some(flows), seq)?;
        let prog: &Xdp = self
            .ebpf
            .program(PROG_GEN)
            .ok_or(ProgramsError::Missing(PROG_GEN))?
            .try_into()
            .map_err(prog_err(PROG_GEN))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. Live frames need data_end = frame length and the ingress device.
        let mut ctx = Vec::with_capacity(24);
        for word in [0, frame.len() as u32, 0, ifindex, 0, 0] {
            ctx.extend_from_slice(&word.to_ne_bytes());
        }
        let result = ns.run_inside(Some(self.cpu), || {
            let mut chunk: u32 = 4096;
            let mut sent = 0u64;
            let cpu_start = thread_cpu_time();
            let start = Instant::now();
            while start.elapsed() < budget && sent < max_frames {
                let repeat = chunk.min((max_frames - sent) as u32);
                let t = Instant::now();
                let out = prog
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        ctx_in: Some(&ctx),
                        repeat,
                        attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                        ..Default::default()
                    })
                    .map_err(prog_err(PROG_GEN))?;
                if out.return_value != 0 && out.return_value != 3 {
                    return Err(ProgramsError::GeneratorVerdict(out.return_value));
                }
                sent += u64::from(repeat);
                if t.elapsed() < budget / 20 && chunk < 1 << 20 {
                    chunk *= 2;
                }
            }
            Ok(Burst {
                sent,
                elapsed: start.elapsed(),
                thread_cpu: thread_cpu_time().saturating_sub(cpu_start),
            })
        })??;
        if flows == Flows::New {
            self.next_new_seq += result.sent;
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    /// Each template carries the flags of its segment and checksums that verify, in both
    /// families (the generator patches them incrementally from these).
    #[test]
    fn templates_carry_their_flags_and_valid_checksums() {
        let dsts: [IpAddr; 2] = [
            Ipv4Addr::new(198, 18, 19, 1).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1).into(),
        ];
        for dst in dsts {
            for segment in [Segment::Syn, Segment::Ack] {
                let frame = template([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], dst, 80, segment)
                    .expect("template");
                let sliced = SlicedPacket::from_ethernet(&frame).expect("parses");
                let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
                    panic!("{dst} {segment:?}: not TCP");
                };
                // The whole flags byte: no other flag set beside the segment's own.
                let want = match segment {
                    Segment::Syn => 0x02,
                    Segment::Ack => 0x10,
                };
                assert_eq!(
                    tcp.header_slice()[13],
                    want,
                    "{dst} {segment:?}: flags byte"
                );
                assert_eq!(tcp.syn(), segment == Segment::Syn);
                assert_eq!(tcp.ack(), segment == Segment::Ack);
                let header = tcp.to_header();
                let payload = tcp.payload();
                let want = match sliced.net {
                    Some(NetSlice::Ipv4(ip)) => header
                        .calc_checksum_ipv4(&ip.header().to_header(), payload)
                        .unwrap(),
                    Some(NetSlice::Ipv6(ip)) => header
                        .calc_checksum_ipv6(&ip.header().to_header(), payload)
                        .unwrap(),
                    _ => panic!("no IP header"),
                };
                assert_eq!(tcp.checksum(), want, "{dst} {segment:?}: TCP checksum");
            }
        }
    }
}
