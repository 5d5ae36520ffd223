//! IP fragments end to end, in network namespaces: the client sends UDP datagrams of
//! 4,000 bytes to the VIP over a route MTU of 1,480 (IPv4) / 1,460 (IPv6), so its own
//! kernel fragments them; the balancer sends each datagram's first fragment by Maglev and
//! the rest after it, and the backend that reassembles one answers with its name, the
//! length and a digest of what it received. Every datagram, of both families, must arrive
//! whole (length and digest equal to what was sent) at one backend.

mod support;

use std::{path::Path, time::Duration};

use lb_lab::{wait_for, Lab, LB_ADDR, LB_ADDR6, VIP, VIP6};
use support::{bins, require_root, ScratchDir};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const BIG_PORT: u16 = 7000;
const DATAGRAMS: u32 = 12;

/// On each backend: answers every datagram with "NAME LENGTH SHA256".
const SERVER: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(("%s %d %s" % (sys.argv[1], len(data), hashlib.sha256(data).hexdigest())).encode(), peer)
"#;

/// On the client: sends COUNT datagrams of SIZE random bytes from distinct sockets, each
/// answered; prints one "BACKEND OK|BAD" line per datagram.
const CLIENT: &str = r#"
import hashlib, os, socket, sys
host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
for i in range(count):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(2)
    data = os.urandom(size)
    want = "%d %s" % (size, hashlib.sha256(data).hexdigest())
    answer = None
    for attempt in range(3):
        s.sendto(data, (host, port))
        try:
            answer = s.recv(512).decode()
            break
        except socket.timeout:
            pass
    if answer is None:
        print("none TIMEOUT")
        continue
    name, rest = answer.split(" ", 1)
    print(name, "OK" if rest == want else "BAD " + rest)
"#;

fn config(backends: &[(String, String)]) -> String {
    let list = |v6: bool| {
        backends
            .iter()
            .map(|(a, a6)| format!("{{address: '{}'}}", if v6 { a6 } else { a }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = String::from("services:\n");
    for (name, port, proto) in [
        ("web", TCP_PORT, "tcp"),
        ("echo", UDP_PORT, "udp"),
        ("big", BIG_PORT, "udp"),
    ] {
        text += &format!(
            "  - {{name: {name}, vip: {VIP}, port: {port}, protocol: {proto}, backends: [{}]}}\n",
            list(false)
        );
    }
    text += &format!(
        "  - {{name: big6, vip: '{VIP6}', port: {BIG_PORT}, protocol: udp, backends: [{}]}}\n",
        list(true)
    );
    text
}

#[test]
fn a_datagram_fragmented_by_the_client_arrives_whole_at_one_backend_both_families() {
    if !require_root("fragments end-to-end") {
        return;
    }
    let bins = bins();
    let mut lab = Lab::create("fz-frag", 2).expect("lab");
    let work = ScratchDir::new("fz-frag").expect("scratch dir");
    lab.attach_pass(&bins).expect("pass program");
    lab.start_backends(&bins, TCP_PORT, UDP_PORT)
        .expect("backends");
    let backends: Vec<(String, String)> = lab
        .backends
        .iter()
        .map(|b| (b.addr.clone(), b.addr6.clone()))
        .collect();
    let config_path = work.0.join("config.yaml");
    std::fs::write(&config_path, config(&backends)).unwrap();
    let log = work.0.join("daemon.log");
    lab.start_daemon(&bins, &config_path, &log).expect("daemon");
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    lab.wait_synced(
        &bins,
        &[(TCP_PORT, 2), (UDP_PORT, 2), (BIG_PORT, 2), (BIG_PORT, 2)],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon_log()));

    let server = work.0.join("server.py");
    std::fs::write(&server, SERVER).unwrap();
    let nets: Vec<(String, String)> = lab
        .backends
        .iter()
        .map(|b| (b.netns.clone(), b.name.clone()))
        .collect();
    for (netns, name) in &nets {
        lab.spawn(
            netns,
            Path::new("python3"),
            &[server.to_str().unwrap(), name, &BIG_PORT.to_string()],
            Some(&work.0.join(format!("server-{name}.log"))),
        )
        .expect("server");
        wait_for(Duration::from_secs(10), "server listens", || {
            lab.exec(netns, "ss", &["-lun"])
                .ok()
                .filter(|out| out.contains(&format!(":{BIG_PORT}")))
        })
        .expect("server listens");
    }

    // Room for the outer header on the client's routes, so fragments fit once
    // encapsulated (the balancer never fragments).
    let client = lab.client.clone();
    lab.exec(
        &client,
        "ip",
        &[
            "route",
            "change",
            "198.18.100.0/24",
            "via",
            LB_ADDR,
            "mtu",
            "1480",
        ],
    )
    .expect("IPv4 route MTU");
    lab.exec(
        &client,
        "ip",
        &[
            "-6",
            "route",
            "change",
            "2001:db8:100::/64",
            "via",
            LB_ADDR6,
            "mtu",
            "1460",
        ],
    )
    .expect("IPv6 route MTU");

    let script = work.0.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    for (family, host) in [("ipv4", VIP), ("ipv6", VIP6)] {
        let out = lab
            .exec(
                &client,
                "python3",
                &[
                    script.to_str().unwrap(),
                    host,
                    &BIG_PORT.to_string(),
                    &DATAGRAMS.to_string(),
                    "4000",
                ],
            )
            .unwrap_or_else(|e| panic!("{family}: client: {e}\n{}", daemon_log()));
        let lines: Vec<&str> = out.lines().collect();
        println!("{family}: {}", lines.join(", "));
        assert_eq!(lines.len(), DATAGRAMS as usize, "{family}: {out}");
        for line in &lines {
            assert!(
                line.ends_with(" OK"),
                "{family}: every datagram arrives whole at one backend: {out}\n{}",
                daemon_log()
            );
        }
    }
}
