//! `vxmesh demo` and `vxmesh lab` as a user runs them: through the `vxmesh` program, which runs
//! this crate's `vxmesh-lab` (SPEC.md, "The command line", "The demo"): exit codes and output.

use std::process::Command;

use vxmesh_lab::is_root;
use vxmesh_lab::labrun::vxmesh_exe;

/// `PROGRAM ARGS`, run as `uid`:`uid` with no groups when `uid` is given (with setpriv);
/// exit code, stdout, stderr.
fn run(program: &std::path::Path, args: &[&str], uid: Option<u32>) -> (i32, String, String) {
    let mut cmd = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={u}"))
                .arg(format!("--regid={u}"))
                .arg("--clear-groups")
                .arg(program);
            c
        }
        None => Command::new(program),
    };
    let out = cmd.args(args).output().expect("run the program");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn vxmesh(args: &[&str]) -> (i32, String, String) {
    run(
        &vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}")),
        args,
        None,
    )
}

#[test]
fn memory_demo_runs_the_tour_and_exits_0() {
    let lab = std::path::Path::new(env!("CARGO_BIN_EXE_vxmesh-lab"));
    for (code, out, err) in [
        vxmesh(&["demo", "--memory"]),
        run(lab, &["demo", "--memory"], None),
    ] {
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("$ vxmesh fdb show"), "{out}");
        assert!(out.contains("$ vxmesh stats"), "{out}");
    }
}

#[test]
fn usage_errors_exit_2_through_vxmesh() {
    for args in [
        &["demo", "--no-such-flag"][..],
        &["lab"],
        &["lab", "sideways", "--config", "x.toml"],
    ] {
        let (code, _, err) = vxmesh(args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let (code, out, _) = vxmesh(&["demo", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--memory"), "{out}");
}

#[test]
fn lab_refuses_an_invalid_cluster_file_with_2() {
    let f = std::env::temp_dir().join(format!("vxmesh-lab-cli-{}.toml", std::process::id()));
    std::fs::write(&f, "[[node]]\nname = \"n1\"\ncolor = 1\n").unwrap();
    let (code, _, err) = vxmesh(&["lab", "up", "--config", f.to_str().unwrap()]);
    std::fs::remove_file(&f).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("color") && err.lines().count() == 1, "{err}");
}

#[test]
fn the_demo_without_root_says_so_in_one_line_and_exits_2() {
    if !is_root() {
        // Already not root: the real thing, as the user who runs the tests.
        let (code, out, err) = vxmesh(&["demo"]);
        assert_eq!((code, out.as_str()), (2, ""), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        return;
    }
    let has_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !has_setpriv {
        eprintln!("skipped: no setpriv to drop root with");
        return;
    }
    // The build may sit where nobody (65534) cannot reach it; then there is nothing to check.
    let exe = vxmesh_exe().unwrap();
    let (code, out, err) = run(&exe, &["demo"], Some(65534));
    if code == 126 || code == 127 || err.contains("Permission denied") {
        eprintln!(
            "skipped: {} is not executable by uid 65534: {err}",
            exe.display()
        );
        return;
    }
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("needs root"), "{err}");
}

#[test]
fn a_poll_priority_the_process_may_not_take_is_refused_before_anything_starts() {
    let (code, _, err) = vxmesh(&[
        "run",
        "--config",
        "x.toml",
        "--node",
        "n1",
        "--poll-priority",
        "100",
    ]);
    assert_eq!(code, 2, "out of range: {err}");
    if !is_root() {
        eprintln!("skipped the unprivileged half: needs root to switch to nobody");
        return;
    }
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let args = [
        "run",
        "--config",
        "/nonexistent.toml",
        "--node",
        "n1",
        "--control",
        "/nonexistent/n1.sock",
        "--poll-priority",
        "40",
    ];
    let (code, _, err) = run(&exe, &args, Some(65534));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--poll-priority 40") && err.contains("CAP_SYS_NICE"),
        "{err}"
    );
}
