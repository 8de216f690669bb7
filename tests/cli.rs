//! The command line as a user runs it: exit codes and what it prints (SPEC.md).

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

#[test]
fn demo_runs_the_tour_and_exits_0() {
    let (code, out, _) = vxmesh(&["demo"]);
    assert_eq!(code, 0);
    assert!(out.contains("$ vxmesh fdb show"), "{out}");
    assert!(out.contains("$ vxmesh stats"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = vxmesh(&["no-such-command"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = vxmesh(&["run"]);
    assert_eq!(code, 2, "missing --config: {err}");
}

#[test]
fn commands_that_are_not_built_yet_say_so_plainly() {
    let (code, _, err) = vxmesh(&["stats"]);
    assert_eq!(code, 2);
    assert!(err.contains("not available in this build"), "{err}");
}
