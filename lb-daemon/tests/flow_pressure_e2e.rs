//! Issue 15, acceptance 4, end to end in network namespaces: 100 TCP connections through
//! the LB sit idle while 300k new UDP flows hit the VIP, then a backend joins (which moves
//! Maglev's pick for part of the idle flows: only their flow-table entries keep them),
//! then every connection exchanges data again. None may be reset.

mod support;

use std::{
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lb_lab::{traffic::HeldConnection, Binaries, Lab, CLIENT_ADDR, VIP};
use support::{bins, replace_file, require_root, tcp_and_udp_config, ScratchDir};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const HELD: u16 = 100;
const FIRST_SPORT: u16 = 31_000;
const FLOOD: u32 = 300_000;
/// How long the held connections stay silent between their two pings: at least the
/// acceptance's 15 s, with room for the flood and the backend change in between.
const IDLE: Duration = Duration::from_secs(30);

fn config(backends: &[String]) -> String {
    tcp_and_udp_config(backends, TCP_PORT, UDP_PORT)
}

fn ferrolb_json(bins: &Binaries, pin_dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--pin-dir", pin_dir.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = lb_lab::run(bins.ferrolb.to_str().unwrap(), &all).expect("ferrolb");
    serde_json::from_str(&out).unwrap()
}

/// New UDP flows the balancer met (recorded or over budget), from `ferrolb stats`.
fn udp_flows_met(stats: &serde_json::Value) -> u64 {
    let events = &stats["flow"]["events"];
    events["udp_recorded"].as_u64().unwrap() + events["over_budget"].as_u64().unwrap()
}

fn table<'a>(stats: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    stats["flow"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap()
}

/// Sends UDP datagrams `flows` to the VIP from the client's namespace, each a new flow
/// (the `i`-th from 198.19.0.0/16 address `i / 1000`, port 20000 + `i % 1000`), through a
/// raw socket on a thread that joined that namespace. Paced in small batches so the
/// veths' backlogs rarely drop one before the balancer sees it.
fn flood(client_netns: &str, flows: std::ops::Range<u32>) -> Duration {
    let netns = PathBuf::from(format!("/run/netns/{client_netns}"));
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).expect("open the client's namespace");
        // SAFETY: setns on a namespace fd we own; it moves only this thread.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        // SAFETY: plain socket call; the fd is owned by `socket` below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
        let mut packet = [0u8; 20 + 8 + 4];
        packet[0] = 0x45;
        let len = packet.len() as u16;
        packet[2..4].copy_from_slice(&len.to_be_bytes());
        packet[8] = 64;
        packet[9] = 17;
        packet[16..20].copy_from_slice(&vip.octets());
        packet[22..24].copy_from_slice(&UDP_PORT.to_be_bytes());
        packet[24..26].copy_from_slice(&12u16.to_be_bytes());
        // SAFETY: a zeroed sockaddr_in, filled below.
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as u16;
        to.sin_addr.s_addr = u32::from_ne_bytes(vip.octets());
        let started = Instant::now();
        for i in flows {
            let host = i / 1000;
            packet[12..16].copy_from_slice(&[198, 19, (host >> 8) as u8, host as u8]);
            packet[20..22].copy_from_slice(&(20_000 + (i % 1000) as u16).to_be_bytes());
            loop {
                // SAFETY: the buffer and address outlive the call; lengths are theirs.
                let sent = unsafe {
                    libc::sendto(
                        fd,
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&to as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    )
                };
                if sent >= 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                assert_eq!(e.raw_os_error(), Some(libc::ENOBUFS), "sendto: {e}");
                std::thread::sleep(Duration::from_micros(200));
            }
            if i % 128 == 127 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        // SAFETY: our fd, closed once.
        unsafe { libc::close(fd) };
        started.elapsed()
    })
    .join()
    .expect("flood thread")
}

#[test]
fn a_udp_flood_resets_none_of_100_idle_tcp_connections() {
    if !require_root("flow pressure e2e") {
        return;
    }
    let bins = bins();
    let mut lab = Lab::create("fdflood", 4).expect("lab");
    let work = ScratchDir::new("fd-flood-e2e").expect("scratch dir");
    lab.attach_pass(&bins).expect("pass program");
    lab.start_backends(&bins, TCP_PORT, UDP_PORT)
        .expect("backends");
    let addrs: Vec<String> = lab.backends.iter().map(|b| b.addr.clone()).collect();
    let config_path = work.0.join("config.yaml");
    let log = work.0.join("daemon.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    replace_file(&config_path, &config(&addrs[..3]));
    lab.start_daemon(&bins, &config_path, &log).expect("daemon");
    if let Err(e) = lab.wait_synced(&bins, &[(TCP_PORT, 3), (UDP_PORT, 3)]) {
        panic!("{e}; daemon log:\n{}", log_text());
    }

    // 100 connections, one ping each, then silence for `IDLE`; a second ping after it.
    let target = format!("{VIP}:{TCP_PORT}");
    let spec = support::hold::HoldSpec {
        target: &target,
        sport: FIRST_SPORT,
        count: HELD,
        max_ms: IDLE.as_millis() as u64 * 3,
        interval_ms: IDLE.as_millis() as u64,
        progress: false,
    };
    let held = support::hold::start(&mut lab, &bins, &work.0, &spec);
    let (hold, out, stop) = (held.pid, held.out, held.stop);
    let idle_since = Instant::now();
    // The next ping round ends it: written once `hold` sleeps (it looks for the file
    // right after writing `ready`), read after the idle sleep.
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&stop, b"stop").unwrap();

    let pins = lab.lb_pin_dir.clone();
    let before = ferrolb_json(&bins, &pins, &["stats"]);
    // The veths drop a few hundred of 300k on a busy machine: flows the balancer did not
    // meet are made up by more new flows, until it met `FLOOD` (a few rounds at most).
    let mut took = Duration::ZERO;
    let mut sent = 0;
    let mut after = before.clone();
    for _ in 0..5 {
        let met = udp_flows_met(&after) - udp_flows_met(&before);
        let Some(missing) = u64::from(FLOOD).checked_sub(met).filter(|&m| m > 0) else {
            break;
        };
        took += flood(&lab.client, sent..sent + missing as u32);
        sent += missing as u32;
        // The counters lag the socket by the veths' queues.
        std::thread::sleep(Duration::from_millis(500));
        after = ferrolb_json(&bins, &pins, &["stats"]);
    }
    let met = udp_flows_met(&after) - udp_flows_met(&before);
    assert!(
        met >= u64::from(FLOOD),
        "the balancer met {met} of {FLOOD} flood flows"
    );

    // A fourth backend: Maglev's pick changes for part of the idle flows.
    replace_file(&config_path, &config(&addrs));
    if let Err(e) = lab.wait_synced(&bins, &[(TCP_PORT, 4), (UDP_PORT, 4)]) {
        panic!("{e}; daemon log:\n{}", log_text());
    }
    let tuples: String = (0..HELD)
        .map(|i| {
            let sport = FIRST_SPORT + i;
            format!("tcp {CLIENT_ADDR}:{sport} {VIP}:{TCP_PORT}\n")
        })
        .collect();
    let batch = work.0.join("tuples");
    std::fs::write(&batch, tuples).unwrap();
    let explained = ferrolb_json(
        &bins,
        &pins,
        &["explain", "--batch", batch.to_str().unwrap()],
    );
    let explained = explained.as_array().unwrap();
    let with_entry = explained
        .iter()
        .filter(|e| !e["flow_entry"].is_null())
        .count();
    let would_move = explained
        .iter()
        .filter(|e| e["maglev_backend"] != e["backend"])
        .count();
    let idle_for = idle_since.elapsed();
    assert!(
        idle_for < IDLE,
        "flood and backend change took {idle_for:?}, longer than the idle period"
    );

    lab.wait(hold, IDLE * 3).expect("hold exits");
    let text = std::fs::read_to_string(&out).unwrap();
    let held: Vec<HeldConnection> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("hold output {e}: {text}"));
    let reset: Vec<&HeldConnection> = held.iter().filter(|h| h.failed > 0 || h.moved).collect();
    let (tcp, udp) = (table(&after, "tcp"), table(&after, "udp"));
    println!(
        "{sent} UDP flows sent in {took:?} ({met} met the balancer); after the flood: tcp table \
         live={} evicted={}, udp table live={} recorded={} evicted={}, over_budget={}; \
         after the backend change {with_entry}/{HELD} idle flows still have entries, \
         {would_move} of them pinned away from Maglev's new pick; connections idle \
         {:?}; reset or moved: {}/{HELD}",
        tcp["live"],
        tcp["evicted"],
        udp["live"],
        udp["recorded"],
        udp["evicted"],
        after["flow"]["events"]["over_budget"],
        IDLE,
        reset.len(),
    );
    assert!(
        would_move > 0,
        "the backend change must move some idle flows' Maglev pick, or the test proves nothing"
    );
    assert_eq!(
        with_entry,
        usize::from(HELD),
        "idle flows kept their entries"
    );
    assert_eq!(tcp["evicted"], 0, "no TCP entry evicted");
    assert!(
        reset.is_empty(),
        "{} of {HELD} idle connections reset or moved, e.g. {:?}\ndaemon log:\n{}",
        reset.len(),
        reset.first(),
        log_text()
    );
    assert!(
        held.iter().all(|h| h.answered == 2),
        "two pings each: {held:?}"
    );
}
