//! Reading a CNI call's network config: its `cniVersion` (one of [`SUPPORTED_VERSIONS`]), the
//! vxmesh `network`, `attach` (AF_XDP on a veth, or a TAP), the aliases from `runtimeConfig`, and
//! the pod name from `CNI_ARGS`; a wrong config is the CNI error the spec names. Control plane,
//! off the packet path.

use serde_json::Value;

use super::types::with_version;
use super::{CniError, SUPPORTED_VERSIONS, code};

/// The config of a call, read.
pub(super) struct Conf {
    pub(super) version: String,
    pub(super) cni_name: String,
    pub(super) network: String,
    pub(super) tap: bool,
    pub(super) aliases: Vec<String>,
    /// The config has an `ipam` section (the plugin ran that IPAM plugin).
    pub(super) ipam: bool,
}

/// The config's `cniVersion`, if the plugin speaks it.
pub(super) fn conf_version(v: &Value) -> Result<String, CniError> {
    let version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version:?} is not supported: vxmesh-cni speaks {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    Ok(version)
}

/// The config of a call, checked.
pub(super) fn parse_conf(v: &Value) -> Result<Conf, CniError> {
    let version = conf_version(v)?;
    let err = |m: String| with_version(&version, code::INVALID_CONFIG, m);
    let network = match v.get("network") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(err(
                "\"network\" must be the name of a vxmesh network".into()
            ));
        }
        None => {
            return Err(err(
                "the config has no \"network\": name the vxmesh network to attach to".into(),
            ));
        }
    };
    let tap = match v.get("attach").and_then(Value::as_str) {
        None | Some("afxdp") => false,
        Some("tap") => true,
        Some(o) => {
            return Err(err(format!(
                "\"attach\": {o:?} is not \"afxdp\" or \"tap\""
            )));
        }
    };
    let cni_name = v
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // runtimeConfig.aliases: a list, or (podman's CNI backend, the dnsname convention) a map
    // from the CNI network's name to a list.
    let mut aliases = Vec::new();
    match v.pointer("/runtimeConfig/aliases") {
        Some(Value::Array(a)) => {
            aliases.extend(a.iter().filter_map(Value::as_str).map(String::from))
        }
        Some(Value::Object(m)) => {
            for (k, a) in m {
                if (k == &cni_name || m.len() == 1)
                    && let Some(a) = a.as_array()
                {
                    aliases.extend(a.iter().filter_map(Value::as_str).map(String::from));
                }
            }
        }
        _ => {}
    }
    Ok(Conf {
        version,
        cni_name,
        network,
        tap,
        aliases,
        ipam: v.get("ipam").is_some_and(|i| !i.is_null()),
    })
}

/// `key` from `CNI_ARGS` (`K=V;K=V`), if not empty.
fn cni_arg(args: &str, key: &str) -> Option<String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// `K8S_POD_NAME` from `CNI_ARGS`.
pub(super) fn pod_name(args: &str) -> Option<String> {
    cni_arg(args, "K8S_POD_NAME")
}

/// The endpoint's name, which is a DNS name too: `NAMESPACE-NAME` with `K8S_POD_NAMESPACE` and
/// `K8S_POD_NAME` in `CNI_ARGS` (Kubernetes: pods of the same name in two namespaces stay
/// apart), `K8S_POD_NAME` alone without a namespace (podman passes the container's name), when
/// that is a DNS label; else the container ID's first 12 characters (Docker's short ID; a full
/// ID is longer than a label).
pub(super) fn endpoint_name(args: &str, container_id: &str) -> String {
    let name = match (cni_arg(args, "K8S_POD_NAMESPACE"), pod_name(args)) {
        (Some(ns), Some(pod)) => Some(format!("{ns}-{pod}")),
        (None, pod) => pod,
        (Some(_), None) => None,
    };
    name.filter(|n| crate::config::is_dns_label(n))
        .unwrap_or_else(|| container_id.chars().take(12).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_are_read_with_their_versions_aliases_and_errors() {
        let ok = json!({"cniVersion": "1.0.0", "name": "appnet", "network": "appnet",
            "runtimeConfig": {"aliases": {"appnet": ["web", "api"]}}});
        let c = parse_conf(&ok).unwrap();
        assert_eq!((c.network.as_str(), c.tap), ("appnet", false));
        assert_eq!(c.aliases, ["web", "api"]);
        let list = json!({"cniVersion": "1.1.0", "network": "n", "attach": "tap",
            "runtimeConfig": {"aliases": ["a"]}});
        let c = parse_conf(&list).unwrap();
        assert!(c.tap);
        assert_eq!(c.aliases, ["a"]);
        for (bad, code) in [
            (
                json!({"cniVersion": "0.3.1", "network": "n"}),
                code::INCOMPATIBLE_VERSION,
            ),
            (json!({"cniVersion": "1.0.0"}), code::INVALID_CONFIG),
            (
                json!({"cniVersion": "1.0.0", "network": 3}),
                code::INVALID_CONFIG,
            ),
            (
                json!({"cniVersion": "1.0.0", "network": "n", "attach": "x"}),
                code::INVALID_CONFIG,
            ),
        ] {
            assert_eq!(parse_conf(&bad).err().map(|e| e.code), Some(code), "{bad}");
        }
        assert_eq!(
            pod_name("IgnoreUnknown=1;K8S_POD_NAME=busy1").as_deref(),
            Some("busy1")
        );
        assert_eq!(pod_name("IgnoreUnknown=1"), None);
        let id = "0123456789abcdef0123";
        assert_eq!(endpoint_name("K8S_POD_NAME=web1", id), "web1");
        assert_eq!(
            endpoint_name("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web1", id),
            "prod-web1"
        );
        // Not a DNS label (a dot, too long): the short ID.
        assert_eq!(endpoint_name("K8S_POD_NAME=a.b", id), "0123456789ab");
        let long = format!("K8S_POD_NAMESPACE={};K8S_POD_NAME=x", "n".repeat(63));
        assert_eq!(endpoint_name(&long, id), "0123456789ab");
        assert_eq!(endpoint_name("", id), "0123456789ab");
    }
}
