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

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Running, nginx_conf, vxmesh_exe};

/// Calls from each backend.
const CALLS: usize = 100;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Processes and files of this run: killed (by PID) and removed on drop.
struct Cleanup(Vec<Child>, PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Wait (bounded) until something listens on TCP `port` in `ns`.
fn wait_listening(ns: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pat = format!(":{port} ");
    while Instant::now() < deadline {
        let o = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Htln"])
            .output()
            .expect("ss");
        if String::from_utf8_lossy(&o.stdout).contains(&pat) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port} in {ns}");
}

/// A counter of the `lb-nat` or `l2-fwd` stage from `vxmesh stats --json`.
fn counter(run: &Running, node: &str, stage: &str, name: &str) -> u64 {
    let out = run.ctl_ok(node, &["stats", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats --json parses");
    let st = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage}: {out}"));
    st["drops"][name]
        .as_u64()
        .or_else(|| st["events"][name].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {stage}: {out}"))
}

#[test]
fn a_backend_calling_its_own_vip_is_served_every_time() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    for tool in ["nginx", "curl"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("skipped: no {tool} (scripts/test.sh installs it)");
            return;
        }
    }
    let prefix = format!("vxh{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &["n1", "n2"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = std::env::temp_dir().join(format!("{prefix}nginx"));
    let mut clean = Cleanup(Vec::new(), dir.clone());
    for b in ["c12", "c21", "c22"] {
        let conf = nginx_conf(&dir, b).unwrap();
        clean.0.push(
            Command::new("ip")
                .args(["netns", "exec", &run.lab.endpoint_netns(b), "nginx", "-c"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start nginx"),
        );
        wait_listening(&run.lab.endpoint_netns(b), 80);
    }
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
        assert!(counter(&run, node, "lb-nat", "hairpin_conns") >= (CALLS / 4) as u64);
        assert_eq!(counter(&run, node, "l2-fwd", "drop_hairpin"), 0);
    }
}
