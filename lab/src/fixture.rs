//! The cluster file shared by the tests, benches and the demo (`tests/fixtures/cluster.toml`,
//! compiled in), and [`Fixture`], which derives the variants some of them need from it (a third
//! node, a drained backend, no ingresses...) by editing it as a TOML table, so no copy of the
//! file is pasted anywhere. Off the packet path: test and demo support.

use toml::{Table, Value};

/// The shared cluster file; `{P}` ([`PREFIX`]) stands for the per-run namespace prefix.
pub const CLUSTER: &str = include_str!("../../tests/fixtures/cluster.toml");

/// The placeholder in [`CLUSTER`] for the per-run prefix of the containers' namespaces.
pub const PREFIX: &str = "{P}";

/// The shared cluster file with the per-run `prefix` in place of [`PREFIX`].
pub fn cluster(prefix: &str) -> String {
    CLUSTER.replace(PREFIX, prefix)
}

/// [`CLUSTER`] as a table to edit, then written out with [`Fixture::text`]. Items are found by
/// kind (`node`, `network`, `endpoint`, `service`, `ingress`) and name (for an ingress: its
/// node); naming one that is not there panics, as a test's mistake should.
#[derive(Clone, Debug)]
pub struct Fixture {
    doc: Table,
    prefix: String,
}

impl Fixture {
    /// The shared file, for namespaces prefixed with `prefix`.
    pub fn new(prefix: &str) -> Fixture {
        Fixture {
            doc: CLUSTER
                .parse()
                .expect("tests/fixtures/cluster.toml is TOML"),
            prefix: prefix.to_string(),
        }
    }

    /// Set `key` of item `name` of `kind` to `value`.
    pub fn set(&mut self, kind: &str, name: &str, key: &str, value: impl Into<Value>) -> &mut Self {
        self.item(kind, name).insert(key.to_string(), value.into());
        self
    }

    /// Remove `key` from item `name` of `kind` (it must have it).
    pub fn unset(&mut self, kind: &str, name: &str, key: &str) -> &mut Self {
        let had = self.item(kind, name).remove(key);
        assert!(had.is_some(), "fixture: {kind} {name} has no {key}");
        self
    }

    /// Remove `key` from every item of `kind` that has it.
    pub fn unset_all(&mut self, kind: &str, key: &str) -> &mut Self {
        for item in self.items(kind) {
            if let Some(t) = item.as_table_mut() {
                t.remove(key);
            }
        }
        self
    }

    /// Remove item `name` of `kind`.
    pub fn remove(&mut self, kind: &str, name: &str) -> &mut Self {
        let items = self.items(kind);
        let before = items.len();
        items.retain(|i| key_of(kind, i) != Some(name));
        assert_eq!(items.len() + 1, before, "fixture: no {kind} {name}");
        self
    }

    /// Remove every item of `kind`.
    pub fn remove_all(&mut self, kind: &str) -> &mut Self {
        self.doc.remove(kind);
        self
    }

    /// Add an item of `kind`, written as the TOML of its table (`name = "n3"\nvtep = ...`).
    pub fn push(&mut self, kind: &str, toml: &str) -> &mut Self {
        let item: Table = toml
            .parse()
            .unwrap_or_else(|e| panic!("fixture: {kind} item: {e}"));
        self.items(kind).push(Value::Table(item));
        self
    }

    /// The cluster file, with the prefix in place.
    pub fn text(&self) -> String {
        toml::to_string(&self.doc)
            .expect("a table serializes")
            .replace(PREFIX, &self.prefix)
    }

    fn items(&mut self, kind: &str) -> &mut Vec<Value> {
        match self
            .doc
            .entry(kind)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(a) => a,
            _ => panic!("fixture: {kind} is not a list of items"),
        }
    }

    fn item(&mut self, kind: &str, name: &str) -> &mut Table {
        self.items(kind)
            .iter_mut()
            .find(|i| key_of(kind, i) == Some(name))
            .and_then(Value::as_table_mut)
            .unwrap_or_else(|| panic!("fixture: no {kind} {name}"))
    }
}

/// What names an item of `kind`: an ingress its node, anything else its name.
fn key_of<'a>(kind: &str, item: &'a Value) -> Option<&'a str> {
    let key = if kind == "ingress" { "node" } else { "name" };
    item.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use vxmesh::config::{Attach, Cluster};

    fn parse(text: &str) -> Cluster {
        Cluster::parse(Path::new("fixture.toml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_file_and_its_table_are_the_same_cluster() {
        let plain = parse(&cluster("p-"));
        assert_eq!(plain, parse(&Fixture::new("p-").text()));
        assert_eq!(plain.endpoints.len(), 4);
        assert_eq!(plain.ingresses.len(), 2);
        assert_eq!(
            plain.endpoint("c11").unwrap().netns.as_deref(),
            Some("p-c11")
        );
    }

    #[test]
    fn edits_change_only_what_they_name() {
        let mut f = Fixture::new("p-");
        f.set("endpoint", "c12", "attach", "tap:tc12")
            .unset("endpoint", "c22", "attach")
            .remove("ingress", "n2")
            .set("service", "web", "backends", vec!["c21", "c22=0"])
            .push("node", "name = \"n3\"\nvtep = \"198.18.0.3\"");
        let c = parse(&f.text());
        assert_eq!(
            c.endpoint("c12").unwrap().attach,
            Some(Attach::Tap("tc12".into()))
        );
        assert_eq!(c.endpoint("c22").unwrap().attach, None);
        assert_eq!(c.ingresses.len(), 1);
        assert_eq!(
            c.services[0].backends,
            vec![("c21".into(), 1), ("c22".into(), 0)]
        );
        let nodes: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(nodes, ["n1", "n2", "n3"]);
        f.unset_all("endpoint", "attach").remove_all("ingress");
        let c = parse(&f.text());
        assert!(c.endpoints.iter().all(|e| e.attach.is_none()));
        assert!(c.ingresses.is_empty());
    }

    #[test]
    #[should_panic(expected = "fixture: no endpoint c99")]
    fn naming_a_missing_item_panics() {
        Fixture::new("p-").set("endpoint", "c99", "ip", "10.0.9.99");
    }
}
