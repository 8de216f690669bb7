//! The node's side of encrypted networks: it never serves one without an ESP port (at start
//! and at a reload), its security associations follow the keys and the peers across changes
//! (keeping the state of those that stay), and a failed change takes them back.

use std::net::Ipv4Addr;

use super::tests::{cluster, file};
use super::*;
use crate::node::{Change, MemPorts, PortOpener, PortPlan};
use vswitch::Port;

const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhM=";
const K2: &str = "FBUWFxgZGhscHR4fICEiIyQlJic=";
const N2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// In-memory ports, but no raw socket for ESP (a node without CAP_NET_RAW).
struct NoEsp;

impl PortOpener for NoEsp {
    fn open(&mut self, p: &PortPlan, offloads: bool) -> anyhow::Result<Box<dyn Port>> {
        MemPorts.open(p, offloads)
    }
    fn underlay(&mut self, vtep: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
        MemPorts.underlay(vtep)
    }
}

/// The fixture with `appnet` encrypted (its MTU as it was: ports keep theirs) and `keys`.
fn encrypted(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "{}\n[encryption]\nkeys = [{}]\n",
        file().replace("mtu = 1450", "mtu = 1450\nencrypted = true"),
        keys.join(", ")
    )
}

/// (direction, peer, key id) of each SA, sorted.
fn sas(node: &Node) -> Vec<(String, Ipv4Addr, String)> {
    let mut v: Vec<_> = node
        .esp_sas()
        .into_iter()
        .map(|s| (s.direction.to_string(), s.peer, s.key_id.to_string()))
        .collect();
    v.sort();
    v
}

fn want(v: &[(&str, &str)]) -> Vec<(String, Ipv4Addr, String)> {
    let mut v: Vec<_> = v.iter().map(|(d, k)| (d.to_string(), N2, id(k))).collect();
    v.sort();
    v
}

fn id(k: &str) -> String {
    esp::Key::parse(k).unwrap().id().to_string()
}

#[test]
fn an_encrypted_network_is_never_served_without_an_esp_port() {
    let e = Node::build(cluster(&encrypted(&[K1])), "n1", &mut NoEsp)
        .err()
        .expect("refused");
    let e = format!("{e:#}");
    assert!(
        e.contains("appnet is encrypted") && e.contains("no ESP socket"),
        "{e}"
    );
    // A node running plain networks refuses the reload that encrypts one, and runs on.
    let mut node = Node::build(cluster(&file()), "n1", &mut NoEsp).unwrap();
    let plan = node.plan.clone();
    let e = node
        .reload(cluster(&encrypted(&[K1])), &mut NoEsp)
        .unwrap_err();
    assert!(format!("{e:#}").contains("no ESP socket"), "{e:#}");
    assert_eq!(node.plan, plan);
    assert!(!node.sw.env.nets[0].encrypted);
    assert!(node.esp_sas().is_empty());
}

#[test]
fn security_associations_follow_the_keys_and_keep_their_counters() {
    let mut node = Node::build(cluster(&encrypted(&[K1])), "n1", &mut MemPorts).unwrap();
    assert!(node.sw.env.nets[0].encrypted);
    assert!(node.sw.port_id(ESP_PORT).is_some());
    assert_eq!(sas(&node), want(&[("out", K1), ("in", K1)]));
    let spi = node.esp_sas()[0].spi;
    // Rotation: add the new key second (accepted, not sent), move it first, remove the old one.
    let log = node
        .reload(cluster(&encrypted(&[K1, K2])), &mut MemPorts)
        .unwrap();
    assert!(
        log.contains(&format!("encryption: keys [{}, {}]", id(K1), id(K2))),
        "{log}"
    );
    assert_eq!(sas(&node), want(&[("out", K1), ("in", K1), ("in", K2)]));
    assert_eq!(node.esp_sas()[0].spi, spi, "the SA that stays is the same");
    node.reload(cluster(&encrypted(&[K2, K1])), &mut MemPorts)
        .unwrap();
    assert_eq!(node.esp_sas()[0].key_id.to_string(), id(K2));
    node.reload(cluster(&encrypted(&[K2])), &mut MemPorts)
        .unwrap();
    assert_eq!(sas(&node), want(&[("out", K2), ("in", K2)]));
    // The network turned plain again: no SA left, nothing of it goes by ESP.
    node.reload(cluster(&file()), &mut MemPorts).unwrap();
    assert!(node.esp_sas().is_empty());
    assert!(!node.sw.env.nets[0].encrypted);
}

#[test]
fn a_change_derives_its_security_associations_before_the_commit() {
    let mut node = Node::build(cluster(&encrypted(&[K1])), "n1", &mut MemPorts).unwrap();
    let prepare = |node: &Node, text: &str| {
        Change::prepare(
            cluster(text),
            node.plan.clone(),
            &mut MemPorts,
            node.sw.buf_size(),
        )
        .unwrap()
    };
    // Same keys and peers: nothing to derive.
    assert!(prepare(&node, &encrypted(&[K1])).sas.is_none());
    // A key added: the SAs come derived with the change (off the poll thread), one outbound
    // toward n2 from the first key and one inbound per key.
    let change = prepare(&node, &encrypted(&[K1, K2]));
    let planned = change.sas.as_ref().expect("derived when prepared");
    assert_eq!((planned.outbound.len(), planned.inbound.len()), (1, 2));
    let spi_out = planned.outbound[0].spi();
    let (r, _left) = node.commit(change);
    r.unwrap();
    assert_eq!(sas(&node), want(&[("out", K1), ("in", K1), ("in", K2)]));
    assert_eq!(node.esp_sas()[0].spi, spi_out);
    // The network turned plain: an empty plan, swapped in the same way.
    let change = prepare(&node, &file());
    assert!(change.sas.as_ref().is_some_and(|p| p.outbound.is_empty()));
    node.commit(change).0.unwrap();
    assert!(node.esp_sas().is_empty());
}

#[test]
fn a_change_that_fails_after_any_step_takes_the_security_associations_back() {
    // The keys rotate and a port attaches in the same change; a failure is injected after each
    // of its steps in turn: the SAs are as before every time, until the change goes through.
    let c13 = "\n[[endpoint]]\nname = \"c13\"\nnode = \"n1\"\nnetwork = \"appnet\"\nip = \"10.0.9.13\"\nattach = \"afxdp:vc13\"\n";
    let target = cluster(&(encrypted(&[K2, K1]) + c13));
    for fail_at in 1..200 {
        let mut node = Node::build(cluster(&encrypted(&[K1])), "n1", &mut MemPorts).unwrap();
        let before = sas(&node);
        let change =
            Change::prepare(target.clone(), node.plan.clone(), &mut MemPorts, 2048).unwrap();
        let mut c = node.begin(change);
        c.fail_at(fail_at);
        while !node.step(&mut c, 1) {}
        let (r, _left) = c.finish();
        if r.is_ok() {
            assert!(fail_at > 2, "only {} steps", fail_at - 1);
            assert_eq!(sas(&node), want(&[("out", K2), ("in", K1), ("in", K2)]));
            return;
        }
        assert_eq!(sas(&node), before, "failure after step {fail_at}");
    }
    panic!("the change never completed");
}

#[test]
fn the_transport_picks_the_port_and_a_node_without_it_refuses() {
    let udp = encrypted(&[K1]).replace("keys = [", "transport = \"udp\"\nkeys = [");
    let mut node = Node::build(cluster(&encrypted(&[K1])), "n1", &mut MemPorts).unwrap();
    assert_eq!(node.sw.esp_underlay(), node.sw.port_id(ESP_PORT));
    let log = node.reload(cluster(&udp), &mut MemPorts).unwrap();
    assert!(log.contains("encryption: transport udp"), "{log}");
    assert_eq!(node.sw.esp_underlay(), node.sw.port_id(ESP_UDP_PORT));
    // The SAs do not change with the transport.
    assert_eq!(sas(&node), want(&[("out", K1), ("in", K1)]));
    // NoEsp opens neither: refused, whatever the transport.
    let e = Node::build(cluster(&udp), "n1", &mut NoEsp)
        .err()
        .expect("refused");
    assert!(format!("{e:#}").contains("transport \"udp\""), "{e:#}");
}
