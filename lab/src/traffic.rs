//! Traffic for labs: a backend server that answers with its name, and clients that open
//! many distinct flows (one source port each) or hold connections open and keep pinging.
//! Every loop is bounded in count and time.

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

// Generous: a shared 2-core machine under a parallel build can stall a process for seconds.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until killed: every line received on a TCP connection, and every UDP datagram,
/// on any of the addresses given, is answered with `name` and, with `report_peer`, the
/// client's address as the server sees it (`NAME PEER`).
pub fn serve(
    name: &str,
    tcp: &[SocketAddr],
    udp: &[SocketAddr],
    report_peer: bool,
) -> std::io::Result<()> {
    let name = name.to_owned();
    let reply = move |peer: SocketAddr| match report_peer {
        true => format!("{name} {}", crate::probe::peer_ip(peer)),
        false => name.clone(),
    };
    let mut threads = Vec::new();
    for addr in udp {
        let socket: UdpSocket = listening(*addr, Type::DGRAM)?.into();
        let reply = reply.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((_, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(reply(peer).as_bytes(), peer);
            }
        }));
    }
    for addr in tcp {
        let listener: TcpListener = listening(*addr, Type::STREAM)?.into();
        let reply = reply.clone();
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let line = format!("{}\n", reply(peer));
                std::thread::spawn(move || answer_lines(stream, line.as_bytes()));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// A socket bound to `addr` (and listening, for TCP). An IPv6 wildcard takes IPv6 only, so
/// a server can listen on 0.0.0.0 and [::] at once.
fn listening(addr: SocketAddr, kind: Type) -> std::io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, kind, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    if kind == Type::STREAM {
        socket.listen(1024)?;
    }
    Ok(socket)
}

/// Answers every line on `stream` with `reply` until the client closes.
fn answer_lines(stream: TcpStream, reply: &[u8]) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        if line.is_err() || writer.write_all(reply).is_err() {
            break;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowResult {
    pub sport: u16,
    pub backend: Option<String>,
    pub error: Option<String>,
}

impl FlowResult {
    fn new(sport: u16, outcome: std::io::Result<String>) -> Self {
        match outcome {
            Ok(name) => Self {
                sport,
                backend: Some(name),
                error: None,
            },
            Err(e) => Self {
                sport,
                backend: None,
                error: Some(e.to_string()),
            },
        }
    }
}

fn bound_tcp(src: IpAddr, sport: u16) -> std::io::Result<Socket> {
    let domain = if src.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::new(src, sport).into())?;
    Ok(socket)
}

fn connect(src: IpAddr, sport: u16, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = bound_tcp(src, sport)?;
    socket.connect_timeout(&target.into(), IO_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn ping(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    stream.write_all(b"ping\n")?;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim().to_string())
}

/// One short TCP connection per source port: connect, ping, read the backend's name, close.
pub fn tcp_flows(src: IpAddr, target: SocketAddr, sports: std::ops::Range<u16>) -> Vec<FlowResult> {
    sports
        .map(|sport| {
            let outcome = connect(src, sport, target).and_then(|mut stream| {
                let mut reader = BufReader::new(stream.try_clone()?);
                ping(&mut stream, &mut reader)
            });
            FlowResult::new(sport, outcome)
        })
        .collect()
}

/// One UDP flow per source port: a datagram, the backend's name back (3 tries).
pub fn udp_flows(src: IpAddr, target: SocketAddr, sports: std::ops::Range<u16>) -> Vec<FlowResult> {
    sports
        .map(|sport| {
            let outcome = (|| -> std::io::Result<String> {
                let socket = UdpSocket::bind(SocketAddr::new(src, sport))?;
                socket.set_read_timeout(Some(Duration::from_millis(500)))?;
                let mut buf = [0u8; 256];
                let mut last = None;
                for _ in 0..3 {
                    socket.send_to(b"ping", target)?;
                    match socket.recv_from(&mut buf) {
                        Ok((n, _)) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| std::io::Error::other("no reply")))
            })();
            FlowResult::new(sport, outcome)
        })
        .collect()
}

/// A held connection's writer and line reader.
type Conn = (TcpStream, BufReader<TcpStream>);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldConnection {
    pub sport: u16,
    /// The backend that answered the first ping.
    pub backend: Option<String>,
    pub answered: u32,
    pub failed: u32,
    /// A later ping was answered by a different backend than the first.
    pub moved: bool,
    pub error: Option<String>,
}

/// The files a `hold` run talks through.
#[derive(Clone, Copy, Debug, Default)]
pub struct HoldFiles<'a> {
    /// Written once every connection is up and has been pinged once.
    pub ready: Option<&'a Path>,
    /// The run ends when it appears.
    pub stop: Option<&'a Path>,
    /// Replaced after every round with a [`HoldProgress`], so a test can tell how many
    /// connections a step lost while the run goes on.
    pub progress: Option<&'a Path>,
}

/// How a `hold` run stands after a round of pings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldProgress {
    pub round: u64,
    /// Connections that failed or moved to another backend so far.
    pub lost: usize,
}

fn write_progress(path: &Path, progress: &HoldProgress) {
    let tmp = path.with_extension("tmp");
    if let Ok(text) = serde_json::to_string(progress) {
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

/// Opens one connection per source port and pings each every `interval` until `duration`
/// passes or the stop file appears (see [`HoldFiles`]).
pub fn hold(
    src: IpAddr,
    target: SocketAddr,
    sports: std::ops::Range<u16>,
    duration: Duration,
    interval: Duration,
    files: HoldFiles<'_>,
) -> Vec<HeldConnection> {
    let mut conns: Vec<(HeldConnection, Option<Conn>)> = sports
        .map(|sport| {
            let mut held = HeldConnection {
                sport,
                backend: None,
                answered: 0,
                failed: 0,
                moved: false,
                error: None,
            };
            let stream = connect(src, sport, target).and_then(|s| {
                let r = BufReader::new(s.try_clone()?);
                Ok((s, r))
            });
            match stream {
                Ok(pair) => (held, Some(pair)),
                Err(e) => {
                    held.error = Some(format!("connect: {e}"));
                    held.failed += 1;
                    (held, None)
                }
            }
        })
        .collect();
    let deadline = Instant::now() + duration;
    let mut first_round = true;
    let mut round = 0;
    loop {
        for (held, stream) in conns.iter_mut() {
            let Some((s, r)) = stream.as_mut() else {
                continue;
            };
            match ping(s, r) {
                Ok(name) => {
                    held.answered += 1;
                    match &held.backend {
                        None => held.backend = Some(name),
                        Some(first) if *first != name => held.moved = true,
                        Some(_) => {}
                    }
                }
                Err(e) => {
                    held.failed += 1;
                    held.error = Some(e.to_string());
                    *stream = None;
                }
            }
        }
        round += 1;
        if let Some(path) = files.progress {
            let lost = conns
                .iter()
                .filter(|(h, _)| h.failed > 0 || h.moved)
                .count();
            write_progress(path, &HoldProgress { round, lost });
        }
        if first_round {
            first_round = false;
            if let Some(ready) = files.ready {
                let _ = std::fs::write(ready, b"ready");
            }
        }
        if Instant::now() >= deadline || files.stop.is_some_and(Path::exists) {
            break;
        }
        std::thread::sleep(interval);
    }
    conns.into_iter().map(|(held, _)| held).collect()
}
