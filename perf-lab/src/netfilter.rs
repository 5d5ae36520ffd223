//! kube-proxy's rule sets loaded into a namespace: by the rate and TCP layers into the
//! DUT (traffic passing through a node), by the east-west layer into the client's own
//! namespace (traffic a node's process sends: nat OUTPUT), and emptied of connections
//! between runs.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    measured::NotMeasured,
    netns::{Netns, NetnsError},
    peers::{PeerError, PeerKind, Programmed},
    rules,
    services::{Family, ServiceSet},
};

/// Loads kube-proxy's rule sets of `kind` (a netfilter peer) for `set` into `ns`, one
/// load per family of `families`, each its own file, as kube-proxy's per-family proxiers
/// sync. A load still running after `load_timeout` is stopped and reported as not
/// measured (`NotMeasured::LoadStopped`).
pub fn load(
    kind: PeerKind,
    ns: &Netns,
    set: &ServiceSet,
    families: &[Family],
    load_timeout: Duration,
) -> Result<Programmed, PeerError> {
    let started = Instant::now();
    for &family in families {
        let (cmd, text) = match kind.restore_command(family) {
            Some(cmd) => (cmd, rules::iptables(set, family)),
            None => ("nft", rules::nftables(set, family, true)),
        };
        let file = RulesFile::write(&format!("{}{}", kind.tag(), family.number()), &text)?;
        let path = file.path.to_string_lossy().into_owned();
        let args: &[&str] = if cmd == "nft" {
            &["-f", &path]
        } else {
            &[&path]
        };
        match ns.exec_timeout(cmd, args, load_timeout) {
            Ok(_) => {}
            Err(NetnsError::Timeout {
                command, seconds, ..
            }) => {
                let tool = command
                    .split_whitespace()
                    .next()
                    .unwrap_or("load")
                    .to_string();
                return Ok(Programmed::NotMeasured(NotMeasured::LoadStopped {
                    tool,
                    seconds,
                }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The established flows are replayed ACKs whose handshake the peer never saw:
    // conntrack takes a mid-stream ACK as a connection (a NEW entry, DNATed by the
    // service chains; replays then hit it) only with loose pickup on. 1 is the default,
    // set per namespace here so the measurement does not depend on it. The rules just
    // loaded made sure conntrack is there.
    ns.sysctl("net.netfilter.nf_conntrack_tcp_loose=1")?;
    Ok(Programmed::Done(started.elapsed()))
}

/// Empties the conntrack table of `ns` in every family of `families`.
pub fn flush_conntrack(ns: &Netns, families: &[Family]) {
    // conntrack exits 1 when there was nothing to flush; that is not an error.
    for family in families {
        let _ = match family {
            Family::Ipv4 => ns.exec("conntrack", &["-F"]),
            Family::Ipv6 => ns.exec("conntrack", &["-F", "-f", "ipv6"]),
        };
    }
}

/// Writes `text` to a file named for this process and `what`, removed on drop.
pub struct RulesFile {
    pub path: PathBuf,
}

impl RulesFile {
    pub fn write(what: &str, text: &str) -> Result<Self, PeerError> {
        let path = std::env::temp_dir().join(format!(
            "{}{}-{what}.rules",
            crate::netns::PREFIX,
            std::process::id()
        ));
        std::fs::write(&path, text).map_err(|source| PeerError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }
}

impl Drop for RulesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
