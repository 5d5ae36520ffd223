//! An external peer on the DUT of a topology: its XDP object or the XDP_PASS program,
//! its setup command at install, its fill command per service set, its teardown on drop.

use std::path::PathBuf;

use aya::Ebpf;
use lb_common::program_names;

use super::PeerError;
use crate::{
    external::{self, CommandEnv, ExternalPeer},
    netns::Netns,
    programs,
    services::{Family, ServiceSet},
    topology::{DUT_IN, DUT_OUT},
};

/// An external peer on the DUT: its object (maps pinned for the fill command) or the
/// XDP_PASS program veth needs, and its teardown command, run on drop.
pub(super) struct External {
    peer: &'static ExternalPeer,
    dut_path: PathBuf,
    ingress: String,
    /// The loaded object, or the XDP_PASS program when the peer has none.
    prog: Result<external::LoadedXdp, Ebpf>,
    /// Where the service files are written (bpffs holds no regular files).
    files: external::ScratchDir,
}

impl External {
    pub(super) fn install(
        peer: &'static ExternalPeer,
        dut: &Netns,
        ingress: &str,
        role: &str,
    ) -> Result<Self, PeerError> {
        let prog = match &peer.xdp {
            Some(xdp) => {
                let mut loaded = external::load_xdp(peer, xdp, role)?;
                programs::attach_loaded(dut, &mut loaded.ebpf, loaded.program, ingress)?;
                Ok(loaded)
            }
            None => Err(programs::attach_in(
                dut,
                lb_daemon::objects::XDP_PASS,
                program_names::XDP_PASS,
                ingress,
            )?),
        };
        let files = external::ScratchDir::new(role)?;
        let this = Self {
            peer,
            dut_path: dut.path(),
            ingress: ingress.into(),
            prog,
            files,
        };
        if let Some(setup) = &peer.setup {
            external::run(peer, "setup", setup, &this.env(None))?;
        }
        Ok(this)
    }

    fn env<'a>(&'a self, services: Option<&'a std::path::Path>) -> CommandEnv<'a> {
        CommandEnv {
            dut_path: &self.dut_path,
            maps: self.prog.as_ref().ok().map(|l| l.pin.path.as_path()),
            services,
            ingress: &self.ingress,
            egress: if self.ingress == DUT_IN { DUT_OUT } else { "" },
        }
    }

    pub(super) fn program(&self, set: &ServiceSet, families: &[Family]) -> Result<(), PeerError> {
        let Some(fill) = self.peer.xdp.as_ref().and_then(|x| x.fill.as_ref()) else {
            return Ok(());
        };
        let file = external::write_services(&self.files.0, set, families)?;
        external::run(self.peer, "fill", fill, &self.env(Some(&file)))?;
        Ok(())
    }
}

impl Drop for External {
    fn drop(&mut self) {
        if let Some(teardown) = &self.peer.teardown {
            if let Err(e) = external::run(self.peer, "teardown", teardown, &self.env(None)) {
                tracing::warn!("{e}");
            }
        }
    }
}
