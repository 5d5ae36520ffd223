//! The per-interface forwarding sysctl: `bpf_fib_lookup` answers "forwarding disabled"
//! unless the ingress device forwards the packet's family.

use tracing::info;

/// Reading or writing `/proc/sys/net/<family>/conf/<iface>/forwarding` failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ForwardingError {
    pub path: String,
    pub source: std::io::Error,
}

fn sysctl_path(iface: &str, family: &str) -> String {
    format!("/proc/sys/net/{family}/conf/{iface}/forwarding")
}

/// Turns on forwarding of `family` (`ipv4` or `ipv6`) on `iface` unless it is on.
pub fn ensure_forwarding(iface: &str, family: &str) -> Result<(), ForwardingError> {
    let path = sysctl_path(iface, family);
    let current = std::fs::read_to_string(&path).map_err(|source| ForwardingError {
        path: path.clone(),
        source,
    })?;
    if current.trim() != "1" {
        std::fs::write(&path, "1").map_err(|source| ForwardingError {
            path: path.clone(),
            source,
        })?;
        info!(%iface, family, "enabled forwarding: the datapath's route lookups need it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sysctl_is_per_interface_and_family() {
        assert_eq!(
            sysctl_path("eth0", "ipv6"),
            "/proc/sys/net/ipv6/conf/eth0/forwarding"
        );
    }

    #[test]
    fn a_missing_interface_names_the_path() {
        let err = ensure_forwarding("wt-host-missing", "ipv4").unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .starts_with("/proc/sys/net/ipv4/conf/wt-host-missing/forwarding: "),
            "{err}"
        );
    }
}
