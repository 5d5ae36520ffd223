//! Network namespaces perf-lab creates and removes, commands run inside them, and code run
//! inside them on a thread of this process (setns affects only the calling thread).
//!
//! Commands enter only the network namespace (`nsenter --net`), never a new mount
//! namespace as `ip netns exec` makes, so bpffs pins stay the host's.

use std::{
    fs::File,
    io::Read,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lb_lab::run;

/// Every namespace perf-lab makes starts with this, followed by the owning process id.
pub const PREFIX: &str = "flbperf";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(transparent)]
    Command(#[from] lb_lab::LabError),
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setns into {name}: {source}")]
    Setns {
        name: String,
        source: std::io::Error,
    },
    #[error("pinning the thread to CPU {cpu}: {source}")]
    Affinity { cpu: usize, source: std::io::Error },
    #[error("a thread working in namespace {0} panicked")]
    ThreadPanicked(String),
    #[error("{command} in {name}: still running after {seconds:.0} s, stopped")]
    Timeout {
        command: String,
        name: String,
        seconds: f64,
    },
    #[error("{command} in {name}: {source}")]
    Spawn {
        command: String,
        name: String,
        source: std::io::Error,
    },
}

/// A namespace owned by this process; deleted on drop, also when a run panics.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `flbperf<pid>-<role>` with loopback up and IPv6 off (no stray neighbour
    /// discovery frames reach the counters).
    pub fn create(role: &str) -> Result<Self, NetnsError> {
        let name = format!("{PREFIX}{}-{role}", std::process::id());
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        for key in [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            ns.exec("sysctl", &["-qw", key])?;
        }
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a command inside the namespace and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, NetnsError> {
        let net = format!("--net={}", self.path().display());
        let mut full = vec![net.as_str(), program];
        full.extend_from_slice(args);
        Ok(run("nsenter", &full)?)
    }

    /// `exec` with a deadline: a rule load that would run for many minutes is stopped and
    /// reported (`NetnsError::Timeout`) instead of stalling the whole suite. nsenter execs
    /// the program in its own process, so stopping that process stops the tool itself.
    pub fn exec_timeout(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, NetnsError> {
        let command = format!("{program} {}", args.join(" "));
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NetnsError::Spawn {
                command: command.clone(),
                name: self.name.clone(),
                source,
            })?;
        // Readers on their own threads, so a chatty tool cannot block on a full pipe.
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() >= timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(NetnsError::Spawn {
                        command,
                        name: self.name.clone(),
                        source,
                    });
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match status {
            None => Err(NetnsError::Timeout {
                command,
                name: self.name.clone(),
                seconds: timeout.as_secs_f64(),
            }),
            Some(s) if s.success() => Ok(stdout),
            Some(s) => Err(NetnsError::Command(lb_lab::LabError::Command {
                command: format!("{command} in {} ({s})", self.name),
                stderr,
            })),
        }
    }

    pub fn sysctl(&self, key_value: &str) -> Result<(), NetnsError> {
        self.exec("sysctl", &["-qw", key_value]).map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace (and, if given, is pinned to
    /// `cpu`). Interface names and indexes, XDP attachment and BPF_PROG_RUN's ingress
    /// interface are all resolved in the thread's namespace.
    pub fn run_inside<T: Send>(
        &self,
        cpu: Option<usize>,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, NetnsError> {
        let path = self.path();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on a namespace fd we hold open; affects this thread only.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(NetnsError::Setns {
                            name: self.name.clone(),
                            source: std::io::Error::last_os_error(),
                        });
                    }
                    if let Some(cpu) = cpu {
                        pin_thread(cpu)?;
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| NetnsError::ThreadPanicked(self.name.clone()))?
        })
    }

    /// `ip -o link show dev X` inside the namespace: "5: X@if4: <...> ... link/ether MAC ...".
    /// (/sys/class/net shows the host's interfaces: sysfs belongs to the mount namespace.)
    fn link_line(&self, iface: &str) -> Result<String, NetnsError> {
        self.exec("ip", &["-o", "link", "show", "dev", iface])
    }

    fn unexpected(&self, what: &str, text: &str) -> NetnsError {
        NetnsError::Command(lb_lab::LabError::Command {
            command: format!("{what} in {}", self.name),
            stderr: format!("unexpected {text:?}"),
        })
    }

    /// The interface's index inside this namespace.
    pub fn ifindex(&self, iface: &str) -> Result<u32, NetnsError> {
        let text = self.link_line(iface)?;
        text.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| self.unexpected(&format!("ifindex of {iface}"), &text))
    }

    pub fn mac(&self, iface: &str) -> Result<[u8; 6], NetnsError> {
        let text = self.link_line(iface)?;
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .and_then(parse_mac)
            .ok_or_else(|| self.unexpected(&format!("MAC of {iface}"), &text))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn pin_thread(cpu: usize) -> Result<(), NetnsError> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays in bounds for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(NetnsError::Affinity {
                cpu,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

fn owner_is_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
    pid.is_empty() || !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and pin directories left by perf-lab runs whose process is gone.
pub fn remove_stale() {
    let listed = run("ip", &["netns", "list"]).unwrap_or_default();
    for ns in listed.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner_is_gone(ns) {
            tracing::info!(netns = ns, "removing a namespace left by an earlier run");
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_is_gone(&name) {
                tracing::info!(pins = name, "removing pins left by an earlier run");
                let _ = lb_daemon::loader::uninstall(&entry.path());
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A pin directory for one ferrolb instance; removed on drop.
#[derive(Debug)]
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(role: &str) -> Self {
        let path = PathBuf::from(format!("/sys/fs/bpf/{PREFIX}{}-{role}", std::process::id()));
        let _ = lb_daemon::loader::uninstall(&path);
        let _ = std::fs::remove_dir_all(&path);
        Self { path }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = lb_daemon::loader::uninstall(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip() {
        let mac = [0x02, 0xab, 0, 1, 0xff, 0x10];
        assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
        assert_eq!(parse_mac("02:ab:00:01:ff"), None);
        assert_eq!(parse_mac("02:ab:00:01:ff:10:11"), None);
    }

    #[test]
    fn only_dead_owners_are_stale() {
        let me = std::process::id();
        assert!(!owner_is_gone(&format!("{PREFIX}{me}-src")));
        assert!(owner_is_gone(&format!("{PREFIX}999999999-src")));
        assert!(!owner_is_gone("flbdemo123-lb"));
    }
}
