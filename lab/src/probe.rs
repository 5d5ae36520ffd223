//! Socket probes for balancing at the socket (east-west): each probe is a fresh socket
//! that addresses a frontend and reports which endpoint answered, what the socket itself
//! says its peer is (`getpeername` for TCP, the replies' source for UDP) and how the call
//! that reached the socket programs ended. Every loop is bounded in count and time.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::traffic::IO_TIMEOUT;

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
/// ping, the endpoint's name, close.
pub fn tcp(target: SocketAddr, count: u32) -> Vec<Probe> {
    (0..count).map(|_| tcp_one(target)).collect()
}

fn tcp_one(target: SocketAddr) -> Probe {
    let started = Instant::now();
    let connected = TcpStream::connect_timeout(&target, IO_TIMEOUT);
    let mut probe = Probe {
        call_micros: started.elapsed().as_micros() as u64,
        ..Probe::default()
    };
    let answered = connected.and_then(|mut stream| {
        probe.peer = Some(stream.peer_addr()?);
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(b"ping\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
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
/// `sendto` and reading each answer with `recvfrom`.
pub fn udp(target: SocketAddr, count: u32, datagrams: u32) -> Vec<Probe> {
    (0..count).map(|_| udp_one(target, datagrams)).collect()
}

fn udp_one(target: SocketAddr, datagrams: u32) -> Probe {
    let mut probe = Probe::default();
    let any = if target.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let outcome = (|| -> std::io::Result<()> {
        let socket = UdpSocket::bind(any)?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
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
