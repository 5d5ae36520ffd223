//! Commands that change what is installed without a daemon: the backend side, clean-up,
//! and the offline config check.

use std::{net::IpAddr, path::Path};

use anyhow::{bail, Context, Result};
use lb_daemon::{config, loader, maps::BackendSideMaps};

/// `ferrolb backend`: decapsulation for `vips` and translations to local endpoints, pinned.
pub fn backend(
    pin_dir: &Path,
    iface: &str,
    vips: &[IpAddr],
    translations: &[String],
) -> Result<()> {
    let translations = translations
        .iter()
        .map(|t| config::parse_translation(t).with_context(|| format!("--translate {t}")))
        .collect::<Result<Vec<_>>>()?;
    let attachment = loader::install_backend_side(iface, pin_dir)?;
    let mut maps = BackendSideMaps::open(pin_dir)?;
    maps.set_vips(vips)?;
    maps.set_translations(&translations)?;
    eprintln!(
        "decapsulating IPIP for {} on {iface} ({:?}); assign the VIPs to lo so the stack accepts them",
        vips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        attachment
    );
    Ok(())
}

/// `ferrolb check-config`: parse and validate without touching the kernel.
pub fn check_config(path: &Path) -> Result<()> {
    let state = config::load(path).with_context(|| format!("{}", path.display()))?;
    println!(
        "{}: {} services, valid",
        path.display(),
        state.services.len()
    );
    Ok(())
}

/// `ferrolb cleanup`: detach everything and remove the pins.
pub fn cleanup(pin_dir: &Path) -> Result<()> {
    let removed = loader::uninstall(pin_dir)?;
    println!(
        "removed links [{}] and maps [{}] from {}",
        removed.links.join(", "),
        removed.maps.join(", "),
        pin_dir.display()
    );
    if !removed.left.is_empty() {
        bail!(
            "{} still holds files this build does not know: {}",
            pin_dir.display(),
            removed.left.join(", ")
        );
    }
    Ok(())
}
