//! Hairpin (issue 17): a backend that calls its own service's VIP is served every time, also
//! when the scheduler picks the caller itself. Two `vxmesh run` nodes in a namespace lab, nginx
//! in the three backends (c12 on a TAP on n1, c21 on AF_XDP and c22 on a TAP on n2), and 100
//! `curl http://VIP/` from c12 and 100 from c21: every one answered, about a third by the
//! caller itself (source-NATed to the VIP by the switch, `hairpin_conns`), none dropped as
//! `drop_hairpin`.
//!
//! Privileged: without root (or without nginx and curl) the test says so and passes. Namespaces
//! carry a per-run prefix (`vxh{pid}-`) and are removed by name when `Running` drops, also when
//! a check panics; the nginx processes are killed by their PIDs.

use std::process::Command;

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Nginx, Running, vxmesh_exe};
use vxmesh_lab::{have, is_root};

/// Calls from each backend.
const CALLS: usize = 100;

/// Processes and files of this run: killed (by PID) and removed on drop.
#[test]
fn a_backend_calling_its_own_vip_is_served_every_time() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    for tool in ["nginx", "curl"] {
        if !have(tool) {
            eprintln!("skipped: no {tool} (scripts/test.sh installs it)");
            return;
        }
    }
    let prefix = format!("vxh{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &["n1", "n2"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = std::env::temp_dir().join(format!("{prefix}nginx"));
    let _nginx =
        Nginx::start(&run, &["c12", "c21", "c22"], &dir).unwrap_or_else(|e| panic!("{e:#}"));
    for (caller, node) in [("c12", "n1"), ("c21", "n2")] {
        let ns = run.lab.endpoint_netns(caller);
        let mut served = std::collections::BTreeMap::<String, usize>::new();
        let mut failed = Vec::new();
        for i in 0..CALLS {
            let o = Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(["curl", "-sS", "--max-time", "5", "http://10.0.9.100/"])
                .output()
                .expect("curl");
            if o.status.success() {
                *served
                    .entry(String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .or_default() += 1;
            } else {
                failed.push(format!(
                    "{i}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
        eprintln!("{caller} -> VIP, {CALLS} calls: {served:?}, failed {failed:?}");
        assert!(
            failed.is_empty(),
            "{caller}: {failed:?}\n{}",
            run.log_tail()
        );
        assert_eq!(served.values().sum::<usize>(), CALLS);
        // Round robin over three backends: the caller got itself about a third of the time.
        assert!(
            served.get(caller).copied().unwrap_or(0) >= CALLS / 4,
            "{served:?}"
        );
        assert!(run.stage_counter(node, "lb-nat", "hairpin_conns").unwrap() >= (CALLS / 4) as u64);
        assert_eq!(
            run.stage_counter(node, "l2-fwd", "drop_hairpin").unwrap(),
            0
        );
    }
}
