//! kube-proxy conformance: the expectations of kube-proxy's own table-driven tests, case by
//! case, asked of ferrolb's model. Each test names the upstream test function and case it
//! comes from (kubernetes/kubernetes, `pkg/proxy/...`); the cases are written here from
//! what those tests expect, through the driver in `support.rs`.
//!
//! Files are grouped by upstream test function. Upstream cases that cannot be expressed as
//! a verdict of the model (masquerading, conntrack clean-up, rule text) are listed in
//! `docs/kube-proxy-semantics.md`, "Conformance with kube-proxy's tests".

mod support;

mod endpoint_slice_cache;
mod nft_cluster_ip_general;
mod nft_external_traffic_policy;
mod nft_internal_external_masquerade;
mod nft_internal_traffic_policy;
mod nft_load_balancer;
mod nft_no_endpoints_reject;
mod nft_node_ports;
mod nft_overall_rules;
mod nft_service_map;
mod nft_terminating_endpoints;
mod nft_update_endpoints_map;
mod service_change_tracker;
mod topology_categorize_endpoints;
