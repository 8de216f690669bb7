//! The store's state as a node (or an admin command) holds it, and the cluster it means.
//!
//! Where it sits: the watcher feeds every put and delete into a [`State`]; [`State::cluster`]
//! turns it into a checked [`Cluster`] by the cluster file's own checks (the objects are written
//! out as a cluster file and parsed: same checks, same messages), which then goes through the
//! node's one change path like a reloaded file.
//!
//! Bad input never stops the rest: a value that is not JSON, a key outside the layout, an
//! object whose name does not match its key, or an object the checks refuse is skipped with its
//! reason (counted and listed), and everything else applies. An endpoint skipped, or one on a
//! node that is down, also leaves the backend lists it is in, so a service does not go with it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::layout::{Key, Kind, key_of};
use crate::config::{Cluster, ConfigError};

/// A node's status in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Its lease is alive, or it does not run vxmesh (a kernel VXLAN peer: always ready).
    Ready,
    /// It runs vxmesh and its lease expired: its endpoints leave every other node's tables.
    Down,
}

/// Everything under the prefix, as last read or watched.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// The cluster objects, by kind and name (a persistent map: cloning the state for a
    /// change is O(1), and a clone shares what it does not change).
    pub objects: imbl::OrdMap<(Kind, String), Arc<serde_json::Value>>,
    /// Nodes whose liveness key exists.
    pub alive: BTreeSet<String>,
    /// Nodes that run vxmesh.
    pub managed: BTreeSet<String>,
    /// Keys whose value could not be taken, with why.
    pub bad: BTreeMap<String, String>,
    /// The store revision this state is at.
    pub revision: i64,
    /// The modification revision of the write counter (what an admin write compares).
    pub gen_revision: i64,
    /// The write counter's value: the nonce of the last admin write.
    pub gen_value: Option<String>,
    /// The address blocks claimed for CNI attachments: (network, block) → its owner.
    pub blocks: BTreeMap<(String, String), Block>,
    /// The encryption keys' object (`{"keys": [...]}`, the file's `[encryption]`).
    pub encryption: Option<Arc<serde_json::Value>>,
    /// The store revision that created each node's key: the store's node order, by which a
    /// node's default load-balancer addresses are given (first node .254, ...), as the file's
    /// order gives them. A node registering later comes last, so the others' addresses stay.
    pub node_created: BTreeMap<String, i64>,
}

/// An address block's owner, and the revision of the claim (what a write into it compares, so
/// that a block deleted or claimed again since is never written into).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The node that hands its addresses out.
    pub node: String,
    /// The block key's modification revision.
    pub revision: i64,
}

/// An object left out of the cluster, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its key.
    pub key: String,
    /// Why.
    pub reason: String,
}

impl State {
    /// Take a put of `key` (at `mod_revision`), a key created then or before.
    pub fn put(&mut self, key: &str, value: &[u8], mod_revision: i64) {
        self.put_kv(key, value, mod_revision, mod_revision);
    }

    /// Take a put of `key` at `mod_revision`, the key created at `create_revision` (etcd's
    /// `create_revision`; an update keeps the first one). A write not made yet (an admin
    /// command's check of the state after it) passes `i64::MAX`: new keys come last.
    pub fn put_kv(&mut self, key: &str, value: &[u8], mod_revision: i64, create_revision: i64) {
        self.bad.remove(key);
        let Some(k) = Key::parse(key) else {
            self.bad
                .insert(key.into(), "not a key of the layout".into());
            return;
        };
        match k {
            Key::Encryption => {
                self.encryption = None;
                match serde_json::from_slice::<serde_json::Value>(value) {
                    Ok(v) if Cluster::check_item("encryption", &v).is_ok() => {
                        self.encryption = Some(Arc::new(v));
                    }
                    Ok(v) => {
                        let why = Cluster::check_item("encryption", &v)
                            .err()
                            .unwrap_or_default();
                        self.bad
                            .insert(key.into(), format!("not valid [encryption]: {why}"));
                    }
                    Err(e) => {
                        self.bad.insert(key.into(), format!("not JSON: {e}"));
                    }
                }
            }
            Key::Gen => {
                self.gen_revision = mod_revision;
                self.gen_value = Some(String::from_utf8_lossy(value).into_owned());
            }
            Key::Alive(n) => {
                self.alive.insert(n);
            }
            Key::Managed(n) => {
                self.managed.insert(n);
            }
            Key::Block(net, b) => {
                self.blocks.remove(&(net.clone(), b.clone()));
                match serde_json::from_slice::<serde_json::Value>(value)
                    .ok()
                    .and_then(|v| Some(v.get("node")?.as_str()?.to_string()))
                {
                    Some(node) => {
                        let revision = mod_revision;
                        self.blocks.insert((net, b), Block { node, revision });
                    }
                    None => {
                        self.bad
                            .insert(key.into(), "not a block: {\"node\": NAME}".into());
                    }
                }
            }
            Key::Object(kind, name) => {
                if kind == Kind::Node {
                    // The key's creation, even when its value is refused: a value written
                    // later keeps the key's place, as etcd keeps its create_revision.
                    self.node_created
                        .entry(name.clone())
                        .or_insert(create_revision);
                }
                self.objects.remove(&(kind, name.clone()));
                match serde_json::from_slice::<serde_json::Value>(value) {
                    Err(e) => {
                        self.bad.insert(key.into(), format!("not JSON: {e}"));
                    }
                    Ok(v) if !v.is_object() => {
                        self.bad.insert(key.into(), "not a JSON object".into());
                    }
                    Ok(v)
                        if key_of(kind, &v).as_ref() != Some(&Key::Object(kind, name.clone())) =>
                    {
                        self.bad
                            .insert(key.into(), "its name does not match its key".into());
                    }
                    Ok(v) => match Cluster::check_item(kind.table(), &v) {
                        // Its keys and their types, once here rather than at every change.
                        Err(e) => {
                            self.bad
                                .insert(key.into(), format!("not a valid {}: {e}", kind.table()));
                        }
                        Ok(()) => {
                            self.objects.insert((kind, name), Arc::new(v));
                        }
                    },
                }
            }
        }
    }

    /// Take a delete of `key`.
    pub fn delete(&mut self, key: &str) {
        self.bad.remove(key);
        match Key::parse(key) {
            Some(Key::Alive(n)) => {
                self.alive.remove(&n);
            }
            Some(Key::Managed(n)) => {
                self.managed.remove(&n);
            }
            Some(Key::Object(kind, name)) => {
                if kind == Kind::Node {
                    self.node_created.remove(&name);
                }
                self.objects.remove(&(kind, name));
            }
            Some(Key::Block(net, b)) => {
                self.blocks.remove(&(net, b));
            }
            Some(Key::Encryption) => self.encryption = None,
            Some(Key::Gen) | None => {}
        }
    }

    /// The state holding a cluster file's objects (tests: the store as `import` leaves it).
    #[cfg(test)]
    pub(crate) fn of_file(text: &str) -> State {
        let doc: toml::Table = toml::from_str(text).expect("a cluster file");
        let mut s = State::default();
        for (i, (kind, v)) in super::layout::file_objects(&doc)
            .expect("JSON values")
            .into_iter()
            .enumerate()
        {
            let key = key_of(kind, &v).expect("named objects").text();
            // Created in the file's order, as `import` pins it.
            s.put_kv(&key, v.to_string().as_bytes(), 1, i as i64);
        }
        s
    }

    /// A node's status.
    pub fn status(&self, node: &str) -> Status {
        if self.managed.contains(node) && !self.alive.contains(node) {
            Status::Down
        } else {
            Status::Ready
        }
    }

    /// The nodes that are down.
    pub fn down(&self) -> BTreeSet<String> {
        self.managed
            .iter()
            .filter(|n| !self.alive.contains(*n))
            .cloned()
            .collect()
    }

    /// The endpoints left out with `excluded` and, with `live` (the node looking), those of the
    /// other nodes that are down. A node never sees itself down: its own lease may have expired
    /// while etcd was away, and it must not take its own containers' ports away for that.
    fn gone(&self, live: Option<&str>, excluded: &BTreeSet<(Kind, String)>) -> BTreeSet<String> {
        let down: BTreeSet<String> = match live {
            Some(me) => self.down().into_iter().filter(|n| n != me).collect(),
            None => BTreeSet::new(),
        };
        let mut gone: BTreeSet<String> = excluded
            .iter()
            .filter(|(k, _)| *k == Kind::Endpoint)
            .map(|(_, n)| n.clone())
            .collect();
        if !down.is_empty() {
            for ((kind, name), v) in &self.objects {
                let on_down = v
                    .get("node")
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| down.contains(n));
                if *kind == Kind::Endpoint && on_down {
                    gone.insert(name.clone());
                }
            }
        }
        gone
    }

    /// The objects to write out: those of `kind` but `excluded` and the endpoints `gone`, a
    /// service without the backends `gone`.
    fn items<'a>(
        &'a self,
        kind: Kind,
        excluded: &'a BTreeSet<(Kind, String)>,
        gone: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a String, serde_json::Value)> + 'a {
        self.objects
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .filter(move |((k, name), _)| {
                let left_out = kind == Kind::Endpoint && gone.contains(name);
                !(left_out || excluded.contains(&(*k, (*name).clone())))
            })
            .map(move |((_, name), v)| {
                let mut v = (**v).clone();
                if kind == Kind::Service {
                    drop_backends(&mut v, gone);
                }
                (name, v)
            })
    }

    /// The objects as the cluster file's tables in JSON (see [`State::items`]); the ingresses
    /// in the order written (the checks name an ingress by its position).
    fn tables(
        &self,
        live: Option<&str>,
        excluded: &BTreeSet<(Kind, String)>,
    ) -> (serde_json::Value, Vec<(Kind, String)>) {
        let gone = self.gone(live, excluded);
        let mut doc = serde_json::Map::new();
        let mut ingresses = Vec::new();
        for kind in Kind::ALL {
            let mut items: Vec<_> = self.items(kind, excluded, &gone).collect();
            if kind == Kind::Node {
                // The node order (the default load-balancer addresses follow it): as created.
                items.sort_by_key(|(name, _)| {
                    (
                        self.node_created.get(*name).copied().unwrap_or(i64::MAX),
                        *name,
                    )
                });
            }
            let mut list = Vec::new();
            for (name, v) in items {
                if kind == Kind::Ingress {
                    ingresses.push((kind, name.clone()));
                }
                list.push(v);
            }
            doc.insert(kind.table().into(), serde_json::Value::Array(list));
        }
        fold_service_aliases(&mut doc);
        if let Some(e) = &self.encryption {
            doc.insert("encryption".into(), (**e).clone());
        }
        (serde_json::Value::Object(doc), ingresses)
    }

    /// The objects as a cluster file's text, tables in the file's order (nodes first).
    fn file(&self, excluded: &BTreeSet<(Kind, String)>) -> String {
        // The tables the checks see (aliases naming a service already folded into its
        // backends), so that the file reads back as the same cluster.
        let (doc, _) = self.tables(None, excluded);
        let mut text = String::new();
        for kind in Kind::ALL {
            let list: Vec<toml::Value> = doc
                .get(kind.table())
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                // Every item passed check_item: its values are all TOML can hold.
                .filter_map(|v| toml::Value::try_from(v).ok())
                .collect();
            if list.is_empty() {
                continue;
            }
            let mut doc = toml::Table::new();
            doc.insert(kind.table().into(), toml::Value::Array(list));
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&toml::to_string(&doc).expect("a TOML table serializes"));
        }
        if let Some(e) = doc
            .get("encryption")
            .and_then(|v| toml::Value::try_from(v).ok())
        {
            let mut t = toml::Table::new();
            t.insert("encryption".into(), e);
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&toml::to_string(&t).expect("a TOML table serializes"));
        }
        text
    }

    /// The cluster the state means, checked as a cluster file read from `source` (the store's
    /// URL, so messages name it). With `live` (the node that looks), the other nodes that are
    /// down have no endpoints. Objects
    /// the checks refuse are left out one at a time, each with its reason, until the rest
    /// passes; an error that names no object (it cannot be left out) is returned.
    pub fn cluster(
        &self,
        source: &str,
        live: Option<&str>,
    ) -> Result<(Cluster, Vec<Skipped>), ConfigError> {
        let mut excluded = BTreeSet::new();
        let mut skipped: Vec<Skipped> = self
            .bad
            .iter()
            .map(|(k, r)| Skipped {
                key: k.clone(),
                reason: r.clone(),
            })
            .collect();
        loop {
            let (tables, ingresses) = self.tables(live, &excluded);
            let err = match Cluster::from_json(Path::new(source), &tables) {
                Ok(c) => return Ok((c, skipped)),
                Err(e) => e,
            };
            let Some(obj) = culprit(&err, &ingresses) else {
                return Err(err);
            };
            if !excluded.insert(obj.clone()) {
                return Err(err);
            }
            skipped.push(Skipped {
                key: Key::Object(obj.0, obj.1).text(),
                reason: format!("{}: {}", err.item, err.problem),
            });
        }
    }

    /// The objects as a cluster file (valid input to `vxmesh run --config`), leaving out what
    /// the checks refuse.
    pub fn export(&self, source: &str) -> Result<String, ConfigError> {
        let (_, skipped) = self.cluster(source, None)?;
        let excluded: BTreeSet<(Kind, String)> = skipped
            .iter()
            .filter_map(|s| match Key::parse(&s.key) {
                Some(Key::Object(k, n)) => Some((k, n)),
                _ => None,
            })
            .collect();
        Ok(self.file(&excluded))
    }
}

/// An endpoint alias that names a service of its network makes the endpoint a backend of that
/// service (weight 1), as a task of a Docker service (how a CNI attachment's `--network-alias`
/// reaches every node): the alias leaves the endpoint's list and the name joins the backends.
fn fold_service_aliases(doc: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    let services: BTreeMap<(String, String), usize> = doc
        .get("service")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| {
            let net = s.get("network")?.as_str()?.to_string();
            Some(((net, s.get("name")?.as_str()?.to_ascii_lowercase()), i))
        })
        .collect();
    if services.is_empty() {
        return;
    }
    let mut joins = Vec::new();
    for e in doc
        .get_mut("endpoint")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let net = e.get("network").and_then(Value::as_str).unwrap_or_default();
        let name = e.get("name").and_then(Value::as_str).unwrap_or_default();
        let (net, name) = (net.to_string(), name.to_string());
        if let Some(aliases) = e.get_mut("aliases").and_then(Value::as_array_mut) {
            aliases.retain(|a| {
                let key = (
                    net.clone(),
                    a.as_str().unwrap_or_default().to_ascii_lowercase(),
                );
                match services.get(&key) {
                    Some(&i) => {
                        joins.push((i, name.clone()));
                        false
                    }
                    None => true,
                }
            });
        }
    }
    let Some(list) = doc.get_mut("service").and_then(Value::as_array_mut) else {
        return;
    };
    for (i, name) in joins {
        if let Some(b) = list[i].get_mut("backends").and_then(Value::as_array_mut) {
            let there = b.iter().any(|x| {
                x.as_str()
                    .is_some_and(|s| s.split('=').next() == Some(name.as_str()))
            });
            if !there {
                b.push(Value::String(name));
            }
        }
    }
}

/// Take the endpoints in `gone` out of a service's backend list; whether any was in it.
pub(super) fn drop_backends(service: &mut serde_json::Value, gone: &BTreeSet<String>) -> bool {
    if gone.is_empty() {
        return false;
    }
    let Some(b) = service.get_mut("backends").and_then(|b| b.as_array_mut()) else {
        return false;
    };
    let before = b.len();
    b.retain(|e| {
        let name = e.as_str().map(|s| s.split('=').next().unwrap_or(s));
        !name.is_some_and(|n| gone.contains(n))
    });
    b.len() != before
}

/// The object a refusal names: `endpoint "c11"`, or `ingress #2 (node "n1")` (the second of
/// `ingresses`).
fn culprit(err: &ConfigError, ingresses: &[(Kind, String)]) -> Option<(Kind, String)> {
    let item = err.item.as_str();
    if let Some(rest) = item.strip_prefix("ingress #") {
        let k: usize = rest.split(' ').next()?.parse().ok()?;
        return ingresses.get(k.checked_sub(1)?).cloned();
    }
    let (table, quoted) = item.split_once(' ')?;
    let kind = Kind::ALL.into_iter().find(|k| k.table() == table)?;
    let name: String = serde_json::from_str(quoted).ok()?;
    Some((kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn fixture() -> State {
        State::of_file(&include_str!("../../tests/fixtures/cluster.toml").replace("{P}", ""))
    }

    #[test]
    fn the_fixture_through_the_store_is_the_fixture() {
        let s = fixture();
        let (c, skipped) = s.cluster("etcd://test", None).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let file = Cluster::parse(
            Path::new("etcd://test"),
            &include_str!("../../tests/fixtures/cluster.toml").replace("{P}", ""),
        )
        .unwrap();
        assert_eq!(c, file);
        // The export reads back as the same cluster.
        let text = s.export("etcd://test").unwrap();
        assert_eq!(
            Cluster::parse(Path::new("etcd://test"), &text).unwrap(),
            file
        );
    }

    #[test]
    fn nodes_keep_their_default_lb_addresses_in_the_order_they_were_created() {
        // n1 and n2 from the fixture (created 1 and 2 as `of_file` counts); a node named to
        // sort first registers later: it comes last, and n1 and n2 keep .254 and .253.
        let mut s = fixture();
        let lb = |s: &State| -> Vec<(String, Ipv4Addr)> {
            let (c, _) = s.cluster("etcd://test", None).unwrap();
            c.nodes
                .iter()
                .map(|n| (n.name.clone(), n.lb["appnet"]))
                .collect()
        };
        let before = lb(&s);
        assert_eq!(before[0].1, Ipv4Addr::new(10, 0, 9, 254));
        s.put_kv(
            "/vxmesh/v1/node/a0",
            br#"{"name": "a0", "vtep": "198.18.0.9"}"#,
            40,
            40,
        );
        let after = lb(&s);
        assert_eq!(after[..before.len()], before[..]);
        assert_eq!(
            after.last().unwrap(),
            &("a0".to_string(), Ipv4Addr::new(10, 0, 9, 252))
        );
        // An update keeps its place; a node removed and added again comes last.
        s.put_kv(
            "/vxmesh/v1/node/n1",
            br#"{"name": "n1", "vtep": "198.18.0.1"}"#,
            41,
            41,
        );
        assert_eq!(lb(&s), after);
        s.delete("/vxmesh/v1/node/a0");
        assert_eq!(lb(&s), before);
        // Created in one write (one revision): by name.
        s.put_kv(
            "/vxmesh/v1/node/b0",
            br#"{"name": "b0", "vtep": "198.18.0.8"}"#,
            42,
            42,
        );
        s.put_kv(
            "/vxmesh/v1/node/a0",
            br#"{"name": "a0", "vtep": "198.18.0.9"}"#,
            42,
            42,
        );
        let names: Vec<String> = lb(&s).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[names.len() - 2..], ["a0", "b0"]);
    }

    #[test]
    fn bad_values_are_skipped_with_their_reason_and_the_rest_applies() {
        let mut s = fixture();
        s.put("/vxmesh/v1/endpoint/x1", b"{not json", 2);
        s.put("/vxmesh/v1/endpoint/x2", b"[1, 2]", 2);
        s.put("/vxmesh/v1/endpoint/x3", br#"{"name": "other"}"#, 2);
        s.put("/vxmesh/v1/bogus/x4", b"{}", 2);
        // Unknown key, wrong type, a failed check: each object alone goes.
        s.put(
            "/vxmesh/v1/endpoint/x5",
            br#"{"name": "x5", "node": "n1", "network": "appnet", "ip": "10.0.9.50", "colour": "red"}"#,
            2,
        );
        s.put(
            "/vxmesh/v1/endpoint/x6",
            br#"{"name": "x6", "node": "n2", "network": "appnet", "ip": 7}"#,
            2,
        );
        s.put(
            "/vxmesh/v1/endpoint/x7",
            br#"{"name": "x7", "node": "n2", "network": "appnet", "ip": "10.0.8.7"}"#,
            2,
        );
        s.put(
            "/vxmesh/v1/endpoint/x8",
            br#"{"name": "x8", "node": "n2", "network": "appnet", "ip": "10.0.9.80"}"#,
            2,
        );
        let (c, skipped) = s.cluster("etcd://test", Some("n1")).unwrap();
        let keys: BTreeSet<&str> = skipped.iter().map(|s| s.key.as_str()).collect();
        for k in ["x1", "x2", "x3", "x5", "x6", "x7"] {
            assert!(
                keys.iter().any(|key| key.ends_with(k)),
                "{k} not skipped: {skipped:?}"
            );
        }
        assert!(keys.contains("/vxmesh/v1/bogus/x4"));
        let x7 = skipped.iter().find(|s| s.key.ends_with("x7")).unwrap();
        assert!(x7.reason.contains("not a host address"), "{x7:?}");
        assert!(c.endpoint("x8").is_some(), "the good one applies");
        assert!(c.endpoint("c11").is_some());
    }

    #[test]
    fn an_alias_naming_a_service_makes_a_backend_and_blocks_are_kept_or_skipped() {
        let mut s = fixture();
        s.put(
            "/vxmesh/v1/endpoint/p1",
            br#"{"name": "p1", "node": "n1", "network": "appnet", "ip": "10.0.9.2", "aliases": ["WEB", "p1a"]}"#,
            2,
        );
        s.put(
            "/vxmesh/v1/block/appnet/10.0.9.0-26",
            br#"{"node": "n1"}"#,
            2,
        );
        s.put("/vxmesh/v1/block/appnet/10.0.9.64-26", b"[]", 2);
        let (c, skipped) = s.cluster("etcd://test", Some("n1")).unwrap();
        assert_eq!(c.endpoint("p1").unwrap().aliases, ["p1a"]);
        assert!(c.services[0].backends.contains(&("p1".to_string(), 1)));
        // Exported, it reads back as a file to the same cluster (the alias folded in).
        let text = s.export("etcd://test").unwrap();
        let (all, _) = s.cluster("etcd://test", None).unwrap();
        assert_eq!(
            Cluster::parse(Path::new("etcd://test"), &text).unwrap(),
            all
        );
        assert_eq!(s.blocks.len(), 1);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].key.ends_with("10.0.9.64-26"));
        s.delete("/vxmesh/v1/block/appnet/10.0.9.0-26");
        assert!(s.blocks.is_empty());
    }

    #[test]
    fn a_node_that_is_down_loses_its_endpoints_and_backends_until_it_is_back() {
        let mut s = fixture();
        s.put("/vxmesh/v1/managed/n2", b"", 2);
        assert_eq!(s.status("n2"), Status::Down);
        assert_eq!(s.status("n1"), Status::Ready, "not managed: a static peer");
        let (c, _) = s.cluster("etcd://test", Some("n1")).unwrap();
        assert!(c.endpoint("c21").is_none() && c.endpoint("c22").is_none());
        assert_eq!(c.services[0].backends, vec![("c12".to_string(), 1)]);
        assert!(c.node("n2").is_some(), "the node stays listed");
        s.put("/vxmesh/v1/alive/n2", br#"{"vtep":"198.18.0.2"}"#, 3);
        assert_eq!(s.status("n2"), Status::Ready);
        let (c, _) = s.cluster("etcd://test", Some("n1")).unwrap();
        assert_eq!(c.services[0].backends.len(), 3);
        s.delete("/vxmesh/v1/alive/n2");
        assert_eq!(s.status("n2"), Status::Down);
        // n2 itself keeps its endpoints (its lease lapsed while etcd was away, say).
        let (c, _) = s.cluster("etcd://test", Some("n2")).unwrap();
        assert!(c.endpoint("c21").is_some() && c.endpoint("c22").is_some());
    }
}
