//! Why a cell of the results has no figures. Every layer, the JSON file, the report and
//! the plots carry the reason as this type, so deciding what happened never depends on
//! the wording of a message.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NotMeasured {
    /// The datapath cannot hold the service set (ferrolb's planner refuses it); `reason`
    /// is its own error text.
    CannotHold { reason: String },
    /// A rules load was still running at its deadline and was stopped: a limit of the
    /// tool at this size, not something the peer cannot express. Later layers do not try
    /// the same load again.
    LoadStopped { tool: String, seconds: f64 },
}

impl NotMeasured {
    pub fn cannot_hold(reason: impl fmt::Display) -> Self {
        Self::CannotHold {
            reason: reason.to_string(),
        }
    }

    pub fn is_load_stopped(&self) -> bool {
        matches!(self, Self::LoadStopped { .. })
    }

    /// The text of a table cell: a stopped load in full, a set that does not fit by the
    /// last part of its reason.
    pub fn cell(&self) -> String {
        match self {
            Self::LoadStopped { .. } => self.to_string(),
            Self::CannotHold { reason } => {
                let last = reason.split(':').next_back().unwrap_or(reason).trim();
                format!("unsupported ({last})")
            }
        }
    }
}

impl fmt::Display for NotMeasured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CannotHold { reason } => f.write_str(reason),
            Self::LoadStopped { tool, seconds } => {
                write!(
                    f,
                    "not measured: {tool} load took > {seconds:.0} s (stopped)"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_name_a_stopped_load_in_full_and_a_refusal_by_its_last_part() {
        let stopped = NotMeasured::LoadStopped {
            tool: "nft".into(),
            seconds: 300.0,
        };
        assert_eq!(
            stopped.cell(),
            "not measured: nft load took > 300 s (stopped)"
        );
        let refused = NotMeasured::cannot_hold("planning: service svc1: no room in the slots");
        assert_eq!(refused.cell(), "unsupported (no room in the slots)");
        assert!(stopped.is_load_stopped() && !refused.is_load_stopped());
    }

    #[test]
    fn json_names_the_kind() {
        let stopped = NotMeasured::LoadStopped {
            tool: "iptables-legacy-restore".into(),
            seconds: 120.0,
        };
        let json = serde_json::to_value(&stopped).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "load-stopped", "tool": "iptables-legacy-restore", "seconds": 120.0})
        );
        assert_eq!(
            serde_json::from_value::<NotMeasured>(json).unwrap(),
            stopped
        );
    }
}
