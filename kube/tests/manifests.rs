//! Every manifest in `deploy/` parses into its k8s-openapi type without unknown fields, and
//! the ClusterRole grants exactly what the code watches.

use std::{collections::BTreeSet, path::PathBuf};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use lb_kube::WATCHED_RESOURCES;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document under deploy/, with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let value = yaml_serde::Value::deserialize(doc).expect("valid YAML");
            if value.is_null() {
                continue;
            }
            let json: Value = serde_json::to_value(&value).unwrap();
            docs.push((
                file.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    docs
}

/// Parses into `K` and requires the round trip to give back the same JSON: k8s-openapi
/// ignores unknown fields, so a misspelt field would otherwise pass silently.
fn strict<K: DeserializeOwned + Serialize>(file: &str, json: &Value) -> K {
    let typed: K = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{file}: does not parse: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, json,
        "{file}: fields lost in the round trip (unknown or misspelt)"
    );
    typed
}

#[test]
fn every_manifest_parses_into_its_type() {
    let docs = documents();
    assert!(docs.len() >= 4, "{docs:?}");
    for (file, json) in &docs {
        match json["kind"].as_str() {
            Some("DaemonSet") => {
                strict::<DaemonSet>(file, json);
            }
            Some("ServiceAccount") => {
                strict::<ServiceAccount>(file, json);
            }
            Some("ClusterRole") => {
                strict::<ClusterRole>(file, json);
            }
            Some("ClusterRoleBinding") => {
                strict::<ClusterRoleBinding>(file, json);
            }
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
}

fn one<K: DeserializeOwned + Serialize>(kind: &str) -> K {
    let docs: Vec<(String, Value)> = documents()
        .into_iter()
        .filter(|(_, j)| j["kind"] == kind)
        .collect();
    assert_eq!(docs.len(), 1, "exactly one {kind}");
    strict(&docs[0].0, &docs[0].1)
}

#[test]
fn cluster_role_grants_exactly_what_the_code_watches() {
    let role: ClusterRole = one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        assert!(rule.resource_names.is_none(), "no per-name rules expected");
        assert!(
            rule.non_resource_urls.is_none(),
            "no non-resource URLs expected"
        );
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcard verbs");
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = WATCHED_RESOURCES
        .iter()
        .flat_map(|w| {
            w.verbs.iter().map(|v| {
                (
                    w.api_group.to_owned(),
                    w.resource.to_owned(),
                    (*v).to_owned(),
                )
            })
        })
        .collect();
    assert_eq!(granted, used);
}

#[test]
fn daemonset_runs_as_the_bound_service_account_without_privileged() {
    let ds: DaemonSet = one("DaemonSet");
    let sa: ServiceAccount = one("ServiceAccount");
    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    let role: ClusterRole = one("ClusterRole");
    let pod = ds.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
    assert_eq!(subject.namespace, sa.metadata.namespace);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);

    let container = &pod.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_ne!(security.privileged, Some(true));
    let caps = security.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON"]));
    let bpffs = pod
        .volumes
        .unwrap()
        .into_iter()
        .find_map(|v| v.host_path)
        .expect("a hostPath volume");
    assert_eq!(bpffs.path, "/sys/fs/bpf");
    let mount = container.volume_mounts.as_ref().unwrap();
    assert!(mount.iter().any(|m| m.mount_path == "/sys/fs/bpf"));
}

#[test]
fn daemonset_attaches_the_socket_programs_to_the_hosts_cgroup_root() {
    let ds: DaemonSet = one("DaemonSet");
    let pod = ds.spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let args = container.args.as_deref().unwrap_or_default();
    let cgroup = args
        .iter()
        .find_map(|a| a.strip_prefix("--cgroup="))
        .expect("--cgroup: the container's own /sys/fs/cgroup is its private namespace");
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == cgroup)
        .expect("the --cgroup directory is a volume mount");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.host_path.as_ref())
        .expect("a hostPath volume");
    assert_eq!(volume.path, "/sys/fs/cgroup");
}
