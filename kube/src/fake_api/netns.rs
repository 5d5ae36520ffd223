//! Serving the fake API inside a network namespace, and a kubeconfig pointing at it.

use std::{fs::File, io, os::fd::AsRawFd, path::Path, thread::JoinHandle, time::Duration};

use tokio::sync::oneshot;

use super::FakeApi;

/// How long [`FakeApi::serve_in_netns`] waits for its thread to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl FakeApi {
    /// Serves on 127.0.0.1 inside the network namespace at `netns` (such as
    /// `/run/netns/NAME`), from a thread of its own that entered it, so a process in that
    /// namespace reaches the server on its loopback. Stops when the handle is dropped.
    pub fn serve_in_netns(&self, netns: &Path) -> io::Result<NetnsServer> {
        let api = self.clone();
        let netns = netns.to_owned();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<io::Result<u16>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-api".into())
            .spawn(move || {
                let runtime = enter_netns(&netns).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                let runtime = match runtime {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let port = api.serve().await;
                    let listening = port.is_ok();
                    let _ = started_tx.send(port);
                    if listening {
                        // Either a stop or the handle being dropped ends the wait.
                        let _ = stopped.await;
                    }
                });
                // Dropping the runtime drops every connection and open watch.
            })?;
        let port = started_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "fake API did not start"))??;
        Ok(NetnsServer {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A [`FakeApi`] serving inside a network namespace; dropping it stops the server and
/// closes every connection.
pub struct NetnsServer {
    /// The port on 127.0.0.1 inside the namespace.
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsServer {
    /// The server's URL, as a client inside the namespace uses it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig pointing at the server, with no credentials.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }
}

impl Drop for NetnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A kubeconfig (YAML) for a server at `url` with no credentials.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster:
      server: {url}
users:
  - name: anonymous
    user: {{}}
contexts:
  - name: fake
    context:
      cluster: fake
      user: anonymous
current-context: fake
"
    )
}

/// Moves the calling thread (only it) into the network namespace at `path`, such as
/// `/run/netns/NAME`. Sockets it creates from then on belong to that namespace.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns on a valid, open namespace file descriptor; CLONE_NEWNET changes only
    // the calling thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
