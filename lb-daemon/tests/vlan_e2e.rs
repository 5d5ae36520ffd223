//! VLANs end to end, in network namespaces: a raw socket on the client writes frames
//! tagged VLAN 10 (this test kernel has no 802.1Q module for a VLAN subinterface). The
//! bridge's port takes the tag out of the frame on receive (into the packet's metadata),
//! and the veth towards the LB keeps it there while its tx VLAN offload is on (the
//! default), as a NIC with rx VLAN stripping on delivers it: the balancer, loaded bound
//! to the interface, reads it with `bpf_xdp_metadata_rx_vlan_tag`. With that offload off
//! the tag stays in the frame and is read in band. Either way a frame of a VLAN not
//! listed is passed untouched and counted (`pass_vlan`), never balanced; with `vlans:
//! [10]` in the settings the same frames are balanced; untagged frames always are.

mod support;

use std::{path::PathBuf, time::Duration};

use lb_lab::{wait_for, Binaries, Lab, CLIENT_ADDR, VIP};
use support::{bins, replace_file, require_root, ScratchDir};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const FRAMES: u32 = 20;

/// Sends `count` UDP datagrams to the VIP from the client's address as raw Ethernet
/// frames, with an 802.1Q tag of `vid` in the frame, or untagged for `vid` "none".
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
if vid != "none":
    frame += struct.pack("!H", 0x8100) + struct.pack("!H", int(vid))
frame += b"\x08\x00" + ip + udp
for _ in range(int(count)):
    s.send(frame)
"#;

fn config(backend: &str, vlans: &str) -> String {
    format!(
        "settings:\n  vlans: [{vlans}]\nservices:\n  - {{name: echo, vip: {VIP}, port: {UDP_PORT}, protocol: udp, backends: [{{address: {backend}}}]}}\n  - {{name: web, vip: {VIP}, port: {TCP_PORT}, protocol: tcp, backends: [{{address: {backend}}}]}}\n"
    )
}

/// A lab with the daemon balancing one UDP and one TCP service, no VLAN listed.
struct VlanLab {
    bins: Binaries,
    lab: Lab,
    _work: ScratchDir,
    config: PathBuf,
    log: PathBuf,
    sender: PathBuf,
    lb_mac: String,
    backend: String,
}

impl VlanLab {
    fn start(tag: &str) -> Self {
        let bins = bins();
        let mut lab = Lab::create(tag, 1).expect("lab");
        let work = ScratchDir::new(tag).expect("scratch dir");
        lab.attach_pass(&bins).expect("pass program");
        lab.start_backends(&bins, TCP_PORT, UDP_PORT)
            .expect("backends");
        let backend = lab.backends[0].addr.clone();
        let config = work.0.join("config.yaml");
        std::fs::write(&config, self::config(&backend, "")).unwrap();
        let log = work.0.join("daemon.log");
        lab.start_daemon(&bins, &config, &log).expect("daemon");
        let sender = work.0.join("send.py");
        std::fs::write(&sender, SENDER).unwrap();
        let lb_mac = lab.mac_of(&lab.lb.clone()).expect("LB MAC");
        let me = Self {
            bins,
            lab,
            _work: work,
            config,
            log,
            sender,
            lb_mac,
            backend,
        };
        me.lab
            .wait_synced(&me.bins, &[(UDP_PORT, 1), (TCP_PORT, 1)])
            .unwrap_or_else(|e| panic!("{e}\n{}", me.daemon_log()));
        me
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&self, reason: &str) -> u64 {
        support::datapath_counter(&self.bins.ferrolb, &self.lab.lb_pin_dir, "xdp", reason)
    }

    /// Sends [`FRAMES`] frames to the UDP service, tagged `vid` ("none": untagged).
    fn send(&self, vid: &str) {
        self.lab
            .exec(
                &self.lab.client,
                "python3",
                &[
                    self.sender.to_str().unwrap(),
                    "eth0",
                    &self.lb_mac,
                    CLIENT_ADDR,
                    VIP,
                    &UDP_PORT.to_string(),
                    vid,
                    &FRAMES.to_string(),
                ],
            )
            .expect("send frames");
    }

    /// Sends a batch tagged `vid` and asserts that counter `reason` rose by all of it and
    /// `other` not at all (`what` names the frames in the message).
    fn expect_each(&self, what: &str, vid: &str, reason: &str, other: &str) {
        let (before, other_before) = (self.count(reason), self.count(other));
        self.send(vid);
        let waited = wait_for(Duration::from_secs(5), reason, || {
            let n = self.count(reason) - before;
            (n >= u64::from(FRAMES)).then_some(n)
        });
        let other_rose = self.count(other) - other_before;
        let rose = waited.unwrap_or_else(|e| {
            panic!(
                "{e}: of {FRAMES} frames tagged {vid}, {reason} rose by {} and {other} by {other_rose}\n{}",
                self.count(reason) - before,
                self.daemon_log()
            )
        });
        assert_eq!(
            rose,
            u64::from(FRAMES),
            "{what}: each counted {reason} once"
        );
        assert_eq!(other_rose, 0, "{what}: none counted {other}");
    }

    /// Lists VLAN 10 in the settings (the file replaced whole, as the daemon documents)
    /// and waits until its frames are balanced.
    fn list_vlan_10(&self) {
        replace_file(&self.config, &config(&self.backend, "10"));
        let forwarded = self.count("forwarded");
        wait_for(
            Duration::from_secs(20),
            "listed VLAN's frames balanced",
            || {
                self.send("10");
                std::thread::sleep(Duration::from_millis(300));
                (self.count("forwarded") > forwarded).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.daemon_log()));
    }

    /// VLAN 10's frames: unlisted, each passed untouched and counted, none balanced;
    /// listed, each balanced. `case` names where the tag is, in the printed measurement.
    fn assert_vlan_10_passed_until_listed(&self, case: &str) {
        self.expect_each("unlisted VLAN 10 frames", "10", "pass_vlan", "forwarded");
        self.list_vlan_10();
        self.expect_each("listed VLAN 10 frames", "10", "forwarded", "pass_vlan");
        println!(
            "tag {case}: of {FRAMES} VLAN 10 frames, unlisted: {FRAMES} pass_vlan, 0 forwarded; listed: {FRAMES} forwarded, 0 pass_vlan"
        );
    }
}

#[test]
fn a_vlan_10_frame_whose_tag_is_in_metadata_is_passed_and_counted_until_listed() {
    if !require_root("VLAN end-to-end") {
        return;
    }
    let lab = VlanLab::start("vm-vlanmeta");

    // Untagged frames are balanced as ever.
    lab.expect_each("untagged frames", "none", "forwarded", "pass_vlan");

    // VLAN 10, its tag in metadata (the switch port's tx VLAN offload is on).
    lab.assert_vlan_10_passed_until_listed("in metadata");
    assert!(
        lab.daemon_log().contains("metadata+frame"),
        "on veth the balancer is loaded device-bound to read tags from metadata:\n{}",
        lab.daemon_log()
    );
    let pin_dir = lab.lab.lb_pin_dir.display().to_string();
    let ferrolb = lab.bins.ferrolb.display().to_string();
    let list = lb_lab::run(&ferrolb, &["--pin-dir", &pin_dir, "list"]).expect("ferrolb list");
    assert!(
        list.contains("VLAN tags read from the packet's metadata and the frame"),
        "ferrolb list shows where tags are read:\n{list}"
    );
    println!("untagged: {FRAMES} frames forwarded, 0 pass_vlan");
}

#[test]
fn a_vlan_10_frame_with_its_tag_in_the_frame_is_passed_and_counted_until_listed() {
    if !require_root("VLAN end-to-end") {
        return;
    }
    let lab = VlanLab::start("vm-vlanband");
    // With the switch port's tx VLAN offload off the tag stays in the frame, as a NIC
    // delivers it with rx VLAN stripping off.
    let switch = lab.lab.switch.clone();
    lab.lab
        .exec(&switch, "ethtool", &["-K", "plb", "txvlan", "off"])
        .expect("switch port: tx VLAN offload off");

    lab.assert_vlan_10_passed_until_listed("in the frame");
}
