//! The store's key layout (docs/store.md): one key per object under a versioned prefix, values
//! in JSON with exactly the keys of the cluster file's items.
//!
//! ```text
//! /vxmesh/v1/node/NAME              {"name","vtep","lb"?}                 [[node]]
//! /vxmesh/v1/network/NAME           {"name","vni","subnet","mtu"?}        [[network]]
//! /vxmesh/v1/endpoint/NAME          {"name","node","network","ip",...}    [[endpoint]]
//! /vxmesh/v1/service/NAME           {"name","network","vip",...}          [[service]]
//! /vxmesh/v1/ingress/NODE/IFNAME    {"node","attach","ip"}                [[ingress]]
//! /vxmesh/v1/alive/NAME             {"vtep"}   under the node's lease: the node is up
//! /vxmesh/v1/managed/NAME           ""         the node runs vxmesh (liveness applies to it)
//! /vxmesh/v1/block/NET/A.B.C.D-P    {"node"}   an address block of NET claimed by a node (CNI)
//! /vxmesh/v1/encryption             {"keys": [...]}                       [encryption]
//! /vxmesh/v1/gen                    a counter every admin write bumps (compare-and-swap)
//! ```
//!
//! Where it sits: between etcd and the node's change path; nothing here touches packets.

/// Every key starts with this (the layout's version is in it: a new layout gets a new prefix).
pub const PREFIX: &str = "/vxmesh/v1/";
/// The key every admin write compares and bumps, so two writers never lose an update.
pub const GEN_KEY: &str = "/vxmesh/v1/gen";
/// The encryption keys (the file's `[encryption]` table), one key for the cluster.
pub const ENCRYPTION_KEY: &str = "/vxmesh/v1/encryption";

/// The kinds of object the store holds, as the cluster file names its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `[[node]]`.
    Node,
    /// `[[network]]`.
    Network,
    /// `[[endpoint]]`.
    Endpoint,
    /// `[[service]]`.
    Service,
    /// `[[ingress]]`.
    Ingress,
}

impl Kind {
    /// Every kind, in the cluster file's order.
    pub const ALL: [Kind; 5] = [
        Kind::Node,
        Kind::Network,
        Kind::Endpoint,
        Kind::Service,
        Kind::Ingress,
    ];

    /// The table's name in the cluster file and the key's second part.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Network => "network",
            Kind::Endpoint => "endpoint",
            Kind::Service => "service",
            Kind::Ingress => "ingress",
        }
    }

    fn of(table: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.table() == table)
    }
}

/// What a key names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// An object of the cluster model: its kind and name (`NODE/IFNAME` for an ingress).
    Object(Kind, String),
    /// A node's liveness key (leased).
    Alive(String),
    /// A node that runs vxmesh.
    Managed(String),
    /// The write counter.
    Gen,
    /// The encryption keys.
    Encryption,
    /// An address block of a network claimed by a node for its CNI attachments: the network
    /// and the block's name (`A.B.C.D-P`, see [`block_range`]).
    Block(String, String),
}

impl Key {
    /// Parse a key of the layout; `None` for anything else under the prefix (skipped, counted).
    pub fn parse(key: &str) -> Option<Key> {
        if key == GEN_KEY {
            return Some(Key::Gen);
        }
        if key == ENCRYPTION_KEY {
            return Some(Key::Encryption);
        }
        let rest = key.strip_prefix(PREFIX)?;
        let (table, name) = rest.split_once('/')?;
        let valid = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        match table {
            "alive" if valid(name) => Some(Key::Alive(name.into())),
            "managed" if valid(name) => Some(Key::Managed(name.into())),
            "block" => {
                let (net, block) = name.split_once('/')?;
                (valid(net) && block_range(block).is_some())
                    .then(|| Key::Block(net.into(), block.into()))
            }
            "ingress" => {
                let (node, ifname) = name.split_once('/')?;
                (valid(node) && valid(ifname)).then(|| Key::Object(Kind::Ingress, name.into()))
            }
            t => {
                let kind = Kind::of(t)?;
                valid(name).then(|| Key::Object(kind, name.into()))
            }
        }
    }

    /// The key's text.
    pub fn text(&self) -> String {
        match self {
            Key::Object(k, n) => format!("{PREFIX}{}/{n}", k.table()),
            Key::Alive(n) => format!("{PREFIX}alive/{n}"),
            Key::Managed(n) => format!("{PREFIX}managed/{n}"),
            Key::Gen => GEN_KEY.into(),
            Key::Encryption => ENCRYPTION_KEY.into(),
            Key::Block(net, b) => format!("{PREFIX}block/{net}/{b}"),
        }
    }
}

/// The addresses of block `A.B.C.D-P` (a block key's last part): its first address and prefix
/// length; `None` unless the address is the first of a /P.
pub fn block_range(name: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (a, p) = name.split_once('-')?;
    let addr: std::net::Ipv4Addr = a.parse().ok()?;
    let p: u8 = p.parse().ok().filter(|p| (1..=32).contains(p))?;
    let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
    (u32::from(addr) & !mask == 0).then_some((addr, p))
}

/// Whether `ip` is in block `name`.
pub fn block_contains(name: &str, ip: std::net::Ipv4Addr) -> bool {
    block_range(name).is_some_and(|(a, p)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(a)
    })
}

/// The objects of a cluster file's tables (parsed TOML), in the file's order, as the store holds
/// them (JSON with the file's keys).
pub fn file_objects(doc: &toml::Table) -> Result<Vec<(Kind, serde_json::Value)>, String> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for item in doc
            .get(kind.table())
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            out.push((kind, serde_json::to_value(item).map_err(|e| e.to_string())?));
        }
    }
    Ok(out)
}

/// The key of an object given as JSON: its kind's key by `name` (`node/ifname` of its `attach`
/// for an ingress); `None` if the object lacks what names it.
pub fn key_of(kind: Kind, obj: &serde_json::Value) -> Option<Key> {
    let s = |k: &str| obj.get(k).and_then(|v| v.as_str());
    let name = match kind {
        Kind::Ingress => {
            let attach = s("attach")?;
            let ifname = attach.split_once(':').map_or(attach, |(_, i)| i);
            format!("{}/{ifname}", s("node")?)
        }
        _ => s("name")?.to_string(),
    };
    Key::parse(&Key::Object(kind, name).text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_print_back() {
        for k in [
            Key::Object(Kind::Endpoint, "c11".into()),
            Key::Object(Kind::Ingress, "n1/ext0".into()),
            Key::Alive("n1".into()),
            Key::Managed("n2".into()),
            Key::Gen,
            Key::Encryption,
            Key::Block("appnet".into(), "10.0.9.64-26".into()),
        ] {
            assert_eq!(Key::parse(&k.text()), Some(k.clone()), "{}", k.text());
        }
        for bad in [
            "/vxmesh/v2/node/n1",
            "/vxmesh/v1/nodes/n1",
            "/vxmesh/v1/node/",
            "/vxmesh/v1/node/a b",
            "/vxmesh/v1/ingress/n1",
            "/vxmesh/v1/endpoint/../x",
            "/vxmesh/v1/block/appnet/10.0.9.65-26",
            "/vxmesh/v1/block/appnet/10.0.9.64",
            "/other",
        ] {
            assert_eq!(Key::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn blocks_hold_their_addresses() {
        use std::net::Ipv4Addr;
        assert!(block_contains("10.0.9.64-26", Ipv4Addr::new(10, 0, 9, 127)));
        assert!(!block_contains(
            "10.0.9.64-26",
            Ipv4Addr::new(10, 0, 9, 128)
        ));
        assert!(!block_contains("10.0.9.64-26", Ipv4Addr::new(10, 0, 9, 63)));
        assert_eq!(block_range("10.0.9.64-33"), None);
    }

    #[test]
    fn objects_are_keyed_by_name_and_ingresses_by_node_and_interface() {
        let ep = serde_json::json!({"name": "c11", "node": "n1"});
        assert_eq!(
            key_of(Kind::Endpoint, &ep),
            Some(Key::Object(Kind::Endpoint, "c11".into()))
        );
        let ing = serde_json::json!({"node": "n1", "attach": "afxdp:ext0", "ip": "192.0.2.1/24"});
        assert_eq!(
            key_of(Kind::Ingress, &ing),
            Some(Key::Object(Kind::Ingress, "n1/ext0".into()))
        );
        assert_eq!(
            key_of(Kind::Node, &serde_json::json!({"vtep": "1.2.3.4"})),
            None
        );
    }
}
