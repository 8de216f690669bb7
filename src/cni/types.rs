//! The CNI wire types the node and the plugin share: the versions spoken, the error codes and
//! error object, one plugin call as the control socket carries it, the commands, and the ADD
//! result. Control plane, off the packet path: the plugin (`vxmesh-cni`) prints these, the node's
//! handlers ([`super::serve`]) build them.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Attachment;
use crate::config::NetworkCfg;

/// The CNI spec versions `vxmesh-cni` speaks (CNI 1.0.0, and 1.1.0 for STATUS and GC).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// CNI error codes: the spec's well-known ones, and vxmesh's own from 100.
pub mod code {
    /// The config's `cniVersion` is not one the plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// The config has a field the plugin does not support (an `ipam` section without an address).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// CHECK for a container that is not attached.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A CNI_* variable is missing or wrong.
    pub const INVALID_ENV: u32 = 4;
    /// Input/output failure (the control socket).
    pub const IO: u32 = 5;
    /// The config is not JSON.
    pub const DECODE: u32 = 6;
    /// The config is JSON but wrong (no `network`, an unknown network, a bad `attach`).
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (the node is not reachable).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADDs (the node is not reachable).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The node refused the change or a system call failed.
    pub const FAILED: u32 = 100;
    /// `CNI_IFNAME` exists already in `CNI_NETNS`.
    pub const INTERFACE_EXISTS: u32 = 101;
    /// The node's block of the network's subnet has no free address.
    pub const NO_ADDRESS: u32 = 102;
    /// ADD for an attachment that exists already.
    pub const ALREADY_ATTACHED: u32 = 103;
}

/// A CNI error object, as the plugin prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The spec version of the call.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Error code (see [`code`]).
    pub code: u32,
    /// One-line message.
    pub msg: String,
    /// More detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: "1.0.0".into(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
    /// With `details`.
    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }
    /// As JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("errors serialize")
    }
}

/// One plugin call as the node receives it: the CNI environment and the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniCall {
    /// `CNI_CONTAINERID`.
    #[serde(default)]
    pub container_id: String,
    /// `CNI_NETNS`.
    #[serde(default)]
    pub netns: String,
    /// `CNI_IFNAME`.
    #[serde(default)]
    pub ifname: String,
    /// `CNI_ARGS`.
    #[serde(default)]
    pub args: String,
    /// The network config from the plugin's standard input.
    pub config: Value,
    /// ADD with an `ipam` section: the address the IPAM plugin gave (the plugin runs it, as the
    /// reference plugins do, and passes its address on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_ip: Option<std::net::Ipv4Addr>,
}

/// A CNI command the node serves (VERSION is answered by the plugin itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// STATUS.
    Status,
    /// GC.
    Gc,
}

/// The ADD result (CNI 1.0.0's shape): the interfaces (the node side, the container side with
/// its `sandbox`), the address on the container side, the network's resolver.
pub fn result(a: &Attachment, net: &NetworkCfg, version: &str) -> Value {
    let mut interfaces = Vec::new();
    if !a.tap {
        interfaces.push(json!({ "name": a.host_if }));
    }
    interfaces.push(json!({ "name": a.ifname, "mac": a.mac().to_string(), "sandbox": a.netns }));
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": [{ "address": format!("{}/{}", a.ip, net.subnet.prefix), "interface": interfaces.len() - 1 }],
        "dns": { "nameservers": [net.dns.to_string()] },
    })
}

/// A `FAILED` error in the call's spec `version`.
pub(super) fn failed(version: &str, msg: impl Into<String>) -> CniError {
    with_version(version, code::FAILED, msg)
}

/// An error with `code` in the call's spec `version`.
pub(super) fn with_version(version: &str, code: u32, msg: impl Into<String>) -> CniError {
    CniError {
        cni_version: version.to_string(),
        ..CniError::new(code, msg)
    }
}
