//! The XDP balancer loaded into a pin directory of its own, its maps programmed through
//! the daemon's sync engine, packets run with BPF_PROG_TEST_RUN.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::{program_names, NextHop, XdpReason};
use lb_daemon::{
    loader,
    maps::BalancerMaps,
    sync::{DatapathParams, SyncEngine},
};
use lb_model::DesiredState;

use super::PinDir;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The MAC the fixtures give a backend's next hop.
pub fn backend_mac(addr: IpAddr) -> [u8; 6] {
    let last = match addr {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    };
    [0x02, 0xbe, 0, 0, 0, last]
}

pub struct XdpFixture {
    ebpf: aya::Ebpf,
    pub engine: SyncEngine,
    // Dropped last: removes the pins.
    _pin: PinDir,
}

impl XdpFixture {
    pub fn new(tag: &str, params: &DatapathParams, desired: &DesiredState, mtu: u16) -> Self {
        let pin = PinDir::new(tag);
        let ebpf = loader::load_balancer(&pin.path).expect("load balancer");
        let maps = BalancerMaps::open(&pin.path).expect("open maps");
        let engine = SyncEngine::adopt(maps, params).unwrap();
        let mut fixture = Self {
            ebpf,
            engine,
            _pin: pin,
        };
        fixture.apply(desired, mtu);
        fixture
    }

    /// Plans and writes `desired` with the daemon's sync engine, then pins every backend's
    /// next hop with `mtu` (test_run has no route to 198.18.0.0/15 in the host namespace).
    pub fn apply(&mut self, desired: &DesiredState, mtu: u16) {
        self.engine.apply(desired).unwrap();
        let backends: Vec<_> = self
            .engine
            .state()
            .backends
            .iter()
            .map(|(a, b)| (*a, *b))
            .collect();
        for (addr, backend) in &backends {
            let hop = NextHop {
                dst_mac: backend_mac(*addr),
                src_mac: LB_MAC,
                ifindex: 1, // test_run delivers on the loopback
                mtu,
                flags: 0,
                backend_generation: backend.generation,
                expires_jiffies: u64::MAX,
            };
            self.engine.set_static_nexthop(backend.id, hop).unwrap();
        }
    }

    /// Where the maps are pinned.
    pub fn pin_dir(&self) -> &std::path::Path {
        &self._pin.path
    }

    pub fn run(&mut self, packet: &[u8]) -> (u32, Vec<u8>) {
        run_balancer(&mut self.ebpf, packet)
    }

    pub fn counters(&self) -> Vec<u64> {
        self.engine
            .maps()
            .reason_counters()
            .unwrap()
            .iter()
            .map(|c| c.packets)
            .collect()
    }

    /// Runs a packet and checks the verdict and that exactly one counter, `reason`, moved.
    pub fn expect(&mut self, name: &str, packet: &[u8], action: u32, reason: XdpReason) -> Vec<u8> {
        let before = self.counters();
        let (got, out) = self.run(packet);
        let after = self.counters();
        assert_eq!(got, action, "{name}: verdict");
        for &r in XdpReason::ALL {
            let delta = after[r as usize] - before[r as usize];
            let want = u64::from(r == reason);
            assert_eq!(delta, want, "{name}: counter {} moved by {delta}", r.name());
        }
        out
    }
}

/// Runs the loaded XDP balancer once on `packet` (BPF_PROG_RUN); returns its action and
/// the frame it left.
pub fn run_balancer(ebpf: &mut aya::Ebpf, packet: &[u8]) -> (u32, Vec<u8>) {
    let prog: &mut Xdp = ebpf
        .program_mut(program_names::XDP_BALANCER)
        .unwrap()
        .try_into()
        .unwrap();
    let mut out = vec![0u8; packet.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("test_run");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// Keeps the calling thread on the CPU it runs on: BPF_PROG_RUN runs the program there,
/// so per-CPU state (rate limits, LRU lists, the flow cache) is one CPU's throughout.
pub fn pin_to_one_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t we own, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let cpu = libc::sched_getcpu().max(0) as usize;
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin the test thread"
        );
    }
}
