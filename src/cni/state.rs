//! The node's CNI attachments and where they are kept: [`Attachment`] (one container attached
//! through CNI), its stable node-side interface name, and [`Local`], the attachments held with
//! the source's cluster under the daemon's change lock and persisted in the state file beside the
//! control socket (`/run/vxmesh/NODE.cni.json`), so they survive a restart. Control plane, off the
//! packet path.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vswitch::Mac;

use super::merge;
use crate::config::Cluster;

/// Prefix of the node side of a container's veth (`vx` + 12 hex digits of the attachment's key).
pub const HOST_IF_PREFIX: &str = "vx";

/// One container attached through CNI, as the state file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The vxmesh network (`network` in the config).
    pub network: String,
    /// The CNI network name (`name` in the config): GC's scope.
    pub cni_name: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The endpoint's name (K8S_POD_NAME, else the container ID).
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Attached by a TAP (else a veth with AF_XDP on its node side).
    pub tap: bool,
    /// The node side of the veth (empty for a TAP).
    pub host_if: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// Its DNS aliases.
    pub aliases: Vec<String>,
    /// Services it is a backend of (aliases that name a service of its network).
    pub services: Vec<String>,
    /// With the store: the revision its endpoint was written at (0: not in the store).
    #[serde(default)]
    pub store_rev: i64,
}

impl Attachment {
    pub(super) fn key(&self) -> (&str, &str, &str) {
        (&self.network, &self.container_id, &self.ifname)
    }
    /// Its MAC: 02:42 and its address, as Docker's.
    pub fn mac(&self) -> Mac {
        Mac::docker_default(self.ip)
    }
}

/// The node side of the veth of attachment (network, container, ifname): a stable name, so a
/// DEL after a crash finds what an ADD left.
pub fn host_if_name(network: &str, container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and versions (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in network
        .bytes()
        .chain([0])
        .chain(container_id.bytes())
        .chain([0])
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{HOST_IF_PREFIX}{:012x}", h >> 16)
}

/// The node's desired state as far as CNI is concerned: the source's cluster (file or store) and
/// the local attachments. Held under the daemon's change lock: one change at a time.
pub struct Local {
    /// This node's name.
    pub node: String,
    /// The last cluster applied from the file or the store.
    pub source: Cluster,
    /// The attachments, in the order they came.
    pub atts: Vec<Attachment>,
    /// Where they are kept.
    pub state_file: PathBuf,
    /// With the store: the link that claims blocks and writes endpoints.
    pub store: Option<super::StoreLink>,
    /// Attachments dropped when the node started (their interface gone): their endpoints leave
    /// the store once the node is linked to it ([`Local::forget_stale`]).
    pub stale: Vec<Attachment>,
    /// Endpoints this node deleted from the store whose delete the watch has not brought yet:
    /// left out of the source meanwhile.
    pub deleted: Vec<String>,
}

/// The state file of the node whose control socket is `control`: beside it, `NAME.cni.json`.
pub fn state_file(control: &Path) -> PathBuf {
    control.with_extension("cni.json")
}

impl Local {
    /// The attachments kept in `state_file`, those whose interface is gone left out (with a
    /// message each), merged with `source` (an attachment that collides with it is left out too).
    pub fn load(node: &str, source: Cluster, state_file: PathBuf) -> (Local, Vec<String>) {
        let mut notes = Vec::new();
        let atts: Vec<Attachment> = match std::fs::read(&state_file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                // Kept aside, not overwritten: it is the only record of those attachments.
                let bad = state_file.with_extension("json.bad");
                let kept = std::fs::rename(&state_file, &bad).is_ok();
                notes.push(format!(
                    "{}: unreadable ({e}); starting without CNI attachments{}",
                    state_file.display(),
                    if kept {
                        format!(" (kept as {})", bad.display())
                    } else {
                        String::new()
                    }
                ));
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let mut local = Local {
            node: node.to_string(),
            source,
            atts: Vec::new(),
            state_file,
            store: None,
            stale: Vec::new(),
            deleted: Vec::new(),
        };
        for a in atts {
            let present = if a.tap {
                Path::new(&a.netns).exists()
            } else {
                vswitch::port::iface::index_of(&a.host_if).is_some()
            };
            if !present {
                notes.push(format!(
                    "CNI attachment {} (container {}, {}): its interface is gone; dropped",
                    a.name, a.container_id, a.ifname
                ));
                local.stale.push(a);
                continue;
            }
            local.atts.push(a);
            if let Err(e) = local.desired(&local.source) {
                let a = local.atts.pop().expect("just pushed");
                notes.push(format!("CNI attachment {}: {e}; dropped", a.name));
                local.stale.push(a);
            }
        }
        if !notes.is_empty() {
            let _ = local.save();
        }
        (local, notes)
    }

    /// The desired state with `source` as the file's or store's part.
    pub fn desired(&self, source: &Cluster) -> Result<Cluster, String> {
        merge(&self.base(source), &self.node, &self.atts)
    }

    /// `source` without this node's endpoints that are its own attachments written to the store
    /// (merged back from the attachments, so the desired state is the same before and after
    /// the watch brings them) and without those it deleted there.
    fn base<'a>(&self, source: &'a Cluster) -> std::borrow::Cow<'a, Cluster> {
        let mine = |name: &str| {
            self.deleted.iter().any(|d| d == name)
                || self.atts.iter().any(|a| a.store_rev > 0 && a.name == name)
        };
        if !source
            .endpoints
            .iter()
            .any(|e| e.node == self.node && mine(&e.name))
        {
            return std::borrow::Cow::Borrowed(source);
        }
        let mut c = source.clone();
        let gone: Vec<String> = c
            .endpoints
            .iter()
            .filter(|e| e.node == self.node && mine(&e.name))
            .map(|e| e.name.clone())
            .collect();
        c.endpoints.retain(|e| !gone.contains(&e.name));
        for s in &mut c.services {
            s.backends.retain(|(n, _)| !gone.contains(n));
        }
        std::borrow::Cow::Owned(c)
    }

    /// Take the endpoints of the attachments dropped at start out of the store (those this node
    /// wrote); what could not be done, as messages.
    pub async fn forget_stale(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        let Some(st) = self.store.as_mut() else {
            return notes;
        };
        for a in std::mem::take(&mut self.stale) {
            if a.store_rev > 0 {
                // Left out of this node's source meanwhile (its interface is gone).
                self.deleted.push(a.name.clone());
                if let Err(e) = st.delete_endpoint(&a).await {
                    notes.push(format!("CNI attachment {}: {e}", a.name));
                }
            }
        }
        notes
    }

    /// `source` is applied now: forget the deletes it shows done.
    pub fn applied(&mut self, source: &Cluster) {
        let node = self.node.clone();
        self.deleted.retain(|d| {
            source
                .endpoints
                .iter()
                .any(|e| &e.name == d && e.node == node)
        });
    }

    /// [`Local::desired`] where the source wins (a store that changed under the node's
    /// attachments must not be refused for them): the attachments that no longer fit are left
    /// out, each with why.
    pub fn desired_lenient(&self, source: &Cluster) -> (Cluster, Vec<String>) {
        let mut fit: Vec<Attachment> = Vec::new();
        let mut left_out = Vec::new();
        let base = self.base(source);
        for a in &self.atts {
            fit.push(a.clone());
            if let Err(e) = merge(&base, &self.node, &fit) {
                fit.pop();
                left_out.push(e);
            }
        }
        let c = merge(&base, &self.node, &fit).unwrap_or_else(|_| source.clone());
        (c, left_out)
    }

    /// Write the attachments to the state file (removed when there are none).
    pub fn save(&self) -> io::Result<()> {
        if self.atts.is_empty() {
            return match std::fs::remove_file(&self.state_file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        // Written whole to a new file, synced, then renamed over the old one (and the folder
        // synced): a crash leaves the old state or the new, never half of one. Root's only.
        let tmp = self.state_file.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.atts).map_err(io::Error::other)?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.state_file)?;
        if let Some(dir) = self.state_file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    pub(super) fn find(&self, network: &str, cid: &str, ifname: &str) -> Option<usize> {
        self.atts
            .iter()
            .position(|a| a.key() == (network, cid, ifname))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_side_names_are_stable_and_fit() {
        let a = host_if_name("appnet", "abc", "eth0");
        assert_eq!(a, host_if_name("appnet", "abc", "eth0"));
        assert_ne!(a, host_if_name("appnet", "abc", "eth1"));
        assert!(vswitch::port::iface::valid_ifname(&a), "{a}");
    }
}
