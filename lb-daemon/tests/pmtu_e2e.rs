//! Path MTU end to end, in network namespaces: a client with an ordinary 1500-byte MTU and
//! no route MTU uploads through the VIP. Its full-size packets do not fit once the
//! balancer adds the outer header; the balancer answers "fragmentation needed" / "packet
//! too big", the client's path MTU discovery converges, and the uploads complete: a 10 MB
//! HTTP POST (curl to a Python HTTP server) and a bulk TCP stream for several seconds,
//! IPv4 and IPv6.

mod support;

use std::path::Path;

use lb_lab::{wait_for, Lab, VIP, VIP6};
use support::{bins, require_root, ScratchDir};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const HTTP_PORT: u16 = 9000;
const BULK_PORT: u16 = 9001;
const UPLOAD_BYTES: usize = 10 * 1024 * 1024;

/// The backend's servers, both families: an HTTP server that answers a POST with the
/// number of body bytes it read, and a sink that reads a stream to its end and answers
/// with the byte count.
const SERVERS: &str = r#"
import http.server, socket, socketserver, sys, threading

class Upload(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        left = int(self.headers["Content-Length"])
        got = 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            got += len(chunk)
            left -= len(chunk)
        body = ("received %d\n" % got).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class Dual(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

class Sink(socketserver.BaseRequestHandler):
    def handle(self):
        got = 0
        while True:
            chunk = self.request.recv(1 << 16)
            if not chunk:
                break
            got += len(chunk)
        self.request.sendall(b"%d\n" % got)

class DualSink(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

http_port, bulk_port = int(sys.argv[1]), int(sys.argv[2])
threading.Thread(target=DualSink(("::", bulk_port), Sink).serve_forever, daemon=True).start()
Dual(("::", http_port), Upload).serve_forever()
"#;

/// Streams to `host:port` for `seconds`, then prints "sent received".
const BULK_CLIENT: &str = r#"
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=20)
chunk = bytes(range(256)) * 256
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.sendall(chunk)
    sent += len(chunk)
s.shutdown(socket.SHUT_WR)
reply = b""
while not reply.endswith(b"\n"):
    part = s.recv(64)
    if not part:
        break
    reply += part
print(sent, reply.decode().strip())
"#;

fn config(backend: &str, backend6: &str) -> String {
    let mut text = String::from("services:\n");
    for (name, port, proto) in [
        ("web", TCP_PORT, "tcp"),
        ("echo", UDP_PORT, "udp"),
        ("upload", HTTP_PORT, "tcp"),
        ("bulk", BULK_PORT, "tcp"),
    ] {
        text += &format!(
            "  - {{name: {name}, vip: {VIP}, port: {port}, protocol: {proto}, backends: [{{address: {backend}}}]}}\n"
        );
        if proto == "tcp" && port != TCP_PORT {
            text += &format!(
                "  - {{name: {name}6, vip: '{VIP6}', port: {port}, protocol: {proto}, backends: [{{address: '{backend6}'}}]}}\n"
            );
        }
    }
    text
}

fn stat(stats: &serde_json::Value, reason: &str) -> u64 {
    stats["xdp"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["reason"] == reason)
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or(0)
}

#[test]
fn uploads_from_a_1500_byte_client_complete_through_the_vip_both_families() {
    if !require_root("pmtu end-to-end") {
        return;
    }
    let bins = bins();
    let mut lab = Lab::create("icmp", 1).expect("lab");
    let work = ScratchDir::new("fl-icmp-pmtu").expect("scratch dir");
    lab.attach_pass(&bins).expect("pass program");
    lab.start_backends(&bins, TCP_PORT, UDP_PORT)
        .expect("backends");
    let b = &lab.backends[0];
    let (backend_ns, backend, backend6) = (b.netns.clone(), b.addr.clone(), b.addr6.clone());
    std::fs::write(work.0.join("config.yaml"), config(&backend, &backend6)).unwrap();
    let log = work.0.join("daemon.log");
    lab.start_daemon(&bins, &work.0.join("config.yaml"), &log)
        .expect("daemon");
    let synced = lab.wait_synced(
        &bins,
        &[
            (TCP_PORT, 1),
            (UDP_PORT, 1),
            (HTTP_PORT, 1),
            (HTTP_PORT, 1),
            (BULK_PORT, 1),
            (BULK_PORT, 1),
        ],
    );
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    synced.unwrap_or_else(|e| panic!("{e}\n{}", daemon_log()));

    let servers = work.0.join("servers.py");
    std::fs::write(&servers, SERVERS).unwrap();
    let args = [
        servers.to_str().unwrap(),
        &HTTP_PORT.to_string(),
        &BULK_PORT.to_string(),
    ];
    lab.spawn(
        &backend_ns,
        Path::new("python3"),
        &args,
        Some(&work.0.join("servers.log")),
    )
    .expect("servers");
    wait_for(std::time::Duration::from_secs(10), "upload servers", || {
        lab.exec(&backend_ns, "ss", &["-ltn"]).ok().filter(|out| {
            out.contains(&format!(":{BULK_PORT}")) && out.contains(&format!(":{HTTP_PORT}"))
        })
    })
    .expect("servers listen");

    let client = lab.client.clone();
    let mtu = lab
        .exec(&client, "ip", &["-o", "link", "show", "eth0"])
        .unwrap();
    assert!(
        mtu.contains("mtu 1500"),
        "the client's link MTU is 1500: {mtu}"
    );
    let routes = lab.exec(&client, "ip", &["route"]).unwrap()
        + &lab.exec(&client, "ip", &["-6", "route"]).unwrap();
    assert!(
        !routes.contains(" mtu "),
        "no route MTU on the client: {routes}"
    );

    let body = work.0.join("upload.bin");
    std::fs::write(
        &body,
        (0..UPLOAD_BYTES)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let bulk = work.0.join("bulk.py");
    std::fs::write(&bulk, BULK_CLIENT).unwrap();
    for (family, host, url_host) in [
        ("ipv4", VIP, VIP.to_string()),
        ("ipv6", VIP6, format!("[{VIP6}]")),
    ] {
        let url = format!("http://{url_host}:{HTTP_PORT}/");
        let data = format!("@{}", body.display());
        let out = lab
            .exec(
                &client,
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "60",
                    "-X",
                    "POST",
                    "--data-binary",
                    &data,
                    &url,
                ],
            )
            .unwrap_or_else(|e| panic!("{family}: 10 MB upload: {e}\n{}", daemon_log()));
        assert_eq!(
            out.trim(),
            format!("received {UPLOAD_BYTES}"),
            "{family}: the server read the whole upload"
        );

        let out = lab
            .exec(
                &client,
                "python3",
                &[bulk.to_str().unwrap(), host, &BULK_PORT.to_string(), "4"],
            )
            .unwrap_or_else(|e| panic!("{family}: bulk upload: {e}\n{}", daemon_log()));
        let counts: Vec<u64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
        println!(
            "{family}: bulk upload of 4 s: sent {} bytes, the server counted {}",
            counts[0], counts[1]
        );
        assert_eq!(counts.len(), 2, "{family}: {out}");
        assert_eq!(counts[0], counts[1], "{family}: every byte sent arrived");
        assert!(
            counts[0] > 10 * 1024 * 1024,
            "{family}: a bulk transfer moved {} bytes",
            counts[0]
        );
    }

    // The client learned the path MTU from the balancer's answers.
    let stats = lb_lab::run(
        bins.ferrolb.to_str().unwrap(),
        &[
            "--pin-dir",
            lab.lb_pin_dir.to_str().unwrap(),
            "stats",
            "-o",
            "json",
        ],
    )
    .expect("stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let answered = stat(&stats, "too_big_answered");
    println!("too_big_answered: {answered}");
    assert!(answered >= 2, "one answer per family at least: {stats}");
}
