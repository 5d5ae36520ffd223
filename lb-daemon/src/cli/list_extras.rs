//! What `ferrolb list` shows beside the maps' services: the settings fingerprint (equal
//! on two LB nodes means equal choices) and, while a file-mode daemon checks backends,
//! each checked backend's health from its state file, and where the attached balancer
//! reads VLAN tags.

use std::{io::Write, path::Path};

use anyhow::{Context, Result};
use lb_daemon::{
    health::publish::{self, HealthReport},
    inspect::{fingerprint::Fingerprints, ServiceView},
    loader::{self, VlanTagSource},
    maps::BalancerMaps,
};

pub struct ListExtras {
    fingerprints: Fingerprints,
    health: Option<HealthReport>,
    vlan_tags: Option<VlanTagSource>,
}

impl ListExtras {
    pub fn read(pin_dir: &Path, maps: &BalancerMaps) -> Result<Self> {
        let fingerprints = lb_daemon::inspect::fingerprint::fingerprints(maps)?;
        let health = publish::read(pin_dir).with_context(|| {
            format!(
                "health state file {}",
                publish::state_path(pin_dir).display()
            )
        })?;
        let vlan_tags = loader::attached_tag_source(&pin_dir.join(loader::XDP_LINK_PIN))?;
        Ok(Self {
            fingerprints,
            health,
            vlan_tags,
        })
    }

    /// The services as JSON, each with its fingerprint, the settings fingerprint and
    /// its checked backends' health.
    pub fn json(&self, services: &[ServiceView]) -> Result<serde_json::Value> {
        let mut rows = Vec::with_capacity(services.len());
        for s in services {
            let mut row = serde_json::to_value(s)?;
            let object = row
                .as_object_mut()
                .context("a service renders as an object")?;
            object.insert(
                "settings_fingerprint".into(),
                self.fingerprints.settings.clone().into(),
            );
            if let Some(f) = self.fingerprints.services.get(&s.frontend) {
                object.insert("fingerprint".into(), f.clone().into());
            }
            if let Some(report) = &self.health {
                let targets: Vec<_> = report.of(&s.frontend).collect();
                if !targets.is_empty() {
                    object.insert("health".into(), serde_json::to_value(targets)?);
                    object.insert("health_stale".into(), (!report.writer_alive()).into());
                }
            }
            rows.push(row);
        }
        Ok(serde_json::Value::Array(rows))
    }

    pub fn print_header(&self, out: &mut impl Write) {
        let _ = writeln!(
            out,
            "settings fingerprint {} (flow_hash_seed={}, {} services; equal on every LB node = equal choices)",
            self.fingerprints.settings,
            self.fingerprints.flow_hash_seed,
            self.fingerprints.services.len()
        );
        let vlan_tags = match self.vlan_tags {
            Some(VlanTagSource::MetadataAndFrame) => {
                "from the packet's metadata and the frame (device-bound balancer)"
            }
            Some(VlanTagSource::FrameOnly) => {
                "from the frame only: a tag the NIC strips is not seen (ethtool -K IFACE rxvlan off)"
            }
            None => return,
        };
        let _ = writeln!(out, "VLAN tags read {vlan_tags}");
    }

    /// The service's fingerprint and its checked backends' health, under its line.
    pub fn print_service(&self, out: &mut impl Write, frontend: &str) {
        if let Some(f) = self.fingerprints.services.get(frontend) {
            let _ = writeln!(out, "    fingerprint {f}");
        }
        let Some(report) = &self.health else { return };
        let stale = if report.writer_alive() {
            ""
        } else {
            " (stale: the daemon that wrote it is gone)"
        };
        for t in report.of(frontend) {
            let _ = writeln!(
                out,
                "    health  {:<18} {:<4} checks={:<6} failures={:<6} since={} check={}{}{stale}",
                t.backend.to_string(),
                t.state.health.to_string(),
                t.state.checks,
                t.state.failures,
                t.state.since_unix_s,
                t.check,
                t.state
                    .last_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" last_error={e:?}")),
            );
        }
    }
}
