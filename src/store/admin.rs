//! The admin commands on the store (`vxmesh --store URL import|export|node|network|service|
//! endpoint ...`, SPEC.md "The cluster store").
//!
//! Where it sits: a command-line client of etcd, off every node. Every write reads the state,
//! makes its change on a copy, checks the result as a cluster file is checked (same checks and
//! messages; a change that would leave any object refused is refused whole, exit 2), and
//! writes it in one transaction that compares the write counter ([`GEN_KEY`]) with what it
//! read: two writers never lose an update; the one that loses the race reads again and retries.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde_json::{Value, json};

mod node;

use node::{node_ls, node_rm};

use super::etcd::{connect, read_all};
use super::layout::{GEN_KEY, Key, Kind, file_objects, key_of};
use super::state::State;
use crate::config::Cluster;

/// VNIs the store allocates start here (as Docker's do).
pub const FIRST_VNI: u32 = 4096;
/// Attempts of a write that keeps losing the race to other writers or meeting transient
/// failures.
const WRITE_ATTEMPTS: usize = 16;
/// Pause before trying again after a transient failure.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// An admin command.
#[derive(Clone, Debug)]
pub enum Admin {
    /// Write a cluster file's objects.
    Import(PathBuf),
    /// Print the state as a cluster file.
    Export,
    /// List the nodes.
    NodeLs {
        /// JSON output.
        json: bool,
    },
    /// Remove a node that is down: its object and `managed` marker, its endpoints (out of
    /// every service's backends), its ingresses and its CNI address blocks.
    NodeRm(String),
    /// Create a network.
    NetworkCreate {
        /// Name.
        name: String,
        /// Subnet (CIDR).
        subnet: String,
        /// VNI (allocated from 4096 up if not given).
        vni: Option<u32>,
        /// IP MTU.
        mtu: Option<u16>,
        /// `--encrypted`: ESP between nodes (needs the store's `encryption` keys).
        encrypted: bool,
    },
    /// Remove a network.
    NetworkRm(String),
    /// List the networks.
    NetworkLs {
        /// JSON output.
        json: bool,
    },
    /// Create a service.
    ServiceCreate {
        /// Name.
        name: String,
        /// Its network.
        network: String,
        /// Its VIP.
        vip: Ipv4Addr,
        /// `PROTO/PORT[:PUBLISHED][->TARGET]`.
        ports: Vec<String>,
        /// Scheduler.
        scheduler: Option<String>,
        /// `ENDPOINT[=WEIGHT]`.
        backends: Vec<String>,
    },
    /// Replace a service's backends.
    ServiceUpdate {
        /// Name.
        name: String,
        /// `ENDPOINT[=WEIGHT]`.
        backends: Vec<String>,
    },
    /// Remove a service.
    ServiceRm(String),
    /// List the services.
    ServiceLs {
        /// JSON output.
        json: bool,
    },
    /// Add an endpoint.
    EndpointAdd {
        /// Name.
        name: String,
        /// Its node.
        node: String,
        /// Its network.
        network: String,
        /// Its address.
        ip: Ipv4Addr,
        /// Its MAC (default 02:42 + IP).
        mac: Option<String>,
        /// `afxdp:IF` or `tap:IF`.
        attach: Option<String>,
        /// Its namespace.
        netns: Option<String>,
    },
    /// Remove an endpoint.
    EndpointRm(String),
    /// Replace the encryption keys (the first sends), and the transport if given.
    EncryptionSet {
        /// The keys, in order.
        keys: Vec<String>,
        /// `esp` or `udp`; `None`: the store's stays.
        transport: Option<String>,
    },
    /// List the encryption keys' ids.
    EncryptionLs {
        /// JSON output.
        json: bool,
    },
    /// List the endpoints.
    EndpointLs {
        /// JSON output.
        json: bool,
    },
}

/// What a command printed and its exit code.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Exit code: 0, 1 (runtime: the store unreachable), 2 (usage, a refused change).
    pub code: u8,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

enum Failure {
    /// Refused (exit 2).
    Usage(String),
    /// The store failed (exit 1).
    Runtime(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Runtime(format!("{e:#}"))
    }
}

type Ops = Vec<(Key, Option<Value>)>;

/// Run `cmd` against the store at `url`.
pub fn run(url: &str, cmd: Admin) -> Outcome {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Outcome {
                code: 1,
                err: format!("vxmesh: starting a runtime: {e}\n"),
                ..Outcome::default()
            };
        }
    };
    if let Err(e) = super::etcd::endpoints(url) {
        return Outcome {
            code: 2,
            err: format!("vxmesh: {e:#}\n"),
            ..Outcome::default()
        };
    }
    match rt.block_on(exec(url, cmd)) {
        Ok(out) => Outcome {
            code: 0,
            out,
            err: String::new(),
        },
        Err(Failure::Usage(e)) => Outcome {
            code: 2,
            out: String::new(),
            err: format!("vxmesh: {e}\n"),
        },
        Err(Failure::Runtime(e)) => Outcome {
            code: 1,
            out: String::new(),
            err: format!("vxmesh: {e}\n"),
        },
    }
}

/// A node object of an imported file with its load-balancer address in every network
/// written out, default ones included: those follow the file's node order, which the store
/// does not keep (nodes written in one write are one revision), so `import` pins them and
/// the imported cluster runs as the file did.
fn pin_lb(node: &mut Value, cluster: &Cluster) {
    let Some(n) = node
        .get("name")
        .and_then(Value::as_str)
        .and_then(|name| cluster.node(name))
    else {
        return;
    };
    let lb: serde_json::Map<String, Value> =
        n.lb.iter()
            .map(|(net, a)| (net.clone(), Value::String(a.to_string())))
            .collect();
    if let Some(o) = node.as_object_mut() {
        o.insert("lb".into(), Value::Object(lb));
    }
}

async fn exec(url: &str, cmd: Admin) -> Result<String, Failure> {
    // Refusals that need no store come first.
    let obj = |kind: Kind, v: Value| -> Result<(Key, Option<Value>), Failure> {
        let k = key_of(kind, &v)
            .ok_or_else(|| Failure::Usage(format!("{} name: not a valid name", kind.table())))?;
        Ok((k, Some(v)))
    };
    let mut client = connect(url).await?;
    match cmd {
        Admin::Import(path) => {
            let cluster = Cluster::load(&path).map_err(|e| Failure::Usage(e.to_string()))?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            let doc: toml::Table = toml::from_str(&text)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            let mut ops = Ops::new();
            let objects = file_objects(&doc)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            for (kind, mut v) in objects {
                if kind == Kind::Node {
                    pin_lb(&mut v, &cluster);
                }
                ops.push(obj(kind, v)?);
            }
            if let Some(e) = doc.get("encryption") {
                let v = serde_json::to_value(e)
                    .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
                ops.push((Key::Encryption, Some(v)));
            }
            let n = ops.len();
            write(&mut client, url, |_| Ok(ops.clone())).await?;
            Ok(format!(
                "imported {n} objects from {} ({} nodes, {} networks, {} endpoints, {} services, {} ingresses)\n",
                path.display(),
                cluster.nodes.len(),
                cluster.networks.len(),
                cluster.endpoints.len(),
                cluster.services.len(),
                cluster.ingresses.len()
            ))
        }
        Admin::Export => {
            let st = read_all(&mut client).await?;
            st.export(url).map_err(|e| Failure::Usage(e.to_string()))
        }
        Admin::NodeLs { json } => {
            let st = read_all(&mut client).await?;
            Ok(node_ls(&st, json))
        }
        Admin::NodeRm(name) => {
            // The node must stay down until the write commits: its liveness key absent.
            let alive = Key::Alive(name.clone()).text();
            let guard = Compare::create_revision(alive, CompareOp::Equal, 0);
            write_when(&mut client, url, &[guard], |st| node_rm(st, &name)).await?;
            Ok(String::new())
        }
        Admin::NetworkCreate {
            name,
            subnet,
            vni,
            mtu,
            encrypted,
        } => {
            write(&mut client, url, |st| {
                let vni = match vni {
                    Some(v) => v,
                    None => free_vni(st)?,
                };
                let mut v = json!({"name": name, "vni": vni, "subnet": subnet});
                if let Some(m) = mtu {
                    v["mtu"] = json!(m);
                }
                if encrypted {
                    v["encrypted"] = json!(true);
                }
                if st.objects.contains_key(&(Kind::Network, name.clone())) {
                    return Err(format!("network {name:?}: exists already"));
                }
                let mut ops = vec![obj(Kind::Network, v).map_err(failure_text)?];
                pin_all_lb(st, &mut ops, url);
                Ok(ops)
            })
            .await?;
            Ok(String::new())
        }
        Admin::EncryptionSet { keys, transport } => {
            if keys.is_empty() && transport.is_some() {
                return Err(Failure::Usage(
                    "encryption set: --transport goes with the keys (`encryption set` with no key removes them)".into(),
                ));
            }
            // The keys' form first (no store needed); whether the state needs them, in `write`.
            for (i, k) in keys.iter().enumerate() {
                esp::Key::parse(k)
                    .map_err(|e| Failure::Usage(format!("encryption key {}: {e}", i + 1)))?;
            }
            write(&mut client, url, |st| {
                if keys.is_empty() {
                    return Ok(vec![(Key::Encryption, None)]);
                }
                // The transport given, or as the store has it.
                let mut v = json!({ "keys": keys });
                if let Some(t) = &transport {
                    v["transport"] = json!(t);
                } else if let Some(t) = st.encryption.as_ref().and_then(|e| e.get("transport")) {
                    v["transport"] = t.clone();
                }
                Ok(vec![(Key::Encryption, Some(v))])
            })
            .await?;
            Ok(String::new())
        }
        Admin::EncryptionLs { json } => {
            let st = read_all(&mut client).await?;
            let ids: Vec<String> = st
                .encryption
                .as_ref()
                .and_then(|v| v.get("keys")?.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|k| esp::Key::parse(k.as_str()?).ok())
                .map(|k| k.id().to_string())
                .collect();
            let transport = st
                .encryption
                .as_ref()
                .and_then(|v| v.get("transport")?.as_str())
                .unwrap_or("esp")
                .to_string();
            if json {
                Ok(format!(
                    "{}\n",
                    json!({ "keys": ids, "transport": transport })
                ))
            } else {
                let mut out = String::from("KEY ID    ROLE\n");
                for (i, id) in ids.iter().enumerate() {
                    let role = if i == 0 { "sends" } else { "accepted" };
                    let _ = writeln!(out, "{id:<9} {role}");
                }
                let _ = writeln!(out, "transport: {transport}");
                Ok(out)
            }
        }
        Admin::NetworkRm(name) => remove(&mut client, url, Kind::Network, &name).await,
        Admin::ServiceCreate {
            name,
            network,
            vip,
            ports,
            scheduler,
            backends,
        } => {
            let ports: Vec<Value> = ports
                .iter()
                .map(|p| parse_port(p).map_err(Failure::Usage))
                .collect::<Result<_, _>>()?;
            let mut v = json!({
                "name": name, "network": network, "vip": vip.to_string(),
                "backends": backends, "ports": ports,
            });
            if let Some(s) = scheduler {
                v["scheduler"] = json!(s);
            }
            let op = obj(Kind::Service, v)?;
            write(&mut client, url, |st| {
                if st.objects.contains_key(&(Kind::Service, name.clone())) {
                    return Err(format!("service {name:?}: exists already"));
                }
                Ok(vec![op.clone()])
            })
            .await?;
            Ok(String::new())
        }
        Admin::ServiceUpdate { name, backends } => {
            write(&mut client, url, |st| {
                let mut v = st
                    .objects
                    .get(&(Kind::Service, name.clone()))
                    .map(|v| (**v).clone())
                    .ok_or_else(|| format!("service {name:?}: no such service"))?;
                v["backends"] = json!(backends);
                Ok(vec![(Key::Object(Kind::Service, name.clone()), Some(v))])
            })
            .await?;
            Ok(String::new())
        }
        Admin::ServiceRm(name) => remove(&mut client, url, Kind::Service, &name).await,
        Admin::EndpointAdd {
            name,
            node,
            network,
            ip,
            mac,
            attach,
            netns,
        } => {
            let mut v =
                json!({"name": name, "node": node, "network": network, "ip": ip.to_string()});
            for (k, val) in [("mac", mac), ("attach", attach), ("netns", netns)] {
                if let Some(val) = val {
                    v[k] = json!(val);
                }
            }
            let op = obj(Kind::Endpoint, v)?;
            write(&mut client, url, |st| {
                if st.objects.contains_key(&(Kind::Endpoint, name.clone())) {
                    return Err(format!("endpoint {name:?}: exists already"));
                }
                Ok(vec![op.clone()])
            })
            .await?;
            Ok(String::new())
        }
        Admin::EndpointRm(name) => remove(&mut client, url, Kind::Endpoint, &name).await,
        Admin::NetworkLs { json } => list(&mut client, Kind::Network, json).await,
        Admin::ServiceLs { json } => list(&mut client, Kind::Service, json).await,
        Admin::EndpointLs { json } => list(&mut client, Kind::Endpoint, json).await,
    }
}

fn failure_text(f: Failure) -> String {
    match f {
        Failure::Usage(s) | Failure::Runtime(s) => s,
    }
}

/// Remove an object (refused if anything still refers to it: the checks say what).
async fn remove(client: &mut Client, url: &str, kind: Kind, name: &str) -> Result<String, Failure> {
    write(client, url, |st| remove_ops(st, kind, name)).await?;
    Ok(String::new())
}

/// The writes that remove object `name` of `kind` from `st`, with what goes with it.
fn remove_ops(st: &State, kind: Kind, name: &str) -> Result<Ops, String> {
    if !st.objects.contains_key(&(kind, name.to_string())) {
        return Err(format!(
            "{} {name:?}: no such {}",
            kind.table(),
            kind.table()
        ));
    }
    let mut ops = vec![(Key::Object(kind, name.to_string()), None)];
    // A network's CNI address blocks go with it: nothing is attached in them any more
    // (the state check refuses removing a network an endpoint is in), and a network of the
    // same name created later must not find another subnet's blocks.
    if kind == Kind::Network {
        ops.extend(
            st.blocks
                .keys()
                .filter(|(n, _)| n == name)
                .map(|(n, b)| (Key::Block(n.clone(), b.clone()), None)),
        );
        // And the nodes' load-balancer addresses in it (`import` writes every one out):
        // a node may not name a network there is not.
        for ((k, node), v) in st.objects.iter() {
            if *k != Kind::Node || v.get("lb").and_then(|lb| lb.get(name)).is_none() {
                continue;
            }
            let mut v = (**v).clone();
            if let Some(lb) = v.get_mut("lb").and_then(Value::as_object_mut) {
                lb.remove(name);
            }
            ops.push((Key::Object(Kind::Node, node.clone()), Some(v)));
        }
    }
    Ok(ops)
}

/// The lowest VNI from [`FIRST_VNI`] up that no network has.
fn free_vni(st: &State) -> Result<u32, String> {
    let used: BTreeSet<u64> = st
        .objects
        .iter()
        .filter(|((k, _), _)| *k == Kind::Network)
        .filter_map(|(_, v)| v.get("vni").and_then(|v| v.as_u64()))
        .collect();
    (u64::from(FIRST_VNI)..=u64::from(vswitch::wire::vxlan::VNI_MAX))
        .find(|v| !used.contains(v))
        .map(|v| v as u32)
        .ok_or_else(|| "no free VNI left".to_string())
}

/// Something different in every process and call, for a write's nonce.
fn nonce_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// `PROTO/PORT[:PUBLISHED][->TARGET]` as a cluster file's port.
fn parse_port(s: &str) -> Result<Value, String> {
    let bad =
        || format!("--port {s:?}: expected PROTO/PORT[:PUBLISHED][->TARGET], e.g. tcp/80:8080->80");
    let (proto, rest) = s.split_once('/').ok_or_else(bad)?;
    let (rest, target) = match rest.split_once("->") {
        Some((r, t)) => (r, Some(t.parse::<u16>().map_err(|_| bad())?)),
        None => (rest, None),
    };
    let (port, published) = match rest.split_once(':') {
        Some((p, q)) => (p, Some(q.parse::<u16>().map_err(|_| bad())?)),
        None => (rest, None),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let mut v = json!({"protocol": proto, "port": port});
    if let Some(t) = target {
        v["target"] = json!(t);
    }
    if let Some(p) = published {
        v["published"] = json!(p);
    }
    Ok(v)
}

/// Make the change `ops_of` computes from the state, checked, in one transaction. A write that
/// loses the race to another writer reads again and redoes its change; one that meets a
/// transient failure (a leader election, a member going away) reconnects and tries again.
async fn write(
    client: &mut Client,
    url: &str,
    ops_of: impl Fn(&State) -> Result<Ops, String>,
) -> Result<(), Failure> {
    write_when(client, url, &[], ops_of).await
}

/// [`write`], the transaction also comparing `guards` (a refused guard reads again and redoes
/// the change, as a moved counter does).
async fn write_when(
    client: &mut Client,
    url: &str,
    guards: &[Compare],
    ops_of: impl Fn(&State) -> Result<Ops, String>,
) -> Result<(), Failure> {
    let mut last = String::new();
    // The nonce of a transaction whose reply was lost (it may have committed).
    let mut sent: Option<String> = None;
    for attempt in 0..WRITE_ATTEMPTS {
        if attempt > 0 && !last.is_empty() {
            tokio::time::sleep(RETRY_PAUSE).await;
            if let Ok(c) = connect(url).await {
                *client = c;
            }
        }
        let st = match read_all(client).await {
            Ok(st) => st,
            Err(e) => {
                last = format!("{e:#}");
                continue;
            }
        };
        // A write whose reply was lost may have committed: the counter holds its nonce then.
        if let Some(n) = &sent
            && st.gen_value.as_deref() == Some(n.as_str())
        {
            return Ok(());
        }
        let ops = ops_of(&st).map_err(|e| Failure::Usage(format!("{url}: {e}")))?;
        if ops.is_empty() {
            // Nothing to write: the counter stays, and no watcher wakes for nothing.
            return Ok(());
        }
        check(&st, &ops, url)?;
        let nonce = format!("{}-{attempt}-{}", std::process::id(), nonce_seed());
        let mut txn_ops: Vec<TxnOp> = ops
            .iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(k.text(), v.to_string(), None),
                None => TxnOp::delete(k.text(), None),
            })
            .collect();
        txn_ops.push(TxnOp::put(GEN_KEY, nonce.clone(), None));
        let mut when = vec![Compare::mod_revision(
            GEN_KEY,
            CompareOp::Equal,
            st.gen_revision,
        )];
        when.extend(guards.iter().cloned());
        let txn = Txn::new().when(when).and_then(txn_ops);
        match client.txn(txn).await {
            Ok(resp) if resp.succeeded() => return Ok(()),
            // Another writer came first: read again and redo the change on what it wrote.
            Ok(_) => {
                last.clear();
                sent = None;
            }
            Err(e) if e.to_string().contains("too many operations") => {
                return Err(Failure::Usage(format!(
                    "{url}: etcd refused one transaction of {} writes (its --max-txn-ops, 128 by default); raise --max-txn-ops on the members, or write in smaller parts; nothing was written",
                    ops.len() + 1
                )));
            }
            Err(e) => {
                last = format!("writing: {e}");
                sent = Some(nonce);
            }
        }
    }
    Err(Failure::Runtime(if last.is_empty() {
        format!(
            "{url}: the store changed under this write {WRITE_ATTEMPTS} times in a row; nothing was written"
        )
    } else {
        format!("{url}: {last}")
    }))
}

/// `st` with `ops` applied, as etcd will hold it: keys new with this write are created after
/// every other (one revision, the write's).
fn after_ops(st: &State, ops: &Ops) -> State {
    let mut after = st.clone();
    for (k, v) in ops {
        match v {
            Some(v) => after.put_kv(&k.text(), v.to_string().as_bytes(), 0, i64::MAX),
            None => after.delete(&k.text()),
        }
    }
    after
}

/// Add to `ops` the writes that pin every node's load-balancer addresses, as the state after
/// `ops` gives them (`lb` written out for every network): a node registering or a network
/// created gets its default once, and no later change of the node list moves it (only its own
/// removal frees it). Nothing is added when that state does not check (the write's own check
/// then says why).
fn pin_all_lb(st: &State, ops: &mut Ops, url: &str) {
    let after = after_ops(st, ops);
    let Ok((cluster, _)) = after.cluster(url, None) else {
        return;
    };
    for n in &cluster.nodes {
        let key = Key::Object(Kind::Node, n.name.clone());
        let Some(stored) = after.objects.get(&(Kind::Node, n.name.clone())) else {
            continue;
        };
        let pinned = stored
            .get("lb")
            .and_then(Value::as_object)
            .is_some_and(|lb| n.lb.keys().all(|net| lb.contains_key(net)));
        if pinned {
            continue;
        }
        let mut v = (**stored).clone();
        pin_lb(&mut v, &cluster);
        match ops.iter_mut().find(|(k, _)| *k == key) {
            Some(op) => op.1 = Some(v),
            None => ops.push((key, Some(v))),
        }
    }
}

/// Refuse `ops` if the state after them is refused, or leaves out an object the state before
/// did not (the messages are the cluster file's).
fn check(st: &State, ops: &Ops, url: &str) -> Result<(), Failure> {
    let skipped = |s: &State| -> Result<BTreeSet<String>, Failure> {
        s.cluster(url, None)
            .map(|(_, sk)| sk.into_iter().map(|s| s.key).collect())
            .map_err(|e| Failure::Usage(e.to_string()))
    };
    let before = skipped(st).unwrap_or_default();
    let after = after_ops(st, ops);
    let (cluster, sk) = after
        .cluster(url, None)
        .map_err(|e| Failure::Usage(format!("{e}; nothing was written")))?;
    if let Some(why) = in_a_block(st, ops, &cluster) {
        return Err(Failure::Usage(format!("{url}: {why}; nothing was written")));
    }
    if let Some(s) = sk.iter().find(|s| !before.contains(&s.key)) {
        return Err(Failure::Usage(format!(
            "{url}: {}; nothing was written",
            s.reason
        )));
    }
    Ok(())
}

/// Why `ops` may not be written because of the CNI address blocks (docs/store.md, "Address
/// blocks"): an endpoint's address or a VIP inside a claimed block, or, when nodes or networks
/// change, a node's load-balancer address (given or the default, in `after`, the cluster the
/// write leaves) inside one. The node that holds a block hands its addresses out without
/// asking, so nothing else may take one, its own admin-written endpoints included.
fn in_a_block(st: &State, ops: &Ops, after: &crate::config::Cluster) -> Option<String> {
    use super::layout::block_contains;
    if st.blocks.is_empty() {
        return None;
    }
    let owner = |net: &str, a: std::net::Ipv4Addr| {
        st.blocks
            .iter()
            .find(|((n, b), _)| n == net && block_contains(b, a))
            .map(|((_, b), o)| (b.clone(), o.node.clone()))
    };
    let refusal = |what: String, net: &str, a: std::net::Ipv4Addr| {
        let (b, owner) = owner(net, a)?;
        Some(format!(
            "{what} {a} is in address block {b} of network {net:?}, which node {owner:?} hands out to its containers (pick an address outside the claimed blocks: `vxmesh --store URL export` does not list them; etcdctl get --prefix /vxmesh/v1/block/ does)"
        ))
    };
    let ip = |v: &Value, k: &str| v.get(k)?.as_str()?.split('/').next()?.parse().ok();
    let mut nodes_change = false;
    for (k, v) in ops {
        let (Key::Object(kind, name), Some(v)) = (k, v) else {
            continue;
        };
        let net = v.get("network").and_then(Value::as_str).unwrap_or_default();
        // An address the object already had is not a new one: a block claimed since skipped
        // it (a service's backends updated keep their VIP, whatever block now holds it).
        let kept = |key: &str| {
            st.objects
                .get(&(*kind, name.clone()))
                .is_some_and(|old| old.get(key).is_some() && old.get(key) == v.get(key))
        };
        let found = match kind {
            Kind::Endpoint if kept("ip") => None,
            Kind::Endpoint => {
                ip(v, "ip").and_then(|a| refusal(format!("endpoint {name:?}: address"), net, a))
            }
            Kind::Service if kept("vip") => None,
            Kind::Service => {
                ip(v, "vip").and_then(|a| refusal(format!("service {name:?}: VIP"), net, a))
            }
            Kind::Node | Kind::Network => {
                nodes_change = true;
                None
            }
            Kind::Ingress => None,
        };
        if found.is_some() {
            return found;
        }
    }
    if nodes_change {
        for n in &after.nodes {
            for (net, a) in &n.lb {
                if let Some(why) =
                    refusal(format!("node {:?}: load-balancer address", n.name), net, *a)
                {
                    return Some(why);
                }
            }
        }
    }
    None
}

/// Make sure node `name` is in the store with VTEP `vtep` (a node registering itself): added
/// if absent (checked and written as any admin write), refused if it is there with another
/// VTEP.
pub async fn register_node(
    client: &mut Client,
    url: &str,
    name: &str,
    vtep: Ipv4Addr,
) -> anyhow::Result<()> {
    let r = write(client, url, |st| {
        match st.objects.get(&(Kind::Node, name.to_string())) {
            Some(v) if v.get("vtep").and_then(|x| x.as_str()) == Some(&vtep.to_string()) => {
                Ok(Vec::new())
            }
            Some(v) => Err(format!(
                "node {name:?} is in the store with VTEP {}, not {vtep} (--vtep); `vxmesh --store URL node ls` lists the nodes",
                v.get("vtep").map_or("?".into(), |x| x.to_string())
            )),
            None => {
                let mut ops = vec![(
                    Key::Object(Kind::Node, name.to_string()),
                    Some(json!({"name": name, "vtep": vtep.to_string()})),
                )];
                // Its default addresses, and every unpinned node's, written out once.
                pin_all_lb(st, &mut ops, url);
                Ok(ops)
            }
        }
    })
    .await;
    match r {
        Ok(()) => Ok(()),
        Err(Failure::Usage(e)) => Err(anyhow::Error::new(crate::config::ConfigError {
            file: url.into(),
            item: format!("node {name:?}"),
            problem: e,
        })),
        Err(Failure::Runtime(e)) => Err(anyhow::anyhow!(e)),
    }
}

/// `network|service|endpoint ls`: one line per object (its JSON with `--json`).
async fn list(client: &mut Client, kind: Kind, json: bool) -> Result<String, Failure> {
    let st = read_all(client).await?;
    let objs: Vec<&Value> = st
        .objects
        .iter()
        .filter(|((k, _), _)| *k == kind)
        .map(|(_, v)| &**v)
        .collect();
    if json {
        return Ok(format!(
            "{}\n",
            Value::Array(objs.into_iter().cloned().collect())
        ));
    }
    let s = |v: &Value, k: &str| -> String {
        match v.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(x) => x.to_string(),
        }
    };
    let mut o = String::new();
    match kind {
        Kind::Network => {
            let _ = writeln!(o, "{:<16} {:<8} {:<18} MTU", "NAME", "VNI", "SUBNET");
            for v in objs {
                let _ = writeln!(
                    o,
                    "{:<16} {:<8} {:<18} {}",
                    s(v, "name"),
                    s(v, "vni"),
                    s(v, "subnet"),
                    s(v, "mtu")
                );
            }
        }
        Kind::Service => {
            let _ = writeln!(o, "{:<16} {:<12} {:<16} BACKENDS", "NAME", "NETWORK", "VIP");
            for v in objs {
                let b: Vec<String> = v
                    .get("backends")
                    .and_then(|b| b.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                let _ = writeln!(
                    o,
                    "{:<16} {:<12} {:<16} {}",
                    s(v, "name"),
                    s(v, "network"),
                    s(v, "vip"),
                    b.join(" ")
                );
            }
        }
        _ => {
            let _ = writeln!(
                o,
                "{:<16} {:<10} {:<12} {:<16} ATTACH",
                "NAME", "NODE", "NETWORK", "IP"
            );
            for v in objs {
                let _ = writeln!(
                    o,
                    "{:<16} {:<10} {:<12} {:<16} {}",
                    s(v, "name"),
                    s(v, "node"),
                    s(v, "network"),
                    s(v, "ip"),
                    s(v, "attach")
                );
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        assert_eq!(
            parse_port("tcp/80:8080->8000").unwrap(),
            json!({"protocol": "tcp", "port": 80, "published": 8080, "target": 8000})
        );
        assert_eq!(
            parse_port("udp/53").unwrap(),
            json!({"protocol": "udp", "port": 53})
        );
        for bad in ["80", "tcp/", "tcp/x", "tcp/80:", "tcp/80->", "tcp/99999"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn import_pins_the_default_lb_addresses_and_network_rm_takes_them_out() {
        let text = include_str!("../../tests/fixtures/cluster.toml").replace("{P}", "");
        let cluster = Cluster::parse(std::path::Path::new("c.toml"), &text).unwrap();
        // The file's second node: .253 by its place in the file, written out.
        let mut n2 = json!({"name": "n2", "vtep": "198.18.0.2"});
        pin_lb(&mut n2, &cluster);
        assert_eq!(n2["lb"], json!({"appnet": "10.0.9.253"}));
        let mut st = State::of_file(&text);
        st.put(
            "/vxmesh/v1/node/n2",
            br#"{"name":"n2","vtep":"198.18.0.2","lb":{"appnet":"10.0.9.253","tmp":"10.0.32.9"}}"#,
            5,
        );
        st.put(
            "/vxmesh/v1/network/tmp",
            br#"{"name":"tmp","vni":4200,"subnet":"10.0.32.0/24"}"#,
            5,
        );
        let ops = remove_ops(&st, Kind::Network, "tmp").unwrap();
        let n2_after = ops
            .iter()
            .find(|(k, _)| *k == Key::Object(Kind::Node, "n2".into()))
            .and_then(|(_, v)| v.clone())
            .expect("n2 rewritten");
        assert_eq!(n2_after["lb"], json!({"appnet": "10.0.9.253"}));
        assert!(ops.contains(&(Key::Object(Kind::Network, "tmp".into()), None)));
        // A node without an address there is left alone.
        assert!(
            !ops.iter()
                .any(|(k, _)| *k == Key::Object(Kind::Node, "n1".into()))
        );
    }

    #[test]
    fn a_registering_node_pins_every_address_and_a_removal_moves_none() {
        let text = include_str!("../../tests/fixtures/cluster.toml").replace("{P}", "");
        let st = State::of_file(&text);
        // n3 registers (as register_node writes it): its default, and n1's and n2's (never
        // written out: a store from before pinning), are written out in the same write.
        let key = |n: &str| Key::Object(Kind::Node, n.into());
        let mut ops = vec![(key("n3"), Some(json!({"name": "n3", "vtep": "198.18.0.3"})))];
        pin_all_lb(&st, &mut ops, "etcd://test");
        let lb = |ops: &Ops, n: &str| {
            ops.iter()
                .find(|(k, _)| *k == key(n))
                .and_then(|(_, v)| v.as_ref())
                .map(|v| v["lb"]["appnet"].clone())
        };
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert_eq!(lb(&ops, "n1"), Some(json!("10.0.9.254")));
        assert_eq!(lb(&ops, "n2"), Some(json!("10.0.9.253")));
        assert_eq!(lb(&ops, "n3"), Some(json!("10.0.9.252")));
        // n1 goes: nobody moves (by place, n3 would now be .253, n2's).
        let st = after_ops(&st, &ops);
        let after = after_ops(&st, &remove_ops(&st, Kind::Node, "n1").unwrap());
        let (c, _) = after.cluster("etcd://test", None).unwrap();
        assert_eq!(c.node("n2").unwrap().lb["appnet"].to_string(), "10.0.9.253");
        assert_eq!(c.node("n3").unwrap().lb["appnet"].to_string(), "10.0.9.252");
        // A node registering next, third in the list, would be .252 by place: n3 holds it, so
        // it takes the next one down.
        let mut ops = vec![(key("n4"), Some(json!({"name": "n4", "vtep": "198.18.0.4"})))];
        pin_all_lb(&after, &mut ops, "etcd://test");
        assert_eq!(ops.len(), 1, "the others are pinned: {ops:?}");
        assert_eq!(lb(&ops, "n4"), Some(json!("10.0.9.251")));
    }

    #[test]
    fn vnis_are_allocated_from_4096_up() {
        let mut st = State::default();
        assert_eq!(free_vni(&st), Ok(4096));
        st.put(
            "/vxmesh/v1/network/a",
            br#"{"name":"a","vni":4096,"subnet":"10.1.0.0/24"}"#,
            1,
        );
        st.put(
            "/vxmesh/v1/network/b",
            br#"{"name":"b","vni":4098,"subnet":"10.2.0.0/24"}"#,
            1,
        );
        assert_eq!(free_vni(&st), Ok(4097));
    }

    #[test]
    fn node_rm_takes_a_down_node_with_everything_on_it_and_refuses_a_ready_one() {
        let mut st =
            State::of_file(&include_str!("../../tests/fixtures/cluster.toml").replace("{P}", ""));
        st.put("/vxmesh/v1/managed/n2", b"", 2);
        st.put("/vxmesh/v1/alive/n2", br#"{"vtep":"198.18.0.2"}"#, 2);
        st.put(
            "/vxmesh/v1/block/appnet/10.0.9.64-26",
            br#"{"node":"n2"}"#,
            2,
        );
        st.put(
            "/vxmesh/v1/block/appnet/10.0.9.128-26",
            br#"{"node":"n1"}"#,
            2,
        );
        let e = node_rm(&st, "n2").unwrap_err();
        assert!(e.contains("is ready"), "{e}");
        st.delete("/vxmesh/v1/alive/n2");
        let ops = node_rm(&st, "n2").unwrap();
        let text = |k: &Key| k.text();
        let deleted: BTreeSet<String> = ops
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| text(k))
            .collect();
        for k in [
            "/vxmesh/v1/node/n2",
            "/vxmesh/v1/managed/n2",
            "/vxmesh/v1/endpoint/c21",
            "/vxmesh/v1/endpoint/c22",
            "/vxmesh/v1/ingress/n2/ext0",
            "/vxmesh/v1/block/appnet/10.0.9.64-26",
        ] {
            assert!(deleted.contains(k), "{k} not removed: {deleted:?}");
        }
        assert_eq!(deleted.len(), 6, "only n2's: {deleted:?}");
        // The service keeps its other backend.
        let web = ops
            .iter()
            .find(|(k, _)| text(k) == "/vxmesh/v1/service/web")
            .and_then(|(_, v)| v.clone())
            .expect("web rewritten");
        assert_eq!(web["backends"], json!(["c12"]));
        // The state after it passes the file's checks.
        assert!(check(&st, &ops, "etcd://test").is_ok());
        assert!(node_rm(&st, "n9").unwrap_err().contains("no such node"));
    }

    #[test]
    fn a_vip_a_block_came_to_hold_stays_writable_and_a_new_one_there_is_refused() {
        let mut st =
            State::of_file(&include_str!("../../tests/fixtures/cluster.toml").replace("{P}", ""));
        // web's VIP 10.0.9.100 is in this block (its claim skipped the address).
        st.put(
            "/vxmesh/v1/block/appnet/10.0.9.64-26",
            br#"{"node":"n1"}"#,
            2,
        );
        let mut web = (**st.objects.get(&(Kind::Service, "web".to_string())).unwrap()).clone();
        web["backends"] = json!(["c12"]);
        let key = |n: &str| Key::Object(Kind::Service, n.to_string());
        assert!(check(&st, &vec![(key("web"), Some(web.clone()))], "etcd://t").is_ok());
        let mut moved = web.clone();
        moved["vip"] = json!("10.0.9.101");
        let mut other = web.clone();
        other["name"] = json!("web2");
        other["vip"] = json!("10.0.9.101");
        for ops in [
            vec![(key("web"), Some(moved))],
            vec![(key("web2"), Some(other))],
        ] {
            match check(&st, &ops, "etcd://t") {
                Err(Failure::Usage(e)) => assert!(e.contains("address block"), "{e}"),
                _ => panic!("a new VIP inside n1's block was accepted"),
            }
        }
    }
}
