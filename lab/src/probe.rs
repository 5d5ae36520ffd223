//! Clients as a pod or a host process runs them: TCP connections from ephemeral ports, as
//! any application makes them, and DNS-style UDP queries (an unconnected socket,
//! `sendto`/`recvfrom`), each reporting what the socket API showed: the endpoint that
//! answered, `getpeername()`, the reply's source, how long `connect()` took and how it
//! failed. Servers started with `serve --report-peer` answer "NAME PEER", PEER being the
//! client address they saw.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

/// A server's answer: its name and, from `--report-peer` servers, the client it saw.
fn parse_reply(line: &str) -> (String, Option<String>) {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or_default().to_string();
    (name, words.next().map(str::to_string))
}

/// The client address a server reports: IPv4-mapped addresses as plain IPv4.
pub fn peer_ip(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

fn count(map: &mut BTreeMap<String, u32>, key: impl Into<String>) {
    *map.entry(key.into()).or_default() += 1;
}

/// What `count` TCP connections saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub attempts: u32,
    pub answered: u32,
    /// Answers per endpoint (server name).
    pub backends: BTreeMap<String, u32>,
    /// `getpeername()` after connect, as `addr:port`.
    pub peer_names: BTreeMap<String, u32>,
    /// The client address the endpoints saw.
    pub seen_as: BTreeMap<String, u32>,
    /// Failures by stage and kind (`connect: ConnectionRefused`).
    pub errors: BTreeMap<String, u32>,
    /// `connect()` durations of the connections that were set up, in microseconds.
    pub connect_us_p50: u64,
    pub connect_us_max: u64,
    /// The longest `connect()` that failed, in microseconds.
    pub failed_connect_us_max: u64,
}

fn error_key(stage: &str, e: &std::io::Error) -> String {
    format!("{stage}: {:?}", e.kind())
}

/// One connection: connect (timed), getpeername, one line each way, close.
fn one_connection(
    target: SocketAddr,
    timeout: Duration,
    report: &mut ConnectReport,
) -> Option<u64> {
    let domain = if target.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = match Socket::new(domain, Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => {
            count(&mut report.errors, error_key("socket", &e));
            return None;
        }
    };
    let start = Instant::now();
    let connected = socket.connect_timeout(&target.into(), timeout);
    let micros = start.elapsed().as_micros() as u64;
    if let Err(e) = connected {
        count(&mut report.errors, error_key("connect", &e));
        report.failed_connect_us_max = report.failed_connect_us_max.max(micros);
        return None;
    }
    let stream: TcpStream = socket.into();
    let exchange = (|| -> std::io::Result<String> {
        let peer = stream.peer_addr()?;
        count(&mut report.peer_names, peer.to_string());
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        (&stream).write_all(b"ping\n")?;
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    })();
    match exchange {
        Ok(line) => {
            let (name, seen) = parse_reply(&line);
            report.answered += 1;
            count(&mut report.backends, name);
            if let Some(seen) = seen {
                count(&mut report.seen_as, seen);
            }
        }
        Err(e) => count(&mut report.errors, error_key("exchange", &e)),
    }
    Some(micros)
}

/// `count` TCP connections to `target`, one after another, from ephemeral ports.
pub fn connects(target: SocketAddr, count: u32, timeout: Duration) -> ConnectReport {
    let mut report = ConnectReport {
        attempts: count,
        ..ConnectReport::default()
    };
    let mut durations: Vec<u64> = (0..count)
        .filter_map(|_| one_connection(target, timeout, &mut report))
        .collect();
    durations.sort_unstable();
    report.connect_us_p50 = durations.get(durations.len() / 2).copied().unwrap_or(0);
    report.connect_us_max = durations.last().copied().unwrap_or(0);
    report
}

/// What `count` UDP queries saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UdpReport {
    pub attempts: u32,
    pub answered: u32,
    pub backends: BTreeMap<String, u32>,
    /// The source `recvfrom()` gave each reply, as `addr:port`.
    pub reply_sources: BTreeMap<String, u32>,
    pub seen_as: BTreeMap<String, u32>,
    pub errors: BTreeMap<String, u32>,
}

fn unspecified(target: SocketAddr) -> SocketAddr {
    let ip: IpAddr = if target.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    SocketAddr::new(ip, 0)
}

/// One query on an unconnected socket: `sendto(target)`, `recvfrom()` (3 tries).
fn query(socket: &UdpSocket, target: SocketAddr, report: &mut UdpReport) {
    let mut buf = [0u8; 512];
    let mut last = None;
    for _ in 0..3 {
        if let Err(e) = socket.send_to(b"ping", target) {
            last = Some(error_key("sendto", &e));
            continue;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                let (name, seen) = parse_reply(&String::from_utf8_lossy(&buf[..n]));
                report.answered += 1;
                count(&mut report.backends, name);
                count(&mut report.reply_sources, source.to_string());
                if let Some(seen) = seen {
                    count(&mut report.seen_as, seen);
                }
                return;
            }
            Err(e) => last = Some(error_key("recvfrom", &e)),
        }
    }
    count(&mut report.errors, last.unwrap_or_default());
}

/// `count` DNS-style queries to `target`, `per_socket` on each new unconnected socket.
pub fn udp_queries(
    target: SocketAddr,
    count: u32,
    per_socket: u32,
    timeout: Duration,
) -> UdpReport {
    let mut report = UdpReport {
        attempts: count,
        ..UdpReport::default()
    };
    let per_socket = per_socket.max(1);
    let mut left = count;
    while left > 0 {
        let socket = UdpSocket::bind(unspecified(target))
            .and_then(|s| s.set_read_timeout(Some(timeout)).map(|()| s));
        let batch = left.min(per_socket);
        left -= batch;
        match socket {
            Ok(socket) => (0..batch).for_each(|_| query(&socket, target, &mut report)),
            Err(e) => *report.errors.entry(error_key("socket", &e)).or_default() += batch,
        }
    }
    report
}
