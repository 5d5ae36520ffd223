//! The server in the backend namespace, one tokio event loop on a thread of its own.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::Arc,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{netns::Netns, services::SERVICE_PORT};

use super::{io, TcpError, TcpPlan};

/// The server in the backend namespace: answers every `request_bytes` read with
/// `response_bytes`, until the peer closes. Stopped on drop.
pub(crate) struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start(
        backend: &Netns,
        cpu: Option<usize>,
        plan: &TcpPlan,
    ) -> Result<Self, TcpError> {
        // The socket belongs to the namespace of the thread that opens it; connections
        // it accepts belong there too, whatever thread serves them afterwards.
        let listener = backend.run_inside(None, || {
            std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVICE_PORT))
        })?;
        let listener = listener.map_err(io("binding the TCP server"))?;
        // std listens with a backlog of 128; concurrent connects need more.
        // SAFETY: listen on a socket we own; a second listen only resizes the backlog.
        if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
            return Err(io("listen backlog")(std::io::Error::last_os_error()));
        }
        listener
            .set_nonblocking(true)
            .map_err(io("non-blocking listener"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let request = plan.request_bytes;
        let response: Arc<[u8]> = vec![b'r'; plan.response_bytes].into();
        let thread = std::thread::Builder::new()
            .name("tcp-server".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = crate::netns::pin_thread(cpu) {
                        tracing::warn!(error = %e, "server runs unpinned");
                    }
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "no runtime for the TCP server");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "TCP server cannot listen");
                            return;
                        }
                    };
                    tokio::pin!(stopped);
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => {
                                    tokio::spawn(serve(stream, request, response.clone()));
                                }
                                Err(e) => tracing::debug!(error = %e, "accept"),
                            },
                        }
                    }
                });
            })
            .map_err(io("starting the server thread"))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn stop(&mut self) -> Result<(), TcpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| TcpError::ServerPanicked),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

async fn serve(mut stream: tokio::net::TcpStream, request: usize, response: Arc<[u8]>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; request];
    while stream.read_exact(&mut buf).await.is_ok() {
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}
