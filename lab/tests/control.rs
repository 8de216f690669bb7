//! The control socket cannot be used to hurt the node (SPEC.md, "Port security"): a real
//! `vxmesh run` in a network namespace, attacked the ways a new user found (issue 13, item 4).
//!
//! Privileged: without root the test says so and passes. The node's namespaces carry a per-run
//! prefix (`vxc{pid}-`) and are removed by name when `Running` drops, also on failure; files go
//! in a per-run directory removed the same way.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vxmesh::control::{MAX_CONNECTIONS, MAX_REQUEST_LINE};
use vxmesh_lab::is_root;
use vxmesh_lab::labrun::{Running, vxmesh_exe};

const CLUSTER: &str = r#"
[[node]]
name = "n1"
vtep = "198.18.0.1"

[[network]]
name = "appnet"
vni = 4097
subnet = "10.0.9.0/24"
mtu = 1450

[[endpoint]]
name = "c1"
node = "n1"
network = "appnet"
ip = "10.0.9.11"
attach = "tap:eth0"
netns = "{P}c1"
"#;

/// The per-run directory: removed on drop.
struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vxmesh --control SOCK ARGS` as user and group 65534 (nobody/nogroup), no other groups.
fn as_nobody(exe: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(exe)
        .arg("--control")
        .arg(sock)
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Wait (bounded) until the node answers `stats` again.
fn answers_again(run: &Running) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if run.ctl("n1", &["stats"]).is_ok_and(|o| o.status.success()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_control_socket_cannot_be_used_to_hurt_the_node() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, TAP, another user)");
        return;
    }
    let prefix = format!("vxc{}-", std::process::id());
    let dir = Dir(std::env::temp_dir().join(format!("{prefix}files")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let exe = exe.as_path();

    // Started under umask 000, the socket is still 0600 and root's.
    // SAFETY: umask cannot fail; this test is the only one in its process.
    let old = unsafe { libc::umask(0) };
    let started = Running::start(exe, &prefix, &CLUSTER.replace("{P}", &prefix), &["n1"]);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let mut run = started.unwrap_or_else(|e| panic!("{e:#}"));
    let sock = run.control("n1");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{}",
        sock.display()
    );
    assert_eq!(meta.uid(), 0);

    // Another user can neither connect nor, with the mode loosened by hand, be served.
    let o = as_nobody(exe, &sock, &["stats"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o)
    );
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(exe, &sock, &["reload"]);
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("permission denied: user 65534"),
        "{}",
        text(&o)
    );

    // Held connections: the first MAX_CONNECTIONS are sessions waiting for a request, the
    // rest are told "too many" and closed; the node never runs out of descriptors.
    let held: Vec<UnixStream> = (0..MAX_CONNECTIONS + 400)
        .filter_map(|_| UnixStream::connect(&sock).ok())
        .collect();
    assert_eq!(held.len(), MAX_CONNECTIONS + 400);
    let o = run.ctl("n1", &["stats"]).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("too many control connections"),
        "{}",
        text(&o)
    );
    drop(held);
    assert!(
        answers_again(&run),
        "the node stopped answering\n{}",
        run.log_tail()
    );

    // A line without end is cut at 1 MiB: the client is told, the node carries on.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..(2 * MAX_REQUEST_LINE / chunk.len()) {
        if s.write_all(&chunk).is_err() {
            break; // the node closed its side after the limit
        }
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(
        reply.contains("request line over 1048576 bytes") && reply.contains(r#"{"exit":2}"#),
        "{reply}"
    );
    drop(s);
    assert!(
        answers_again(&run),
        "the node stopped answering\n{}",
        run.log_tail()
    );

    // A trace filter is bounded.
    let long = "udp ".repeat(200);
    let o = run
        .ctl("n1", &["trace", "--count", "1", "--filter", &long])
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("at most 512"),
        "{}",
        text(&o)
    );

    // capture -w creates new files only: never truncates, never follows a symlink.
    let existing = dir.0.join("existing");
    std::fs::write(&existing, b"keep me").unwrap();
    let target = dir.0.join("target");
    std::fs::write(&target, b"keep me too").unwrap();
    let link = dir.0.join("link.pcap");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for f in [&existing, &link] {
        let o = run
            .ctl(
                "n1",
                &[
                    "capture",
                    "--port",
                    "c1",
                    "-w",
                    f.to_str().unwrap(),
                    "--count",
                    "1",
                ],
            )
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("exists"),
            "{}",
            text(&o)
        );
    }
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me too");
    assert!(
        answers_again(&run),
        "the node stopped answering\n{}",
        run.log_tail()
    );
    // One capture at a time: a second one is refused while the first runs.
    let first_file = dir.0.join("first.pcap");
    let mut first = Command::new(exe)
        .arg("--control")
        .arg(&sock)
        .args([
            "capture",
            "--port",
            "c1",
            "-w",
            first_file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The node opens the file, then starts the capture: wait for the file, give the start its
    // moment, then try a second one (bounded by `timeout`, so a lost race fails, never hangs).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !first_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the first capture never opened its file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let second = dir.0.join("second.pcap");
    let refused = Command::new("timeout")
        .arg("5")
        .arg(exe)
        .arg("--control")
        .arg(&sock)
        .args(["capture", "--port", "c1", "-w", second.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another capture is running"),
        "{}",
        text(&refused)
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let _ = first.kill();
    let _ = first.wait();

    // With --control-group, members of that group are served: nogroup (gid 65534) here.
    assert!(run.stop_node("n1").unwrap().success());
    run.run_args = vec!["--control-group".into(), "nogroup".into()];
    run.start_node("n1").unwrap();
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534);
    let o = as_nobody(exe, &sock, &["stats"]);
    assert!(o.status.success(), "{}", text(&o));
    // A member's capture is created with the member's identity: not where only root may write.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let theirs = dir.0.join("theirs.pcap");
    let args = [
        "capture",
        "--port",
        "c1",
        "-w",
        theirs.to_str().unwrap(),
        "--count",
        "1",
    ];
    let o = as_nobody(exe, &sock, &args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!theirs.exists());
}
