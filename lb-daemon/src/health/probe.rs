//! One check of one backend: a TCP connection, or an HTTP/1.0 GET whose status line is
//! read. The check goes to the backend's own address (see docs/architecture.md, "Health
//! checks", for why not through the tunnel to the VIP).

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use super::config::{HealthCheck, Probe};

/// Longest status line read; a server that sends more before CRLF is not answering HTTP.
const MAX_STATUS_LINE: usize = 512;

/// Runs `check` against `target` once, within its timeout: `Ok` or why it failed.
pub async fn run(check: &HealthCheck, target: SocketAddr) -> Result<(), String> {
    match timeout(check.timeout, attempt(&check.probe, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

async fn attempt(probe: &Probe, target: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match probe {
        Probe::Tcp => Ok(()),
        Probe::Http {
            path,
            expect_status,
        } => {
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: {target}\r\nUser-Agent: ferrolb-health\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = read_status(&mut stream).await?;
            if status == *expect_status {
                Ok(())
            } else {
                Err(format!("status {status}, expected {expect_status}"))
            }
        }
    }
}

/// Reads up to the end of the status line and returns its code.
async fn read_status(stream: &mut TcpStream) -> Result<u16, String> {
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 128];
    while !line.windows(2).any(|w| w == b"\r\n") {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
        if line.len() > MAX_STATUS_LINE {
            break;
        }
    }
    status_code(&line)
}

/// The code of an HTTP status line (`HTTP/1.1 200 OK`).
fn status_code(bytes: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().next().unwrap_or_default();
    let mut words = first.split_whitespace();
    match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(code))) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP status line: {first:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn status_lines_parse_and_garbage_is_named() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Ok(204));
        assert_eq!(status_code(b"HTTP/1.0 503\r\n"), Ok(503));
        assert!(status_code(b"SSH-2.0-OpenSSH\r\n")
            .unwrap_err()
            .contains("SSH-2.0"));
        assert!(status_code(b"").is_err());
    }

    fn check(probe: Probe) -> HealthCheck {
        HealthCheck {
            probe,
            port: 0,
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
        }
    }

    /// A one-shot HTTP server on localhost answering `status`.
    async fn http_server(status: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        let ok = http_server("200 OK").await;
        let unavailable = http_server("503 Service Unavailable").await;
        let http = check(Probe::Http {
            path: "/healthz".into(),
            expect_status: 200,
        });
        assert_eq!(run(&check(Probe::Tcp), ok).await, Ok(()));
        assert_eq!(run(&http, ok).await, Ok(()));
        let err = run(&http, unavailable).await.unwrap_err();
        assert!(err.contains("status 503"), "{err}");
        // Nothing listens on a port just released.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = run(&check(Probe::Tcp), closed).await.unwrap_err();
        assert!(err.contains("connect"), "{err}");
    }
}
