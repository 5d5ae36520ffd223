//! Health checks end to end (issue 13, acceptance 3): the daemon in config-file mode
//! checks three backends over TCP; one backend's server is killed and, within
//! interval × fall + 1 s, no new flow goes to it and 300 new connections all succeed; the
//! server comes back and takes new flows again; connections held open to the other
//! backends exchange data throughout, undisturbed.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lb_lab::{traffic::HeldConnection, wait_for, Binaries, Lab, VIP};
use support::{bins, require_root, ScratchDir};

const PORT: u16 = 8080;
const INTERVAL_MS: u64 = 200;
const FALL: u64 = 3;
const RISE: u64 = 2;

fn config(backends: &[String]) -> String {
    let list = support::backend_list(backends);
    format!(
        "services:\n  - name: web\n    vip: {VIP}\n    port: {PORT}\n    protocol: tcp\n    backends: [{list}]\n    \
         health: {{type: tcp, interval_ms: {INTERVAL_MS}, timeout_ms: {INTERVAL_MS}, rise: {RISE}, fall: {FALL}}}\n"
    )
}

/// One backend's name server on all its addresses (the VIP on lo for the balanced
/// traffic, its own address for the checks).
fn start_server(lab: &mut Lab, bins: &Binaries, backend: usize) -> u32 {
    let (netns, name) = (
        lab.backends[backend].netns.clone(),
        lab.backends[backend].name.clone(),
    );
    let tcp = format!("0.0.0.0:{PORT}");
    let pid = lab
        .spawn(
            &netns,
            &bins.lab,
            &["serve", "--name", &name, "--tcp", &tcp],
            None,
        )
        .expect("server");
    wait_for(Duration::from_secs(5), "server to listen", || {
        lab.exec(&netns, "ss", &["-ltn", &format!("sport = :{PORT}")])
            .ok()
            .filter(|out| out.contains(&format!(":{PORT}")))
    })
    .expect("server listens");
    pid
}

/// Slots each backend address owns in the kernel's table for the service.
fn slots(lab: &Lab, bins: &Binaries) -> BTreeMap<String, u64> {
    let list = lab.list_json(bins).expect("list");
    let mut out = BTreeMap::new();
    for b in list[0]["backends"].as_array().into_iter().flatten() {
        out.insert(
            b["address"].as_str().unwrap_or("?").to_string(),
            b["slots"].as_u64().unwrap_or(0),
        );
    }
    out
}

/// Flows answered per backend name; panics with the daemon's log if any failed.
fn answered(
    lab: &Lab,
    bins: &Binaries,
    sport: u16,
    count: u16,
    log: &Path,
) -> BTreeMap<String, usize> {
    let flows = lab
        .flows(bins, "tcp", &format!("{VIP}:{PORT}"), sport, count)
        .expect("tcp flows");
    let failed: Vec<_> = flows.iter().filter(|f| f.backend.is_none()).collect();
    assert!(
        failed.is_empty(),
        "{} of {count} new connections failed, e.g. {:?}\ndaemon log:\n{}",
        failed.len(),
        failed.first(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    let mut per = BTreeMap::new();
    for f in flows {
        *per.entry(f.backend.unwrap()).or_default() += 1;
    }
    per
}

fn hold_start(lab: &mut Lab, bins: &Binaries, work: &Path) -> (u32, PathBuf, PathBuf) {
    let (out, ready, stop) = (
        work.join("hold.json"),
        work.join("ready"),
        work.join("stop"),
    );
    let target = format!("{VIP}:{PORT}");
    let args = [
        "hold",
        "--target",
        &target,
        "--sport",
        "40000",
        "--count",
        "60",
        "--max-ms",
        "60000",
        "--interval-ms",
        "50",
        "--ready-file",
        ready.to_str().unwrap(),
        "--stop-file",
        stop.to_str().unwrap(),
    ];
    let pid = lab.client_background(bins, &args, &out).expect("hold");
    wait_for(Duration::from_secs(30), "held connections", || {
        ready.exists().then_some(())
    })
    .expect("hold ready");
    (pid, out, stop)
}

#[test]
fn a_dead_backend_is_drained_within_the_bound_and_returns_when_it_recovers() {
    if !require_root("health checks end to end") {
        return;
    }
    let bins = bins();
    let mut lab = Lab::create("edgeh", 3).expect("lab");
    let work = ScratchDir::new("edge-health").expect("scratch");
    lab.attach_pass(&bins).expect("pass program");
    let mut servers = Vec::new();
    let sides: Vec<(String, String)> = lab
        .backends
        .iter()
        .map(|b| (b.netns.clone(), b.pin_dir.display().to_string()))
        .collect();
    for (i, (netns, pin)) in sides.iter().enumerate() {
        lab.exec(
            netns,
            bins.ferrolb.to_str().unwrap(),
            &["--pin-dir", pin, "backend", "--iface", "eth0", "--vip", VIP],
        )
        .expect("backend side");
        servers.push(start_server(&mut lab, &bins, i));
    }
    let addrs: Vec<String> = lab.backends.iter().map(|b| b.addr.clone()).collect();
    let cfg = work.path().join("config.yaml");
    std::fs::write(&cfg, config(&addrs)).unwrap();
    let log = work.path().join("daemon.log");
    lab.start_daemon(&bins, &cfg, &log).expect("daemon");
    lab.wait_synced(&bins, &[(PORT, 3)])
        .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()));

    let (hold_pid, hold_out, hold_stop) = hold_start(&mut lab, &bins, work.path());
    struct Victim {
        name: String,
        addr: String,
    }
    let victim = Victim {
        name: lab.backends[1].name.clone(),
        addr: lab.backends[1].addr.clone(),
    };

    // Kill b2's server: its checks fail from now on.
    lab.stop(servers[1]);
    let killed = Instant::now();
    // The acceptance bound (issue 13): interval × fall + 1 s.
    let bound = Duration::from_millis(INTERVAL_MS * FALL + 1_000);
    let drained_after = wait_for(bound, "the dead backend to leave the table", || {
        (slots(&lab, &bins).get(&victim.addr).copied().unwrap_or(0) == 0).then(|| killed.elapsed())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    println!(
        "dead backend drained {drained_after:?} after its server was killed (bound {bound:?})"
    );
    // Within the bound, counted from the kill: every new connection succeeds, none on b2.
    std::thread::sleep(bound.saturating_sub(killed.elapsed()));
    let during = answered(&lab, &bins, 30_000, 300, &log);
    println!("300 new connections with b2 dead: {during:?}");
    assert!(
        !during.contains_key(&victim.name),
        "a new flow went to the dead backend: {during:?}"
    );
    assert_eq!(during.values().sum::<usize>(), 300);

    // The state is published: `ferrolb list` shows b2 down with its last error.
    let list = lab.list_json(&bins).expect("list");
    let health = list[0]["health"]
        .as_array()
        .expect("health in list")
        .clone();
    let b2 = health
        .iter()
        .find(|t| t["backend"] == victim.addr.as_str())
        .expect("b2 checked");
    assert_eq!(b2["health"], "down", "{b2}");
    assert!(
        b2["last_error"].as_str().unwrap_or("").contains("connect"),
        "{b2}"
    );
    assert!(list[0]["settings_fingerprint"]
        .as_str()
        .is_some_and(|f| f.len() == 16));

    // b2 recovers: rise successes bring it back, and it takes new flows again.
    servers[1] = start_server(&mut lab, &bins, 1);
    let back = wait_for(Duration::from_secs(10), "the backend to return", || {
        (slots(&lab, &bins).get(&victim.addr).copied().unwrap_or(0) > 0).then_some(())
    });
    back.unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    let after = answered(&lab, &bins, 31_000, 300, &log);
    println!("300 new connections after b2 returned: {after:?}");
    assert!(
        after.get(&victim.name).copied().unwrap_or(0) > 0,
        "b2 takes no new flows: {after:?}"
    );

    // The held connections to b1 and b3 exchanged data throughout, on their backend.
    std::fs::write(&hold_stop, b"stop").unwrap();
    lab.wait(hold_pid, Duration::from_secs(30))
        .expect("hold exits");
    let held: Vec<HeldConnection> =
        serde_json::from_str(&std::fs::read_to_string(&hold_out).unwrap()).expect("hold output");
    let others: Vec<&HeldConnection> = held
        .iter()
        .filter(|h| h.backend.as_deref() != Some(victim.name.as_str()))
        .collect();
    assert!(
        others.len() >= 20,
        "too few held connections on b1/b3: {}",
        others.len()
    );
    for h in &others {
        assert!(
            h.failed == 0 && !h.moved && h.answered > 10,
            "a connection to another backend was disturbed: {h:?}"
        );
    }
    println!(
        "{} held connections to b1/b3: none failed or moved; {} to b2 ended with its server",
        others.len(),
        held.len() - others.len()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("backend down") && text.contains("backend up"),
        "{text}"
    );
}
