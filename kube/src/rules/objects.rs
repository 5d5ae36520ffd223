//! Which objects count (rules 1, 2 and 3 of `docs/kube-proxy-semantics.md`): Services this
//! proxy serves (not headless, not ExternalName, not handed to another proxy) and the
//! EndpointSlices that belong to them.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{Service, ServiceSpec},
    discovery::v1::EndpointSlice,
};

use super::{node::NodeConfig, ServiceName};

/// Label that hands a Service (and its slices) to another proxy (rule 2).
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the EndpointSlice controller puts on slices of headless Services (rule 2).
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Label joining an EndpointSlice to its Service (rule 3).
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Whether an object carrying these labels is ours to program (rule 2). The watch's label
/// selector says the same; checking again keeps the rules correct on their own.
pub fn labels_select(
    labels: Option<&BTreeMap<String, String>>,
    service_proxy_name: Option<&str>,
) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key));
    if get(LABEL_HEADLESS).is_some() {
        return false;
    }
    match (get(LABEL_SERVICE_PROXY_NAME), service_proxy_name) {
        (None, None) => true,
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

pub fn service_name(svc: &Service) -> Option<ServiceName> {
    Some(ServiceName::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().filter(|n| !n.is_empty())?,
    ))
}

/// The Service a slice belongs to, by its `kubernetes.io/service-name` label (rule 3).
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceName> {
    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    if name.is_empty() {
        return None;
    }
    Some(ServiceName::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

/// The Service's name and spec when this proxy programs it (rules 1 and 2): it has a name
/// and a spec, its labels select this proxy, and it is neither ExternalName nor headless.
pub(crate) fn served<'a>(
    svc: &'a Service,
    cfg: &NodeConfig,
) -> Option<(ServiceName, &'a ServiceSpec)> {
    let name = service_name(svc)?;
    let spec = svc.spec.as_ref()?;
    // Rule 2: labels hand the Service to another proxy or mark it headless.
    if !labels_select(
        svc.metadata.labels.as_ref(),
        cfg.service_proxy_name.as_deref(),
    ) {
        return None;
    }
    // Rule 1: headless and ExternalName Services have nothing to proxy.
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let primary = spec.cluster_ip.as_deref().unwrap_or("");
    if primary.is_empty() || primary == "None" {
        return None;
    }
    Some((name, spec))
}

/// The Service's slices this proxy reads (rules 2 and 3), in name order so that every
/// build reads them alike.
pub(crate) fn served_slices<'a>(
    slices: &[&'a EndpointSlice],
    cfg: &NodeConfig,
) -> Vec<&'a EndpointSlice> {
    let mut served: Vec<&EndpointSlice> = slices
        .iter()
        .copied()
        .filter(|s| {
            labels_select(
                s.metadata.labels.as_ref(),
                cfg.service_proxy_name.as_deref(),
            )
        })
        .collect();
    served.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    served
}
