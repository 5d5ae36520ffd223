//! Peers a user brings: their own datapath on the same topology, in the same layers and
//! tables as the built-in peers. A peer is an XDP object file (attached to the DUT's
//! ingress, its maps pinned where a fill command can write them), setup and teardown
//! commands run in the DUT's namespace, or both. See "External peers" in the README.
//!
//! Commands run with `sh -c` inside the DUT's network namespace and see:
//! `PERF_LAB_PEER` (the peer's name), `PERF_LAB_MAPS` (the directory holding the object's
//! maps pinned by name, when it has an object), `PERF_LAB_SERVICES` (a JSON file: the
//! service set, see [`ServicesFile`]; fill only), `PERF_LAB_IN` / `PERF_LAB_OUT` (the DUT's
//! ingress and egress interfaces), `PERF_LAB_SINK4` / `PERF_LAB_SINK6` (the sink's
//! addresses, the next hop towards every endpoint).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use aya::{programs::Xdp, Ebpf, EbpfLoader};
use serde::{Deserialize, Serialize};

use crate::{
    netns::PinDir,
    services::{Family, ServiceSet, SERVICE_PORT},
};

#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("external peer {0:?}: {1}")]
    Invalid(String, String),
    #[error("external peer {peer}: loading {object}: {source}")]
    Load {
        peer: String,
        object: PathBuf,
        source: Box<aya::EbpfError>,
    },
    #[error("external peer {peer}: program {program}: {source}")]
    Program {
        peer: String,
        program: String,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("external peer {peer}: pinning map {map}: {source}")]
    Pin {
        peer: String,
        map: String,
        source: aya::pin::PinError,
    },
    #[error("external peer {peer}: {what} `{command}` failed: {detail}")]
    Command {
        peer: String,
        what: &'static str,
        command: String,
        detail: String,
    },
    #[error("external peers are registered once per process")]
    AlreadyRegistered,
}

/// The XDP side of an external peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalXdp {
    /// An eBPF object file with the XDP program.
    pub object: PathBuf,
    /// The program's name in the object; the object's only XDP program when left out.
    #[serde(default)]
    pub program: Option<String>,
    /// Run after every change of service set, to write the set into the pinned maps.
    #[serde(default)]
    pub fill: Option<String>,
}

/// One external peer as the user describes it (a JSON array of these is the
/// `--external-peers` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalPeer {
    /// Its name in every table and plot (letters, digits and '-', at most 24).
    pub name: String,
    #[serde(default)]
    pub xdp: Option<ExternalXdp>,
    /// Run once in the DUT namespace after the XDP program is attached.
    #[serde(default)]
    pub setup: Option<String>,
    /// Run in the DUT namespace before the topology is removed.
    #[serde(default)]
    pub teardown: Option<String>,
}

static REGISTRY: OnceLock<Vec<ExternalPeer>> = OnceLock::new();

/// The external peers of this process (none unless `register` ran).
pub fn registered() -> &'static [ExternalPeer] {
    REGISTRY.get().map_or(&[], Vec::as_slice)
}

/// Reads and checks an `--external-peers` file.
pub fn read(path: &Path) -> Result<Vec<ExternalPeer>, ExternalError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExternalError::Read {
        path: path.into(),
        source,
    })?;
    let peers: Vec<ExternalPeer> =
        serde_json::from_str(&text).map_err(|source| ExternalError::Parse {
            path: path.into(),
            source,
        })?;
    Ok(peers)
}

/// Makes `peers` part of this process's peer list (once; `reserved` are the built-in
/// names, which an external peer may not take).
pub fn register(peers: Vec<ExternalPeer>, reserved: &[&str]) -> Result<(), ExternalError> {
    let mut seen = Vec::new();
    for p in &peers {
        let bad = |why: &str| Err(ExternalError::Invalid(p.name.clone(), why.into()));
        let valid_name = !p.name.is_empty()
            && p.name.len() <= 24
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_name {
            return bad("names are 1-24 letters, digits or '-'");
        }
        if reserved.contains(&p.name.as_str()) || seen.contains(&&p.name) {
            return bad("the name is taken");
        }
        if p.xdp.is_none() && p.setup.is_none() {
            return bad("needs an XDP object or a setup command");
        }
        if let Some(xdp) = &p.xdp {
            if !xdp.object.is_file() {
                return bad(&format!("no object file at {}", xdp.object.display()));
            }
        }
        seen.push(&p.name);
    }
    if peers.len() > usize::from(u8::MAX) {
        return Err(ExternalError::Invalid(
            "*".into(),
            "at most 255 peers".into(),
        ));
    }
    REGISTRY
        .set(peers)
        .map_err(|_| ExternalError::AlreadyRegistered)
}

/// The service set as the fill command reads it (`PERF_LAB_SERVICES`).
#[derive(Debug, Serialize)]
pub struct ServicesFile {
    pub services: Vec<ServiceEntry>,
}

#[derive(Debug, Serialize)]
pub struct ServiceEntry {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub backends: Vec<IpAddr>,
}

impl ServicesFile {
    pub fn of(set: &ServiceSet, families: &[Family]) -> Self {
        let services = families
            .iter()
            .flat_map(|&family| {
                (0..set.services).map(move |s| ServiceEntry {
                    vip: set.vip_in(family, s),
                    port: SERVICE_PORT,
                    protocol: "tcp",
                    backends: set.endpoints_in(family, s),
                })
            })
            .collect();
        Self { services }
    }
}

/// The loaded object of a peer, its maps pinned in a directory of their own.
pub struct LoadedXdp {
    pub ebpf: Ebpf,
    /// The program's name (leaked: names live as long as the process).
    pub program: &'static str,
    pub pin: PinDir,
}

/// Loads `peer`'s object and its XDP program, pins every map by name in a fresh pin
/// directory (`role` names it).
pub fn load_xdp(
    peer: &ExternalPeer,
    xdp: &ExternalXdp,
    role: &str,
) -> Result<LoadedXdp, ExternalError> {
    let mut ebpf =
        EbpfLoader::new()
            .load_file(&xdp.object)
            .map_err(|source| ExternalError::Load {
                peer: peer.name.clone(),
                object: xdp.object.clone(),
                source: Box::new(source),
            })?;
    let names: Vec<String> = ebpf
        .programs()
        .filter(|(_, p)| matches!(p, aya::programs::Program::Xdp(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let program = match &xdp.program {
        Some(name) if names.contains(name) => name.clone(),
        Some(name) => {
            return Err(ExternalError::Invalid(
                peer.name.clone(),
                format!("no XDP program {name:?} in the object (it has {names:?})"),
            ))
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(ExternalError::Invalid(
                peer.name.clone(),
                format!("name the XDP program (the object has {names:?})"),
            ))
        }
    };
    let program: &'static str = Box::leak(program.into_boxed_str());
    let prog_err = |source| ExternalError::Program {
        peer: peer.name.clone(),
        program: program.into(),
        source: Box::new(source),
    };
    let xdp_prog: &mut Xdp = ebpf
        .program_mut(program)
        .expect("listed above")
        .try_into()
        .map_err(prog_err)?;
    xdp_prog.load().map_err(prog_err)?;
    let pin = PinDir::new(role);
    let _ = std::fs::create_dir_all(&pin.path);
    for (name, map) in ebpf.maps() {
        map.pin(pin.path.join(name))
            .map_err(|source| ExternalError::Pin {
                peer: peer.name.clone(),
                map: name.into(),
                source,
            })?;
    }
    Ok(LoadedXdp { ebpf, program, pin })
}

/// Where a command runs and what it is told.
pub struct CommandEnv<'a> {
    /// The DUT namespace's path (`/run/netns/...`).
    pub dut_path: &'a Path,
    pub maps: Option<&'a Path>,
    pub services: Option<&'a Path>,
    pub ingress: &'a str,
    pub egress: &'a str,
}

/// Runs `command` with `sh -c` inside the DUT namespace; a non-zero exit is an error
/// carrying its stderr.
pub fn run(
    peer: &ExternalPeer,
    what: &'static str,
    command: &str,
    env: &CommandEnv<'_>,
) -> Result<(), ExternalError> {
    let fail = |detail: String| ExternalError::Command {
        peer: peer.name.clone(),
        what,
        command: command.into(),
        detail,
    };
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", env.dut_path.display()))
        .args(["sh", "-c", command])
        .env("PERF_LAB_PEER", &peer.name)
        .env("PERF_LAB_IN", env.ingress)
        .env("PERF_LAB_OUT", env.egress)
        .env("PERF_LAB_SINK4", crate::topology::SINK_ADDR)
        .env("PERF_LAB_SINK6", crate::topology::SINK_ADDR6);
    if let Some(maps) = env.maps {
        cmd.env("PERF_LAB_MAPS", maps);
    }
    if let Some(services) = env.services {
        cmd.env("PERF_LAB_SERVICES", services);
    }
    let out = cmd.output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A scratch directory under the temporary directory, removed on drop: where service
/// files are written (bpffs, where the maps are pinned, holds no regular files).
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(role: &str) -> Result<Self, ExternalError> {
        let path = std::env::temp_dir().join(format!(
            "{}{}-{role}",
            crate::netns::PREFIX,
            std::process::id()
        ));
        std::fs::create_dir_all(&path).map_err(|source| ExternalError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the service file for `set` into `dir` and returns its path.
pub fn write_services(
    dir: &Path,
    set: &ServiceSet,
    families: &[Family],
) -> Result<PathBuf, ExternalError> {
    let path = dir.join(format!("services-{}.json", set.services));
    let text = serde_json::to_string(&ServicesFile::of(set, families))
        .expect("the service file serialises");
    std::fs::write(&path, text).map_err(|source| ExternalError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}
