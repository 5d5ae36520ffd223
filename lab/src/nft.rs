//! Packet counters in a lab namespace: nftables rules on `eth0`'s netdev hooks (ingress
//! runs after XDP, so it sees what the XDP program passed; egress sees what leaves),
//! each named by its comment.

use std::collections::BTreeMap;

use crate::{nsexec, LabError};

/// Which of `eth0`'s netdev hooks a counter sits on.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn chain(self) -> &'static str {
        match self {
            Self::Ingress => "in",
            Self::Egress => "out",
        }
    }
}

/// Counts packets arriving at (leaving) `netns`'s eth0 that match `matches` (nftables
/// syntax, such as `ip saddr 198.18.1.1 tcp sport 30080`) under `name`.
pub fn count_packets(netns: &str, hook: Hook, name: &str, matches: &str) -> Result<(), LabError> {
    let chain = hook.chain();
    let hook_name = match hook {
        Hook::Ingress => "ingress",
        Hook::Egress => "egress",
    };
    // `add` leaves an existing table or chain alone.
    nsexec(netns, "nft", &["add", "table", "netdev", "lab"])?;
    nsexec(
        netns,
        "nft",
        &[&format!(
            "add chain netdev lab {chain} {{ type filter hook {hook_name} device eth0 priority 0 ; }}"
        )],
    )?;
    nsexec(
        netns,
        "nft",
        &[&format!(
            "add rule netdev lab {chain} {matches} counter comment \"{name}\""
        )],
    )
    .map(drop)
}

/// Every counter of `netns` by name (0 for one that never matched).
pub fn packet_counts(netns: &str) -> Result<BTreeMap<String, u64>, LabError> {
    let text = nsexec(netns, "nft", &["list", "table", "netdev", "lab"])?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(pos) = line.find("counter packets ") else {
            continue;
        };
        let n: u64 = line[pos + 16..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let name = line
            .split_once("comment \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(name, _)| name.to_string());
        if let Some(name) = name {
            counts.insert(name, n);
        }
    }
    Ok(counts)
}
