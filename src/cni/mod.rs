//! The node's side of the CNI plugin (SPEC.md, "Attaching containers: the CNI plugin"):
//! container attachments a runtime asks for through `vxmesh-cni`, off the packet path.
//!
//! Where it sits: on the control side of `vxmesh run`, next to the cluster file and the store as
//! a source of desired state. The plugin binary (`src/bin/vxmesh-cni.rs`) is a thin shim that
//! forwards each CNI call over the control socket ([`CniCall`] in a
//! [`Request`](crate::daemon::Request)); here an ADD allocates an address, creates the veth (or
//! names the TAP) in the container's namespace, and adds the attachment as an endpoint of the
//! node's desired state, which is applied through the node's one change path like a reloaded
//! file (the AF_XDP port or TAP opened by `Change::prepare`, committed between batches):
//!
//! ```text
//! runtime ─► vxmesh-cni ─► control socket ─► cni::handle ─► veth in CNI_NETNS ─► change_to(
//!     source (file or store) + local attachments) ─► Change::prepare ─► commit ─► result
//! ```
//!
//! The desired state is the source's [`Cluster`](crate::config::Cluster) plus the node's local attachments
//! ([`merge`]). With a cluster file, attachments are local to the node: other nodes do not learn
//! them (their traffic to a local attachment is flooded as unknown unicast, and services on
//! other nodes do not balance to it), and each node allocates only in its own share of the
//! subnet (the host addresses split evenly in the cluster's node order). With the store, an
//! attachment is also written there as an endpoint (every node learns it through its watch) and
//! its address comes from an address block the node claimed there by compare-and-swap
//! ([`StoreLink`]). Addresses are never one of an endpoint, VIP, load-balancer or resolver
//! address of the cluster. An `ipam` section in the config delegates the address to that IPAM
//! plugin, which the plugin binary runs.
//!
//! Attachments are keyed by (network, container ID, interface name) and kept in a state file
//! beside the control socket (`/run/vxmesh/NODE.cni.json`), so they come back when the node
//! restarts (those whose interface is gone are dropped) and a DEL works after a restart.
//!
//! The module, one concern a file:
//! - `types`: the wire types the plugin and the node share ([`CniCall`], [`CniError`], [`code`],
//!   [`Op`]) and the ADD [`result`];
//! - `conf`: reading a call's network config;
//! - `state`: [`Attachment`], [`Local`] and the state file;
//! - `desired`: [`merge`], the source's cluster plus the attachments;
//! - `alloc`: [`allocate`], an address in the node's share of the subnet (cluster file);
//! - `store`: [`StoreLink`], the node's address blocks and endpoint writes in the store;
//! - `netns`: the veth and the namespace, the system side;
//! - `serve`: [`handle`], the handlers of ADD, DEL, CHECK, STATUS and GC.

mod alloc;
mod conf;
mod desired;
mod netns;
mod serve;
mod state;
mod store;
mod types;

pub use alloc::allocate;
pub use desired::merge;
pub use serve::{Apply, Served, handle};
pub use state::{Attachment, HOST_IF_PREFIX, Local, host_if_name, state_file};
pub use store::StoreLink;
pub use types::{CniCall, CniError, Op, SUPPORTED_VERSIONS, code, result};

/// What the tests of the submodules share: the fixture cluster and an attachment in it.
#[cfg(test)]
mod testing {
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::{Attachment, host_if_name};
    use crate::config::Cluster;

    /// The fixture cluster (tests/fixtures/cluster.toml), prefix `t`.
    pub fn cluster() -> Cluster {
        let text = include_str!("../../tests/fixtures/cluster.toml").replace("{P}", "t");
        Cluster::parse(Path::new("cluster.toml"), &text).unwrap()
    }

    /// Attachment `name` at `ip` in `appnet`, a backend of `web`.
    pub fn att(name: &str, ip: [u8; 4]) -> Attachment {
        Attachment {
            network: "appnet".into(),
            cni_name: "appnet".into(),
            container_id: format!("id-{name}"),
            ifname: "eth0".into(),
            name: name.into(),
            ip: Ipv4Addr::from(ip),
            tap: false,
            host_if: host_if_name("appnet", &format!("id-{name}"), "eth0"),
            netns: format!("/run/netns/{name}"),
            aliases: vec![format!("{name}-alias")],
            services: vec!["web".into()],
            store_rev: 0,
        }
    }
}
