//! The command line as a user runs it: exit codes and what it prints (SPEC.md).

use std::path::Path;
use std::process::Command;

fn vxmesh(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vxmesh"))
        .args(args)
        .output()
        .expect("run vxmesh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `vxmesh demo` and `vxmesh lab` run the `vxmesh-lab` program (lab/tests/cli.rs tests them
/// with it). Without it, next to `vxmesh` or on PATH, they say where to get it and exit 2.
#[test]
fn demo_and_lab_without_the_lab_program_say_where_to_get_it_and_exit_2() {
    // A hard link, in the target directory (same file system): a copy is a file this process
    // wrote, and a child forked meanwhile by a parallel test may still hold it open for
    // writing, so running it can fail with ETXTBSY.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("alone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alone = dir.join("vxmesh");
    let _ = std::fs::remove_file(&alone);
    std::fs::hard_link(env!("CARGO_BIN_EXE_vxmesh"), &alone).unwrap();
    for args in [
        &["demo"][..],
        &["demo", "--memory"],
        &["lab", "up", "--config", "x.toml"],
    ] {
        let out = Command::new(&alone)
            .args(args)
            .env("PATH", &dir)
            .output()
            .expect("run vxmesh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("vxmesh-lab") && err.contains("cargo build --workspace"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A node the cluster file does not have is a configuration error: exit 2, said in one line
/// with the nodes it has, before anything is opened.
#[test]
fn run_for_a_node_not_in_the_file_exits_2() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("n9-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.toml");
    let fixture = include_str!("fixtures/cluster.toml").replace("{P}", "t");
    std::fs::write(&file, fixture).unwrap();
    let sock = dir.join("n9.sock");
    let (code, out, err) = vxmesh(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--node",
        "n9",
        "--control",
        sock.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("node \"n9\": not in the cluster file (nodes: n1, n2)"),
        "{err}"
    );
    assert!(!sock.exists(), "a control socket for a node that never ran");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = vxmesh(&["no-such-command"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = vxmesh(&["run"]);
    assert_eq!(code, 2, "missing --config: {err}");
    // The poll thread's settings are checked before anything else happens.
    for (flag, bad, says) in [
        ("--busy-poll-us", "soon", "microseconds"),
        ("--busy-poll-us", "3600000001", "microseconds"),
        ("--max-conns", "10", "1024 to 16777216"),
        ("--max-conns", "99999999999", "1024 to 16777216"),
        ("--metrics", "9417", "--metrics <ADDR:PORT>"),
        ("--afxdp-napi-defer-us", "10001", "0..=10000"),
        ("--lb-timeouts", "900,120", "TCP,TCPFIN,UDP"),
        ("--lb-timeouts", "900,120,300,5", "TCP,TCPFIN,UDP"),
        ("--lb-timeouts", "900,-1,300", "TCP,TCPFIN,UDP"),
        ("--lb-timeouts", "604801,0,0", "0 to 604800"),
        ("--fdb-aging", "0", "1..=1000000"),
    ] {
        let (code, _, err) = vxmesh(&["run", "--config", "x.toml", "--node", "n1", flag, bad]);
        assert_eq!(code, 2, "{flag} {bad}: {err}");
        assert!(err.contains(says), "{flag} {bad}: {err}");
    }
    // An upstream that is not an address: said plainly, before anything else happens.
    let (code, _, err) = vxmesh(&[
        "run",
        "--config",
        "x.toml",
        "--node",
        "n1",
        "--dns-upstream",
        "dns.example",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--dns-upstream") && err.contains("not IP or IP:PORT"),
        "{err}"
    ); // Two options that need different XDP modes: refused, whichever order.
    for pair in [
        ["--afxdp-offloads", "--afxdp-napi-defer-us", "200"],
        ["--afxdp-napi-defer-us", "200", "--afxdp-offloads"],
    ] {
        let mut args = vec!["run", "--config", "x.toml", "--node", "n1"];
        args.extend(pair);
        let (code, _, err) = vxmesh(&args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("give one of them"), "{err}");
    }
}

#[test]
fn talking_to_a_node_that_is_not_running_fails_with_1() {
    let (code, _, err) = vxmesh(&["--control", "/nonexistent/vxmesh.sock", "stats"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach a node at /nonexistent/vxmesh.sock"),
        "{err}"
    );
    let (code, _, err) = vxmesh(&["stats"]);
    assert_eq!(code, 2, "no node named: {err}");
}

#[test]
fn run_refuses_an_invalid_cluster_file_with_2() {
    let dir = std::env::temp_dir().join(format!("vxmesh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[[node]]\nname = \"n1\"\nvtep = \"198.18.0.1\"\ncolor = 1\n",
    )
    .unwrap();
    let (code, _, err) = vxmesh(&[
        "run",
        "--config",
        f.to_str().unwrap(),
        "--node",
        "n1",
        "--control",
        dir.join("n1.sock").to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml") && err.contains("color"), "{err}");
}
