//! CNI attachments in the cluster store (docs/cni.md, "With the store"): the node's address
//! blocks and the endpoint writes. Control plane, off the packet path: called by the ADD and DEL
//! handlers under the change lock, on the control side's tokio runtime.
//!
//! Addresses come from per-node blocks of each network's subnet, claimed as Calico claims its
//! IPAM affinity blocks: `/vxmesh/v1/block/NET/A.B.C.D-P` = `{"node": NAME}`, created by a
//! transaction that compares the key does not exist (`create_revision == 0`) and the write
//! counter is the one read (so no admin write slipped in between), and bumps the counter (so an
//! admin write that read the state before the claim is redone and sees it). A node hands out an
//! address of its own blocks without asking anyone: an ADD writes one key, the endpoint, in a
//! transaction that compares the block is still the one this node claimed and the endpoint's key
//! does not exist. Admin writes refuse an address inside another node's block
//! (`admin::in_a_block`), and a block skips every address the state used when it was read.
//! A block the node no longer uses is given back when its last attachment leaves, as long as
//! the node holds another block of the network ([`StoreLink::release_surplus_block`]).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde_json::{Value, json};

use super::Attachment;
use crate::config::{Cluster, NetworkCfg};
use crate::store::etcd::{connect, read_all};
use crate::store::layout::{GEN_KEY, Key, Kind, block_contains, block_range};

/// Whether two addresses fall in one block of [`BLOCK_PREFIX`] (a block of a subnet smaller than
/// that is the subnet, inside it). A quick test before reading which blocks are the node's.
fn same_block(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - u32::from(BLOCK_PREFIX));
    u32::from(a) & mask == u32::from(b) & mask
}

/// Prefix length of a claimed block (Calico's default, 64 addresses), or the subnet's if longer.
pub const BLOCK_PREFIX: u8 = 26;
/// Claims tried before an ADD gives up (each a read of the state and a transaction).
const CLAIM_ATTEMPTS: usize = 8;

/// One block this node holds.
#[derive(Clone, Debug)]
struct Owned {
    name: String,
    /// The block key's modification revision: the endpoint write compares it.
    rev: i64,
}

/// What the node knows of one network's blocks.
#[derive(Clone, Debug, Default)]
struct NetBlocks {
    owned: Vec<Owned>,
    /// Addresses the state used when it was last read (other nodes' endpoints, VIPs,
    /// load-balancer and resolver addresses): never handed out.
    reserved: HashSet<Ipv4Addr>,
}

/// The node's link to the store for CNI: a client, the store's URL, its blocks per network.
pub struct StoreLink {
    client: Client,
    url: String,
    nets: HashMap<String, NetBlocks>,
}

/// An address picked for an ADD, with the block it is in.
pub(super) struct Picked {
    /// The address.
    pub ip: Ipv4Addr,
    block: Owned,
}

impl StoreLink {
    /// A link over `client` to the store at `url`.
    pub fn new(client: Client, url: String) -> StoreLink {
        StoreLink {
            client,
            url,
            nets: HashMap::new(),
        }
    }

    /// Run a request; on a transport error, connect again (to whichever member answers) and
    /// try once more.
    async fn txn(&mut self, t: Txn) -> Result<etcd_client::TxnResponse, String> {
        match self.client.txn(t.clone()).await {
            Ok(r) => Ok(r),
            Err(_) => {
                self.client = connect(&self.url).await.map_err(|e| format!("{e:#}"))?;
                self.client
                    .txn(t)
                    .await
                    .map_err(|e| format!("{}: {e}", self.url))
            }
        }
    }

    /// Read the whole state again and take this node's blocks of `net` and the addresses used.
    async fn refresh(
        &mut self,
        node: &str,
        net: &str,
    ) -> Result<crate::store::state::State, String> {
        let st = match read_all(&mut self.client).await {
            Ok(s) => s,
            Err(_) => {
                self.client = connect(&self.url).await.map_err(|e| format!("{e:#}"))?;
                read_all(&mut self.client)
                    .await
                    .map_err(|e| format!("{e:#}"))?
            }
        };
        let mut nb = NetBlocks {
            reserved: used_in_state(&st, &self.url, node),
            ..NetBlocks::default()
        };
        // The revision each claim was read at, with the state: a block deleted or claimed by
        // another node since then is not this node's (a write into it is refused).
        for ((n, b), owner) in &st.blocks {
            if n == net && owner.node == node {
                nb.owned.push(Owned {
                    name: b.clone(),
                    rev: owner.revision,
                });
            }
        }
        self.nets.insert(net.to_string(), nb);
        Ok(st)
    }

    /// A free address for node `node` in `net`: in one of its blocks (a new block claimed if
    /// they are full), not used by `source` nor by `atts`.
    pub(super) async fn pick(
        &mut self,
        node: &str,
        net: &NetworkCfg,
        source: &Cluster,
        atts: &[Attachment],
    ) -> Result<Option<Picked>, String> {
        if !self.nets.contains_key(&net.name) {
            self.refresh(node, &net.name).await?;
        }
        let mut used: HashSet<Ipv4Addr> =
            super::alloc::used_addresses(source).into_keys().collect();
        used.extend(atts.iter().map(|a| a.ip));
        if let Some(p) = self.free_in_owned(net, &used) {
            return Ok(Some(p));
        }
        for _ in 0..CLAIM_ATTEMPTS {
            let st = self.refresh(node, &net.name).await?;
            if let Some(p) = self.free_in_owned(net, &used) {
                return Ok(Some(p));
            }
            let nb = &self.nets[&net.name];
            let Some(block) = free_block(net, &st, &nb.reserved, &used) else {
                return Ok(None);
            };
            let key = Key::Block(net.name.clone(), block.clone()).text();
            let t = Txn::new()
                .when([
                    Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                    Compare::mod_revision(GEN_KEY, CompareOp::Equal, st.gen_revision),
                ])
                .and_then([
                    TxnOp::put(key.as_str(), json!({ "node": node }).to_string(), None),
                    TxnOp::put(
                        GEN_KEY,
                        format!("block-{node}-{block}-{}", st.revision),
                        None,
                    ),
                ]);
            let r = self.txn(t).await?;
            if r.succeeded() {
                let rev = r.header().map_or(0, |h| h.revision());
                tracing::info!(node, block = %block, network = %net.name, "cni: address block claimed");
                if let Some(nb) = self.nets.get_mut(&net.name) {
                    nb.owned.push(Owned { name: block, rev });
                }
                if let Some(p) = self.free_in_owned(net, &used) {
                    return Ok(Some(p));
                }
            }
            // Another node claimed it, or an admin write came first: read again.
        }
        Err(format!(
            "could not claim an address block of network {:?}: the store changed under {CLAIM_ATTEMPTS} claims in a row",
            net.name
        ))
    }

    fn free_in_owned(&self, net: &NetworkCfg, used: &HashSet<Ipv4Addr>) -> Option<Picked> {
        let nb = self.nets.get(&net.name)?;
        for o in &nb.owned {
            let (start, prefix) = block_range(&o.name)?;
            let size = 1u64 << (32 - u32::from(prefix));
            for k in 0..size {
                let ip = Ipv4Addr::from(u32::from(start).wrapping_add(k as u32));
                if net.subnet.contains_host(ip) && !nb.reserved.contains(&ip) && !used.contains(&ip)
                {
                    return Some(Picked {
                        ip,
                        block: o.clone(),
                    });
                }
            }
        }
        None
    }

    /// Write attachment `a` of node `node` as endpoint `/vxmesh/v1/endpoint/NAME`, if its block
    /// (`picked`'s) is still this node's and the name is free; the revision it was written at.
    pub(super) async fn write_endpoint(
        &mut self,
        node: &str,
        a: &Attachment,
        picked: Option<&Picked>,
    ) -> Result<i64, String> {
        let key = Key::Object(Kind::Endpoint, a.name.clone()).text();
        // The endpoint's name must be free; an address of a block, that the block is still
        // this node's (an address from an IPAM plugin has no block).
        let mut when = vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0)];
        if let Some(p) = picked {
            let block = Key::Block(a.network.clone(), p.block.name.clone()).text();
            when.push(Compare::mod_revision(block, CompareOp::Equal, p.block.rev));
        }
        let t = Txn::new().when(when).and_then([TxnOp::put(
            key.as_str(),
            endpoint_json(node, a).to_string(),
            None,
        )]);
        let r = self.txn(t).await?;
        if r.succeeded() {
            return Ok(r.header().map_or(0, |h| h.revision()));
        }
        // The next ADD reads the blocks again.
        self.nets.remove(&a.network);
        Err(format!(
            "the store refused endpoint {:?}: the name is taken there, or the address block of {} in network {:?} is no longer this node's",
            a.name, a.ip, a.network
        ))
    }

    /// After attachment `a` left (its endpoint deleted): give back the block its address came
    /// from if none of this node's attachments `left` has an address in it any more and the
    /// node holds another block of the network, which keeps one block per network so a
    /// container coming and going does not claim and release one each time. The delete
    /// compares the block is still the claim this node read (its modification revision); only
    /// this node writes endpoints into it, under the change lock, so nothing lands in it
    /// meanwhile. Returns the block released, if any.
    pub(super) async fn release_surplus_block(
        &mut self,
        node: &str,
        a: &Attachment,
        left: &[Attachment],
    ) -> Result<Option<String>, String> {
        // Still in use (checked before any read of the store: blocks are aligned and at most
        // /26, and a subnet smaller than that is one block).
        if left
            .iter()
            .any(|b| b.network == a.network && same_block(a.ip, b.ip))
        {
            return Ok(None);
        }
        // The blocks as this node last read them; read again when that shows a single one (or
        // none: a node started since), the one case where the answer rests on it.
        if self.nets.get(&a.network).map_or(0, |nb| nb.owned.len()) < 2 {
            self.refresh(node, &a.network).await?;
        }
        let Some(nb) = self.nets.get(&a.network) else {
            return Ok(None);
        };
        let Some(block) = nb
            .owned
            .iter()
            .find(|o| block_contains(&o.name, a.ip))
            .cloned()
        else {
            return Ok(None);
        };
        if nb.owned.len() < 2 {
            return Ok(None);
        }
        let key = Key::Block(a.network.clone(), block.name.clone()).text();
        let t = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                block.rev,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        let r = self.txn(t).await?;
        if !r.succeeded() {
            // Not the claim read: read the blocks again next time.
            self.nets.remove(&a.network);
            return Ok(None);
        }
        if let Some(nb) = self.nets.get_mut(&a.network) {
            nb.owned.retain(|o| o.name != block.name);
        }
        tracing::info!(node, block = %block.name, network = %a.network, "cni: address block released");
        Ok(Some(block.name))
    }

    /// Delete the endpoint of attachment `a` if it is still the one this node wrote.
    pub(super) async fn delete_endpoint(&mut self, a: &Attachment) -> Result<(), String> {
        let key = Key::Object(Kind::Endpoint, a.name.clone()).text();
        let t = Txn::new()
            .when([Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                a.store_rev,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        self.txn(t).await.map(drop)
    }
}

/// The endpoint object of attachment `a` on `node`, as `endpoint add` writes one; an alias
/// naming a service is kept as an alias (the store makes it a backend, see
/// `state::fold_service_aliases`).
pub(super) fn endpoint_json(node: &str, a: &Attachment) -> Value {
    let mut v = json!({"name": a.name, "node": node, "network": a.network, "ip": a.ip.to_string()});
    v["attach"] = if a.tap {
        json!(format!("tap:{}", a.ifname))
    } else {
        json!(format!("afxdp:{}", a.host_if))
    };
    // The namespace by name, for both kinds: a TAP is opened in it; an AF_XDP container's UDP
    // sockets are watched in it (early drop) and its offloads set.
    if let Some(ns) = super::netns::named_netns(&a.netns) {
        v["netns"] = json!(ns);
    }
    let aliases: Vec<&String> = a.aliases.iter().chain(&a.services).collect();
    if !aliases.is_empty() {
        v["aliases"] = json!(aliases);
    }
    v
}

/// Every address the state uses but this node's endpoints (those the node knows itself):
/// endpoints of other nodes (also of nodes that are down, and objects the checks skip), VIPs,
/// load-balancer and resolver addresses.
fn used_in_state(st: &crate::store::state::State, url: &str, node: &str) -> HashSet<Ipv4Addr> {
    let mut used = HashSet::new();
    let ip = |v: &Value, k: &str| -> Option<Ipv4Addr> {
        v.get(k)?.as_str()?.split('/').next()?.parse().ok()
    };
    for ((kind, _), v) in &st.objects {
        match kind {
            Kind::Endpoint if v.get("node").and_then(Value::as_str) != Some(node) => {
                used.extend(ip(v, "ip"))
            }
            Kind::Service => used.extend(ip(v, "vip")),
            _ => {}
        }
    }
    if let Ok((c, _)) = st.cluster(url, None) {
        used.extend(
            super::alloc::used_addresses(&c)
                .into_keys()
                .filter(|a| !c.endpoints.iter().any(|e| e.ip == *a && e.node == node)),
        );
    }
    used
}

/// The first block of `net` no node holds that has a free host address.
fn free_block(
    net: &NetworkCfg,
    st: &crate::store::state::State,
    reserved: &HashSet<Ipv4Addr>,
    used: &HashSet<Ipv4Addr>,
) -> Option<String> {
    let prefix = BLOCK_PREFIX.max(net.subnet.prefix);
    let base = u32::from(net.subnet.addr);
    let blocks = 1u64 << (prefix - net.subnet.prefix);
    let size = 1u64 << (32 - u32::from(prefix));
    (0..blocks).find_map(|i| {
        let start = Ipv4Addr::from(base.wrapping_add((i * size) as u32));
        let name = format!("{start}-{prefix}");
        let taken = st.blocks.keys().any(|(n, b)| {
            n == &net.name
                && block_range(b)
                    .is_some_and(|(a, _)| block_contains(&name, a) || block_contains(b, start))
        });
        let free = (0..size).any(|k| {
            let ip = Ipv4Addr::from(u32::from(start).wrapping_add(k as u32));
            net.subnet.contains_host(ip) && !reserved.contains(&ip) && !used.contains(&ip)
        });
        (!taken && free).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::testing::{att, cluster};

    #[test]
    fn blocks_are_the_first_free_ones_and_endpoints_are_written_as_admin_writes_them() {
        let c = cluster();
        let net = c.network("appnet").unwrap().clone();
        let mut st = crate::store::state::State::default();
        let none = HashSet::new();
        assert_eq!(
            free_block(&net, &st, &none, &none).as_deref(),
            Some("10.0.9.0-26")
        );
        st.blocks.insert(
            ("appnet".into(), "10.0.9.0-26".into()),
            crate::store::state::Block {
                node: "n1".into(),
                revision: 1,
            },
        );
        assert_eq!(
            free_block(&net, &st, &none, &none).as_deref(),
            Some("10.0.9.64-26")
        );
        // A block whose every address is used is passed over.
        let full: HashSet<Ipv4Addr> = (64..128).map(|k| Ipv4Addr::new(10, 0, 9, k)).collect();
        assert_eq!(
            free_block(&net, &st, &full, &none).as_deref(),
            Some("10.0.9.128-26")
        );
        let v = endpoint_json("n1", &att("p1", [10, 0, 9, 2]));
        assert_eq!(v["attach"].as_str().unwrap().len(), "afxdp:".len() + 14);
        assert_eq!(v["aliases"], json!(["p1-alias", "web"]));
        assert_eq!(v["netns"], json!("p1"));
        Cluster::check_item("endpoint", &v).unwrap();
    }
}
