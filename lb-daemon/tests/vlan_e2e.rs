//! VLANs end to end, in network namespaces: a raw socket on the client writes frames
//! tagged VLAN 10 (this test kernel has no 802.1Q module for a VLAN subinterface). The
//! bridge's port takes the tag out of the frame on receive (into the packet's metadata),
//! and the veth towards the LB keeps it there while its tx VLAN offload is on: the XDP
//! program then sees an untagged frame, the issue's finding, printed here as measured.
//! With that offload off the tag stays in the frame, as a NIC delivers it with rx VLAN
//! stripping off (docs/architecture.md, "VLANs"): not listed, the frames are passed
//! untouched and counted (`pass_vlan`), never balanced; with `vlans: [10]` in the
//! settings the same frames are balanced.

mod support;

use std::{path::Path, time::Duration};

use lb_lab::{wait_for, Lab, CLIENT_ADDR, VIP};
use support::{bins, require_root, ScratchDir};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const FRAMES: u32 = 20;

/// Sends `count` UDP datagrams to the VIP from the client's address as raw Ethernet
/// frames with an 802.1Q tag of `vid` in the frame.
const SENDER: &str = r#"
import socket, struct, sys
iface, dst, src_ip, vip, port, vid, count = sys.argv[1:8]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
src_mac = s.getsockname()[4][:6]
payload = b"tagged-probe"
udp = struct.pack("!HHHH", 40000, int(port), 8 + len(payload), 0) + payload
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t & 0xffff) + (t >> 16)
    t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 7, 0, 64, 17, 0,
                 socket.inet_aton(src_ip), socket.inet_aton(vip))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frame = bytes.fromhex(dst.replace(":", "")) + src_mac
frame += struct.pack("!HH", 0x8100, int(vid)) + b"\x08\x00" + ip + udp
for _ in range(int(count)):
    s.send(frame)
"#;

fn config(backend: &str, vlans: &str) -> String {
    format!(
        "settings:\n  vlans: [{vlans}]\nservices:\n  - {{name: echo, vip: {VIP}, port: {UDP_PORT}, protocol: udp, backends: [{{address: {backend}}}]}}\n  - {{name: web, vip: {VIP}, port: {TCP_PORT}, protocol: tcp, backends: [{{address: {backend}}}]}}\n"
    )
}

fn xdp_count(bins: &lb_lab::Binaries, lab: &Lab, reason: &str) -> u64 {
    support::datapath_counter(&bins.ferrolb, &lab.lb_pin_dir, "xdp", reason)
}

#[test]
fn a_frame_from_vlan_10_is_passed_and_counted_and_balanced_once_listed() {
    if !require_root("VLAN end-to-end") {
        return;
    }
    let bins = bins();
    let mut lab = Lab::create("fz-vlan", 1).expect("lab");
    let work = ScratchDir::new("fz-vlan").expect("scratch dir");
    lab.attach_pass(&bins).expect("pass program");
    lab.start_backends(&bins, TCP_PORT, UDP_PORT)
        .expect("backends");
    let backend = lab.backends[0].addr.clone();
    let config_path = work.0.join("config.yaml");
    std::fs::write(&config_path, config(&backend, "")).unwrap();
    let log = work.0.join("daemon.log");
    lab.start_daemon(&bins, &config_path, &log).expect("daemon");
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    lab.wait_synced(&bins, &[(UDP_PORT, 1), (TCP_PORT, 1)])
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon_log()));

    let sender = work.0.join("send.py");
    std::fs::write(&sender, SENDER).unwrap();
    let lb_mac = lab.mac_of(&lab.lb.clone()).expect("LB MAC");
    let client = lab.client.clone();
    let send = |lab: &Lab, vid: u16| {
        lab.exec(
            &client,
            "python3",
            &[
                sender.to_str().unwrap(),
                "eth0",
                &lb_mac,
                CLIENT_ADDR,
                VIP,
                &UDP_PORT.to_string(),
                &vid.to_string(),
                &FRAMES.to_string(),
            ],
        )
        .expect("send tagged frames");
    };

    // The finding: with the switch port's tx VLAN offload on (the default), the tag is
    // metadata by the time XDP runs. Measured and printed, not asserted: it is the
    // limit the docs state, not behaviour the datapath chooses.
    let (vlan_a, fwd_a) = (
        xdp_count(&bins, &lab, "pass_vlan"),
        xdp_count(&bins, &lab, "forwarded"),
    );
    send(&lab, 10);
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "tx VLAN offload on at the switch port: of {FRAMES} VLAN 10 frames XDP counted {} pass_vlan and {} forwarded",
        xdp_count(&bins, &lab, "pass_vlan") - vlan_a,
        xdp_count(&bins, &lab, "forwarded") - fwd_a
    );
    let switch = lab.switch.clone();
    lab.exec(&switch, "ethtool", &["-K", "plb", "txvlan", "off"])
        .expect("switch port: tx VLAN offload off");

    // Not listed: every frame passed untouched to the LB's stack and counted, none sent on.
    let (vlan0, fwd0) = (
        xdp_count(&bins, &lab, "pass_vlan"),
        xdp_count(&bins, &lab, "forwarded"),
    );
    send(&lab, 10);
    let passed = wait_for(Duration::from_secs(5), "pass_vlan counts", || {
        let n = xdp_count(&bins, &lab, "pass_vlan") - vlan0;
        (n >= u64::from(FRAMES)).then_some(n)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_log()));
    assert_eq!(passed, u64::from(FRAMES), "each VLAN 10 frame counted once");
    assert_eq!(
        xdp_count(&bins, &lab, "forwarded"),
        fwd0,
        "no VLAN 10 frame was balanced"
    );

    // Listed: the same frames are balanced to the backend. The file is replaced whole
    // (rename into place), as the daemon documents.
    let staged = work.0.join("config.yaml.new");
    std::fs::write(&staged, config(&backend, "10")).unwrap();
    std::fs::rename(&staged, &config_path).unwrap();
    let fwd1 = xdp_count(&bins, &lab, "forwarded");
    let vlan1 = xdp_count(&bins, &lab, "pass_vlan");
    wait_for(Duration::from_secs(20), "VLAN 10 frames balanced", || {
        send(&lab, 10);
        std::thread::sleep(Duration::from_millis(300));
        (xdp_count(&bins, &lab, "forwarded") > fwd1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_log()));
    let before = xdp_count(&bins, &lab, "forwarded");
    send(&lab, 10);
    let balanced = wait_for(Duration::from_secs(5), "all balanced", || {
        let n = xdp_count(&bins, &lab, "forwarded") - before;
        (n >= u64::from(FRAMES)).then_some(n)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_log()));
    assert_eq!(
        balanced,
        u64::from(FRAMES),
        "every listed-VLAN frame balanced"
    );
    let settled_vlan = xdp_count(&bins, &lab, "pass_vlan");
    println!(
        "VLAN 10: {passed} frames passed and counted while unlisted; {balanced} balanced once listed ({} passed while the reload settled)",
        settled_vlan - vlan1
    );
    assert!(Path::new(&log).exists());
}
