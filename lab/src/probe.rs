//! Socket probes for balancing at the socket (east-west): each probe is a fresh socket
//! that addresses a frontend and reports which endpoint answered, what the socket itself
//! says its peer is (`getpeername` for TCP, the replies' source for UDP) and how the call
//! that reached the socket programs ended. Every loop is bounded in count and time.
//! [`Summary`] counts many probes' outcomes; servers started with `serve --report-peer`
//! answer "NAME PEER", so it also counts the client addresses the endpoints saw.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Probe {
    /// The name the endpoint answered with (its first answer).
    pub backend: Option<String>,
    /// TCP: `getpeername` after connecting; UDP: the source of the first reply.
    pub peer: Option<SocketAddr>,
    /// UDP: a later reply of the same socket came from another endpoint or source.
    pub moved: bool,
    /// The error of the call that failed, as errno and text.
    pub errno: Option<i32>,
    pub error: Option<String>,
    /// How long `connect` (TCP) or the first `sendto` (UDP) took, in microseconds.
    pub call_micros: u64,
}

impl Probe {
    fn failed(mut self, error: &std::io::Error) -> Self {
        self.errno = error.raw_os_error();
        self.error = Some(error.to_string());
        self
    }
}

/// `count` TCP connections to `target`, one socket each: connect, `getpeername`, one
/// ping, the endpoint's name, close; `timeout` for the connect and for the answer.
/// `icmp_errors`: see [`connect`].
pub fn tcp(target: SocketAddr, count: u32, timeout: Duration, icmp_errors: bool) -> Vec<Probe> {
    (0..count)
        .map(|_| tcp_one(target, timeout, icmp_errors))
        .collect()
}

/// A connected stream, within `timeout`. With `icmp_errors` the socket asks for ICMP errors
/// on its error queue (`IP_RECVERR` / `IPV6_RECVERR`) before connecting.
///
/// Why a lab needs that: a balancer in the same kernel answers a SYN while the client's
/// `connect()` still holds its socket (the whole path runs in the softirq that the SYN's
/// transmission triggers), and TCP then keeps a port unreachable only as a soft error
/// (`TcpExtLockDroppedIcmps`). IPv4 queues the error on the socket anyway, which wakes the
/// connect at once; IPv6 queues it only with `IPV6_RECVERR`, so without it the connect ends
/// at the SYN's first retransmission (1 s), whose answer finds the socket free. Across a
/// real network the answer arrives after `connect()` returned, and either family is
/// refused at once.
pub fn connect(
    target: SocketAddr,
    timeout: Duration,
    icmp_errors: bool,
) -> std::io::Result<TcpStream> {
    if !icmp_errors {
        return TcpStream::connect_timeout(&target, timeout);
    }
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    let (level, name) = if target.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and an int option of the size given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.connect_timeout(&target.into(), timeout)?;
    Ok(socket.into())
}

fn tcp_one(target: SocketAddr, timeout: Duration, icmp_errors: bool) -> Probe {
    let started = Instant::now();
    let connected = connect(target, timeout, icmp_errors);
    let mut probe = Probe {
        call_micros: started.elapsed().as_micros() as u64,
        ..Probe::default()
    };
    let answered = connected.and_then(|mut stream| {
        probe.peer = Some(stream.peer_addr()?);
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"ping\n")?;
        let mut line = String::new();
        if BufReader::new(stream).read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim().to_string())
    });
    match answered {
        Ok(name) => Probe {
            backend: Some(name),
            ..probe
        },
        Err(e) => probe.failed(&e),
    }
}

/// `count` unconnected UDP sockets, each sending `datagrams` datagrams to `target` with
/// `sendto` and reading each answer with `recvfrom` (waiting `timeout` for each).
pub fn udp(target: SocketAddr, count: u32, datagrams: u32, timeout: Duration) -> Vec<Probe> {
    (0..count)
        .map(|_| udp_one(target, datagrams, timeout))
        .collect()
}

fn udp_one(target: SocketAddr, datagrams: u32, timeout: Duration) -> Probe {
    let mut probe = Probe::default();
    let any = if target.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let outcome = (|| -> std::io::Result<()> {
        let socket = UdpSocket::bind(any)?;
        socket.set_read_timeout(Some(timeout))?;
        for n in 0..datagrams {
            let started = Instant::now();
            let sent = socket.send_to(b"ping", target);
            if n == 0 {
                probe.call_micros = started.elapsed().as_micros() as u64;
            }
            sent?;
            let (name, source) = answer(&socket, target)?;
            match (&probe.backend, probe.peer) {
                (Some(first), Some(peer)) => probe.moved |= *first != name || peer != source,
                _ => (probe.backend, probe.peer) = (Some(name), Some(source)),
            }
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => probe,
        Err(e) => probe.failed(&e),
    }
}

/// The next answer on `socket`, sending the ping again after a lost datagram (3 tries).
fn answer(socket: &UdpSocket, target: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let mut buf = [0u8; 256];
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            socket.send_to(b"ping", target)?;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                return Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), source))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no reply")))
}

/// The client address a server reports: IPv4-mapped addresses as plain IPv4.
pub fn peer_ip(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

/// Many probes' outcomes, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub probes: u32,
    pub answered: u32,
    /// Answers per endpoint (the first word of the answer).
    pub backends: BTreeMap<String, u32>,
    /// The client address the endpoints saw (the answer's second word, if any).
    pub seen_as: BTreeMap<String, u32>,
    /// What the sockets reported as their peer (`getpeername`, or the UDP replies'
    /// source), as `addr:port`.
    pub peers: BTreeMap<String, u32>,
    /// UDP sockets whose later replies came from another endpoint or source.
    pub moved: u32,
    /// Failures: `connect: KIND` for a TCP connect or the UDP call that failed, `answer:
    /// KIND` after a TCP connection was set up.
    pub errors: BTreeMap<String, u32>,
    /// The calls of probes that answered, in microseconds (median and slowest).
    pub call_micros_p50: u64,
    pub call_micros_max: u64,
    /// The slowest call of a probe that failed, in microseconds.
    pub failed_call_micros_max: u64,
}

fn count(map: &mut BTreeMap<String, u32>, key: impl Into<String>) {
    *map.entry(key.into()).or_default() += 1;
}

impl Summary {
    pub fn of(probes: &[Probe]) -> Self {
        let mut s = Self {
            probes: probes.len() as u32,
            ..Self::default()
        };
        let mut calls = Vec::new();
        for p in probes {
            if let Some(peer) = p.peer {
                count(&mut s.peers, peer.to_string());
            }
            s.moved += u32::from(p.moved);
            match (&p.backend, &p.error) {
                (Some(answer), None) => {
                    let mut words = answer.split_whitespace();
                    count(&mut s.backends, words.next().unwrap_or_default());
                    if let Some(seen) = words.next() {
                        count(&mut s.seen_as, seen);
                    }
                    s.answered += 1;
                    calls.push(p.call_micros);
                }
                _ => {
                    // A TCP probe with a peer was connected: it failed afterwards.
                    let stage = if p.peer.is_some() {
                        "answer"
                    } else {
                        "connect"
                    };
                    let kind = match p.errno {
                        Some(errno) => {
                            format!("{:?}", std::io::Error::from_raw_os_error(errno).kind())
                        }
                        None => p.error.clone().unwrap_or_default(),
                    };
                    count(&mut s.errors, format!("{stage}: {kind}"));
                    s.failed_call_micros_max = s.failed_call_micros_max.max(p.call_micros);
                }
            }
        }
        calls.sort_unstable();
        s.call_micros_p50 = calls.get(calls.len() / 2).copied().unwrap_or(0);
        s.call_micros_max = calls.last().copied().unwrap_or(0);
        s
    }
}
