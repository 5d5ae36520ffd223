//! Commands that change what is installed without a daemon: the backend side, clean-up,
//! and the offline config check.

use std::{net::IpAddr, path::Path};

use anyhow::{bail, Context, Result};
use lb_daemon::{capacity, config, loader, maps::BackendSideMaps};

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

/// `ferrolb check-config`: parse and validate without touching the kernel, and check the
/// result fits maps with `maglev_slots` slots.
pub fn check_config(path: &Path, maglev_slots: u32) -> Result<()> {
    let state = config::load(path).with_context(|| format!("{}", path.display()))?;
    let sizes = loader::MapSizes {
        maglev_slots,
        ..loader::MapSizes::default()
    };
    let usage = capacity::check(&state, &sizes)
        .with_context(|| format!("{}: does not fit the maps", path.display()))?;
    println!(
        "{}: {} services, {} backends, {} Maglev tables of {} slots (of {maglev_slots}), valid",
        path.display(),
        state.services.len(),
        usage.backends,
        usage.tables,
        usage.slots,
    );
    Ok(())
}

/// `ferrolb cleanup`: detach everything and remove the pins; refused while a daemon owns
/// the pin directory, unless `force`.
pub fn cleanup(pin_dir: &Path, lock_dir: &Path, force: bool) -> Result<()> {
    // Held while removing, so no daemon starts on a half-removed directory.
    let _lock = match loader::DatapathLock::pin_dir(lock_dir, pin_dir) {
        Ok(lock) => Some(lock),
        Err(e @ loader::LockError::Held { .. }) if !force => {
            bail!("{e}; `ferrolb cleanup --force` removes the pins anyway (the daemon then re-installs them unless it is stopped)")
        }
        Err(e) if force => {
            eprintln!("warning: {e}; removing the pins anyway (--force)");
            None
        }
        Err(e) => return Err(e.into()),
    };
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
