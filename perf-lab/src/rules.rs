//! Rule sets laid out the way kube-proxy lays them out, for the same services ferrolb gets.
//!
//! iptables mode (pkg/proxy/iptables): `KUBE-SERVICES` holds one rule per service port,
//! matched in order, jumping to `KUBE-SVC-*`, which picks an endpoint with a cascade of
//! `statistic --mode random` rules (1/n, 1/(n-1), ..., last unconditional) and jumps to a
//! `KUBE-SEP-*` chain doing the DNAT. Masquerade marking and the postrouting check are
//! there too. nftables mode (pkg/proxy/nftables): one verdict map `service-ips` keyed by
//! address . protocol . port dispatches to a per-service chain that picks an endpoint with
//! `numgen random mod n vmap`.
//!
//! Sources are inside the cluster CIDR stand-in, so nothing is masqueraded (pod-to-service
//! traffic); the marking rules are evaluated all the same. NodePort handling (a `fib`
//! local-address check in nftables mode, `addrtype` in iptables mode) is left out: no
//! service here has a node port.
//!
//! IPv6: kube-proxy runs one proxier per family, each with its own rules: in nftables mode
//! the table `ip6 kube-proxy` (same chains, `ipv6_addr` maps, `ip6 daddr` matches), in
//! iptables mode the same KUBE-* chains loaded with `ip6tables-restore` (/128 matches,
//! `[addr]:port` DNAT targets). Each family is its own file and load, as kube-proxy syncs
//! each family on its own.

use std::{fmt::Write, net::IpAddr};

use crate::services::{
    Family, ServiceSet, CLUSTER_CIDR, CLUSTER_CIDR6, SERVICE_PORT, VIP_NET, VIP_NET6,
};

/// How a family is spelled in the rule languages.
struct Spelling {
    /// nft table family and address match keyword (`ip` / `ip6`).
    nft: &'static str,
    nft_addr_type: &'static str,
    host_prefix: u8,
    cluster_cidr: &'static str,
    vip_net: &'static str,
}

impl Spelling {
    fn of(family: Family) -> Self {
        match family {
            Family::Ipv4 => Self {
                nft: "ip",
                nft_addr_type: "ipv4_addr",
                host_prefix: 32,
                cluster_cidr: CLUSTER_CIDR,
                vip_net: VIP_NET,
            },
            Family::Ipv6 => Self {
                nft: "ip6",
                nft_addr_type: "ipv6_addr",
                host_prefix: 128,
                cluster_cidr: CLUSTER_CIDR6,
                vip_net: VIP_NET6,
            },
        }
    }
}

/// `addr:port` as a DNAT target (IPv6 in brackets).
fn socket(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// An endpoint address as part of a chain name: nft names take no colons, so an IPv6
/// address has them as dots.
fn name_part(addr: IpAddr) -> String {
    addr.to_string().replace(':', ".")
}

/// A stable, kube-proxy-like chain suffix (kube-proxy uses base32 of a SHA-256).
fn chain_hash(parts: &[u32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016X}")
}

/// iptables-restore (IPv4) or ip6tables-restore (IPv6) input for `set` in `family`
/// (filter and nat tables, as kube-proxy writes them).
pub fn iptables(set: &ServiceSet, family: Family) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    let port = SERVICE_PORT;
    let sp = Spelling::of(family);
    let (host, cluster) = (sp.host_prefix, sp.cluster_cidr);
    for i in 0..set.services {
        let vip = set.vip_in(family, i);
        let svc = format!("KUBE-SVC-{}", chain_hash(&[i]));
        let name = format!("ns/svc{i}:http");
        writeln!(chains, ":{svc} - [0:0]").unwrap();
        writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {vip}/{host} --dport {port} -j {svc}"
        )
        .unwrap();
        writeln!(
            rules,
            "-A {svc} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {vip}/{host} --dport {port} ! -s {cluster} -j KUBE-MARK-MASQ"
        )
        .unwrap();
        let endpoints = set.endpoints_in(family, i);
        let n = endpoints.len();
        for (j, ep) in endpoints.iter().enumerate() {
            let target = socket(*ep, port);
            let sep = format!("KUBE-SEP-{}", chain_hash(&[i, j as u32 + 1]));
            writeln!(chains, ":{sep} - [0:0]").unwrap();
            if j + 1 < n {
                let p = 1.0 / (n - j) as f64;
                writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {target}\" -m statistic --mode random --probability {p:.10} -j {sep}"
                )
                .unwrap();
            } else {
                writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {target}\" -j {sep}"
                )
                .unwrap();
            }
            writeln!(
                rules,
                "-A {sep} -m comment --comment {name} -s {ep}/{host} -j KUBE-MARK-MASQ"
            )
            .unwrap();
            writeln!(
                rules,
                "-A {sep} -m comment --comment {name} -m tcp -p tcp -j DNAT --to-destination {target}"
            )
            .unwrap();
        }
    }
    let mut out = String::with_capacity(chains.len() + rules.len() + 2048);
    out.push_str(
        "*filter\n\
         :KUBE-FORWARD - [0:0]\n\
         :KUBE-SERVICES - [0:0]\n\
         :KUBE-PROXY-FIREWALL - [0:0]\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         COMMIT\n\
         *nat\n\
         :KUBE-SERVICES - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n\
         :KUBE-MARK-MASQ - [0:0]\n",
    );
    out.push_str(&chains);
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    );
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

/// iptables-restore input that empties what `iptables` installed.
pub fn iptables_empty() -> &'static str {
    "*filter\nCOMMIT\n*nat\nCOMMIT\n"
}

pub const NFT_TABLE: &str = "kube-proxy";

/// `nft -f` input for `set` in `family` (table `ip kube-proxy` or `ip6 kube-proxy`): the
/// whole table, replaced atomically (delete + add in one
/// transaction, as kube-proxy's full resync does).
///
/// Load time and why it grows with the square of the services: every per-service chain
/// ends in `numgen random mod n vmap { ... }`, an anonymous map, exactly as kube-proxy
/// writes it. When the kernel binds an anonymous set to its rule
/// (`__nft_set_trans_bind`) it walks the whole list of the transaction's pending
/// changes so far, and a full load is one transaction holding every chain, rule, set and
/// element. `perf record` of `nft -f` at 3,000 services puts 62 % of the time in that
/// walk; here 3,000 services loaded in ~4 s, 10,000 in ~35-42 s and 30,000 in ~680 s.
/// Neither the file's syntax nor batching elements changes it (one `add element` per
/// element, the table-block form and knftables' flat `add chain`/`add rule` form all
/// measured the same within noise); the transaction is the cost. Within the faithful
/// layout, the order inside the one transaction is what can be chosen:
/// - the dispatch elements (`service-ips`, `cluster-ips`) come after every chain, so the
///   binds do not walk them (and they go in as a few large `add element` statements,
///   not one per element);
/// - nft declares every chain of a table block before any rule, then adds rules chain by
///   chain; listing the service chains (whose rule binds the anonymous map) before the
///   endpoint chains puts all binds ahead of the endpoint chains' rules, so no bind walks
///   them: about 20 % less load time at 3,000 services, measured.
///
/// Splitting the load into several transactions would avoid the square but is not what
/// kube-proxy does (its full sync is atomic), so it is not done here.
pub fn nftables(set: &ServiceSet, family: Family, replace: bool) -> String {
    let port = SERVICE_PORT;
    let sp = Spelling::of(family);
    let (nf, addr_type, cluster, vip_net) = (sp.nft, sp.nft_addr_type, sp.cluster_cidr, sp.vip_net);
    let mut out = String::new();
    if replace {
        // `add` first so the delete cannot fail on a fresh namespace.
        writeln!(
            out,
            "add table {nf} {NFT_TABLE}\ndelete table {nf} {NFT_TABLE}"
        )
        .unwrap();
    }
    writeln!(out, "table {nf} {NFT_TABLE} {{").unwrap();
    writeln!(
        out,
        "  comment \"rules for kube-proxy\"\n\
         \x20 set cluster-ips {{ type {addr_type}; comment \"Active ClusterIPs\"; }}\n\
         \x20 map service-ips {{ type {addr_type} . inet_proto . inet_service : verdict; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"; }}\n\
         \x20 map no-endpoint-services {{ type {addr_type} . inet_proto . inet_service : verdict; }}\n\
         \x20 map firewall-ips {{ type {addr_type} . inet_proto . inet_service : verdict; }}"
    )
    .unwrap();
    out.push_str(
        "  chain filter-prerouting { type filter hook prerouting priority -110; ct state new jump firewall-check; }\n\
         \x20 chain filter-forward { type filter hook forward priority -110; ct state new jump service-endpoints-check; ct state new jump cluster-ips-check; }\n\
         \x20 chain firewall-check { NF daddr . meta l4proto . th dport vmap @firewall-ips; }\n\
         \x20 chain service-endpoints-check { NF daddr . meta l4proto . th dport vmap @no-endpoint-services; }\n\
         \x20 chain nat-prerouting { type nat hook prerouting priority -100; jump services; }\n\
         \x20 chain nat-output { type nat hook output priority -100; jump services; }\n\
         \x20 chain nat-postrouting { type nat hook postrouting priority 100; jump masquerading; }\n\
         \x20 chain masquerading { meta mark & 0x4000 == 0 return; meta mark set meta mark ^ 0x4000; masquerade fully-random; }\n\
         \x20 chain mark-for-masquerade { meta mark set meta mark | 0x4000; }\n\
         \x20 chain services { NF daddr . meta l4proto . th dport vmap @service-ips; }\n"
            .replace("NF", nf)
            .as_str(),
    );
    writeln!(
        out,
        "  chain cluster-ips-check {{ {nf} daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"; {nf} daddr {vip_net} drop comment \"Drop traffic to unallocated ClusterIPs\"; }}"
    )
    .unwrap();
    let mut elements = Vec::with_capacity(set.services as usize);
    let mut vips = Vec::with_capacity(set.services as usize);
    // Written after the service chains (see the doc comment: binds first).
    let mut endpoint_chains = String::new();
    for i in 0..set.services {
        let vip = set.vip_in(family, i);
        let svc = format!("service-{}-ns/svc{i}/tcp/http", &chain_hash(&[i])[..8]);
        let endpoints = set.endpoints_in(family, i);
        let mut arms = Vec::with_capacity(endpoints.len());
        for (j, ep) in endpoints.iter().enumerate() {
            let chain = format!(
                "endpoint-{}-ns/svc{i}/tcp/http__{}/{port}",
                &chain_hash(&[i, j as u32 + 1])[..8],
                name_part(*ep)
            );
            writeln!(
                endpoint_chains,
                "  chain {chain} {{ {nf} saddr {ep} jump mark-for-masquerade; meta l4proto tcp dnat to {}; }}",
                socket(*ep, port)
            )
            .unwrap();
            arms.push(format!("{j} : goto {chain}"));
        }
        writeln!(
            out,
            "  chain {svc} {{ {nf} daddr {vip} tcp dport {port} {nf} saddr != {cluster} jump mark-for-masquerade; numgen random mod {} vmap {{ {} }}; }}",
            endpoints.len(),
            arms.join(", ")
        )
        .unwrap();
        elements.push(format!("{vip} . tcp . {port} : goto {svc}"));
        vips.push(vip.to_string());
    }
    out.push_str(&endpoint_chains);
    out.push_str("}\n");
    // Elements in chunks: one huge line is slow for nft's parser and hard to read.
    for chunk in elements.chunks(1000) {
        writeln!(
            out,
            "add element {nf} {NFT_TABLE} service-ips {{ {} }}",
            chunk.join(", ")
        )
        .unwrap();
    }
    for chunk in vips.chunks(1000) {
        writeln!(
            out,
            "add element {nf} {NFT_TABLE} cluster-ips {{ {} }}",
            chunk.join(", ")
        )
        .unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(services: u32, backends: u32) -> ServiceSet {
        ServiceSet { services, backends }
    }

    /// The `KUBE-SERVICES` rules that dispatch to a service chain, in order.
    fn dispatch(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES") && l.contains("KUBE-SVC-"))
            .collect()
    }

    #[test]
    fn iptables_has_one_dispatch_rule_per_service_with_the_target_last() {
        let text = iptables(&set(50, 3), Family::Ipv4);
        let rules = dispatch(&text);
        assert_eq!(rules.len(), 50);
        assert!(rules.last().unwrap().contains("-d 198.19.0.49/32"));
        assert_eq!(text.matches("-j DNAT").count(), 150);
        // Probability cascade 1/3, 1/2, then unconditional.
        assert_eq!(text.matches("--probability 0.3333333333").count(), 50);
        assert_eq!(text.matches("--probability 0.5000000000").count(), 50);
        assert_eq!(text.matches("COMMIT").count(), 2);
        for line in text.lines().filter(|l| l.starts_with(':')) {
            let chain = line[1..].split_whitespace().next().unwrap();
            assert!(chain.len() <= 28, "{chain} too long for iptables");
        }
    }

    #[test]
    fn nftables_maps_every_service_and_picks_among_its_endpoints() {
        let text = nftables(&set(1500, 2), Family::Ipv4, true);
        assert!(text.starts_with("add table ip kube-proxy\ndelete table ip kube-proxy\n"));
        let elements = text
            .lines()
            .filter(|l| l.starts_with("add element ip kube-proxy service-ips"))
            .map(|l| l.matches(": goto").count())
            .sum::<usize>();
        assert_eq!(elements, 1500);
        assert_eq!(text.matches("numgen random mod 2 vmap").count(), 1500);
        assert_eq!(text.matches("dnat to").count(), 3000);
        // Binds before the endpoint chains' rules, dispatch elements after every chain.
        let last_service = text.rfind("  chain service-").unwrap();
        let first_endpoint = text.find("  chain endpoint-").unwrap();
        let first_element = text.find("add element").unwrap();
        assert!(last_service < first_endpoint && first_endpoint < first_element);
    }

    #[test]
    fn ipv6_rules_use_the_ipv6_table_and_addresses_only() {
        let s = set(20, 3);
        let nft = nftables(&s, Family::Ipv6, true);
        assert!(nft.starts_with("add table ip6 kube-proxy\ndelete table ip6 kube-proxy\n"));
        assert!(nft.contains("table ip6 kube-proxy {"));
        assert!(!nft.contains("ipv4_addr") && !nft.contains(" ip daddr") && !nft.contains("198."));
        assert_eq!(nft.matches("dnat to [2001:db8:64::").count(), 60);
        assert!(nft.contains("ip6 daddr 2001:db8:19::13 tcp dport 80"));
        for line in nft.lines().filter(|l| l.trim_start().starts_with("chain ")) {
            let name = line.split_whitespace().nth(1).unwrap();
            assert!(!name.contains(':'), "{name}");
        }
        let ipt = iptables(&s, Family::Ipv6);
        let rules = dispatch(&ipt);
        assert_eq!(rules.len(), 20);
        assert!(rules.last().unwrap().contains("-d 2001:db8:19::13/128"));
        assert_eq!(
            ipt.matches("-j DNAT --to-destination [2001:db8:64::")
                .count(),
            60
        );
        assert!(!ipt.contains("198."));
        assert_eq!(
            ipt.matches("/32 ").count(),
            ipt.matches("! -s 2001:db8::/32 ").count()
        );
    }
}
