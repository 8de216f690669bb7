//! The incremental view against the full checks: random changes through both must give the
//! same cluster and the same objects left out.

use proptest::prelude::*;

use super::*;

const SOURCE: &str = "etcd://test";

/// The shared fixture, in a state.
fn fixture() -> State {
    State::of_file(&include_str!("../../../tests/fixtures/cluster.toml").replace("{P}", ""))
}

/// One change to the store.
#[derive(Clone, Debug)]
enum Op {
    /// An endpoint written: name, node, network, address, MAC, interface, aliases.
    Put(
        String,
        String,
        String,
        u8,
        Option<u8>,
        Option<u8>,
        Vec<String>,
    ),
    /// An endpoint deleted.
    Delete(String),
    /// A value that is not JSON.
    Garbage(String),
    /// A node's liveness (managed and alive, or managed without alive).
    Liveness(bool),
    /// A service's backends rewritten.
    Backends(Vec<String>),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..6).prop_map(|i| format!("e{i}")),
        Just("c11".to_string()),
        Just("c21".to_string()),
        Just("E1".to_string()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            name(),
            prop_oneof![Just("n1"), Just("n2"), Just("n9")],
            prop_oneof![4 => Just("appnet"), 1 => Just("nonet")],
            prop_oneof![Just(11u8), Just(21), Just(100), Just(254), Just(1), 30u8..38],
            proptest::option::of(0u8..4),
            proptest::option::of(0u8..4),
            proptest::collection::vec(
                prop_oneof![Just("a"), Just("b"), Just("web"), Just("e1"), Just("c22")],
                0..2
            ),
        )
            .prop_map(|(n, node, net, ip, mac, ifc, al)| {
                Op::Put(
                    n,
                    node.into(),
                    net.into(),
                    ip,
                    mac,
                    ifc,
                    al.into_iter().map(String::from).collect(),
                )
            }),
        3 => name().prop_map(Op::Delete),
        1 => name().prop_map(Op::Garbage),
        1 => any::<bool>().prop_map(Op::Liveness),
        1 => proptest::collection::vec(name(), 0..3).prop_map(Op::Backends),
    ]
}

/// Fold `op` into the state; the key it touched.
fn fold(s: &mut State, op: &Op, rev: i64) -> Vec<Key> {
    let key = |n: &str| Key::Object(Kind::Endpoint, n.to_string());
    match op {
        Op::Put(n, node, net, ip, mac, ifc, aliases) => {
            let mut v = serde_json::json!({
                "name": n, "node": node, "network": net, "ip": format!("10.0.9.{ip}"),
            });
            if let Some(m) = mac {
                v["mac"] = format!("02:00:00:00:00:{m:02x}").into();
            }
            if let Some(i) = ifc {
                v["attach"] = format!("afxdp:v{i}").into();
            }
            if !aliases.is_empty() {
                v["aliases"] = serde_json::json!(aliases);
            }
            s.put(&key(n).text(), v.to_string().as_bytes(), rev);
            vec![key(n)]
        }
        Op::Delete(n) => {
            s.delete(&key(n).text());
            vec![key(n)]
        }
        Op::Garbage(n) => {
            s.put(&key(n).text(), b"{not json", rev);
            vec![key(n)]
        }
        Op::Liveness(alive) => {
            s.put(&Key::Managed("n2".into()).text(), b"", rev);
            let k = Key::Alive("n2".into());
            if *alive {
                s.put(&k.text(), b"{}", rev);
            } else {
                s.delete(&k.text());
            }
            vec![Key::Managed("n2".into()), k]
        }
        Op::Backends(b) => {
            let k = Key::Object(Kind::Service, "web".into());
            let mut v = (**s.objects.get(&(Kind::Service, "web".into())).unwrap()).clone();
            v["backends"] = serde_json::json!(b);
            s.put(&k.text(), v.to_string().as_bytes(), rev);
            vec![k]
        }
    }
}

fn sorted(mut s: Vec<Skipped>) -> Vec<(String, String)> {
    s.sort_by(|a, b| a.key.cmp(&b.key));
    s.into_iter().map(|s| (s.key, s.reason)).collect()
}

/// Run `batches` through the incremental view and the full checks side by side; how many
/// batches the incremental path took.
fn run(batches: &[Vec<Op>]) -> usize {
    let mut s = fixture();
    let mut view = View::full(&s, SOURCE, Some("n1")).unwrap();
    let mut stale = false;
    let mut fast = 0;
    // n1's plan, moved by the deltas where it can be (`None`: the node refused the last one).
    let mut plan = crate::node::Plan::of(&view.cluster(), "n1").ok();
    for (k, batch) in batches.iter().enumerate() {
        let touched: Vec<Key> = batch
            .iter()
            .flat_map(|op| fold(&mut s, op, k as i64 + 2))
            .collect();
        let full = View::full(&s, SOURCE, Some("n1"));
        let before = view.clone();
        match (stale, view.apply(&s, &touched)) {
            (false, Some(delta)) => {
                fast += 1;
                let full = full.expect("the incremental path took a state the checks refuse");
                assert_eq!(view.cluster(), full.cluster(), "after {batch:?}");
                assert_eq!(sorted(view.skipped.clone()), sorted(full.skipped));
                // The delta is the difference.
                let mut c = before.cluster();
                c.endpoints
                    .retain(|e| !delta.removed.iter().any(|r| r.name == e.name));
                c.endpoints
                    .extend(delta.added.iter().map(|e| (**e).clone()));
                c.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
                assert_eq!(c, view.cluster());
                // And the plan's delta is the whole plan.
                let whole = crate::node::Plan::next(&view.cluster(), "n1", plan.as_ref()).ok();
                if let (Some(p), Some(w)) = (plan.as_mut(), whole.as_ref()) {
                    let old = p.clone();
                    if p.apply_delta(&view, &delta).is_some() {
                        assert_eq!(p, w, "plan after {batch:?}");
                    } else {
                        assert_eq!(*p, old);
                    }
                }
                plan = whole;
            }
            (_, _) => match full {
                Ok(v) => {
                    view = v;
                    stale = false;
                    plan = crate::node::Plan::next(&view.cluster(), "n1", plan.as_ref()).ok();
                }
                // The node keeps what it runs; the next change is checked whole.
                Err(_) => stale = true,
            },
        }
    }
    fast
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn the_incremental_view_is_the_full_checks(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..12)
    ) {
        run(&batches);
    }
}

#[test]
fn endpoints_added_moved_and_removed_take_the_incremental_path() {
    let put = |n: &str, ip: u8| {
        Op::Put(
            n.into(),
            "n2".into(),
            "appnet".into(),
            ip,
            None,
            None,
            vec![],
        )
    };
    let batches = vec![
        vec![put("e1", 31)],
        vec![put("e2", 32), put("e3", 33)],
        vec![put("e1", 34)],
        vec![Op::Delete("e2".into())],
        vec![Op::Garbage("e3".into())],
        vec![put("e3", 35)],
    ];
    assert_eq!(run(&batches), batches.len());
}

#[test]
fn what_the_checks_must_decide_goes_the_full_way() {
    let put = |n: &str, ip: u8| {
        Op::Put(
            n.into(),
            "n2".into(),
            "appnet".into(),
            ip,
            None,
            None,
            vec![],
        )
    };
    // An address taken, a backend deleted, a node going down: none is incremental.
    for batch in [
        vec![put("e1", 21)],
        vec![Op::Delete("c21".into())],
        vec![Op::Liveness(false)],
        vec![Op::Backends(vec!["c21".into()])],
    ] {
        assert_eq!(run(std::slice::from_ref(&batch)), 0, "{batch:?}");
    }
}
