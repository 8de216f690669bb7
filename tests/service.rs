//! vxmesh as a service (docs/service.md): the systemd unit checked by `systemd-analyze verify`,
//! the example cluster file the package ships, and the Debian package built by
//! `scripts/deb.sh`, installed with `dpkg -i`, run, and removed leaving nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A folder of this test's, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The unit passes `systemd-analyze verify` (this machine's PID 1 need not be systemd): every
/// key known, the command runnable (the built binary in place of /usr/bin/vxmesh), the
/// sandboxing settings valid; and it says what the service needs.
#[test]
fn the_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("packaging/vxmesh@.service")).unwrap();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ExecStart=/usr/bin/vxmesh run --config /etc/vxmesh/cluster.toml --node %i",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_SYS_ADMIN",
        "ProtectSystem=strict",
        "RuntimeDirectory=vxmesh",
        "LimitMEMLOCK=infinity",
    ] {
        assert!(unit.contains(want), "the unit lacks {want}");
    }
    let dir = TempDir::new("unit");
    std::fs::write(
        dir.0.join("vxmesh@.service"),
        unit.replace("/usr/bin/vxmesh", env!("CARGO_BIN_EXE_vxmesh")),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.0.join("vxmesh@n1.service"))
        .output();
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            panic!("systemd-analyze: {e} (Debian package systemd; ./scripts/test.sh installs it)")
        }
    };
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).trim(), "", "systemd-analyze verify complained");
}

/// The example the package ships is a valid cluster file.
#[test]
fn the_example_cluster_file_is_valid() {
    let c = vxmesh::config::Cluster::load(&repo().join("packaging/cluster.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.nodes.len(), 2);
}

/// The state of package `vxmesh` in dpkg's database ("" when it never was installed).
fn dpkg_status() -> String {
    let o = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "vxmesh"]));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Purges the package this test installed, also when the test fails half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "vxmesh"]).output();
    }
}

/// The package from the built binaries: installed, `vxmesh --version` and `man -w vxmesh` from
/// it, the CNI plugin where CNI looks, the installed unit verified with its man page; then
/// `dpkg -r` removes every file it installed and `--purge` the rest of its record.
#[test]
fn the_package_installs_runs_and_removes_cleanly() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: installing a package needs root");
        return;
    }
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("skipped: no dpkg-deb (not a Debian machine)");
        return;
    }
    let before = dpkg_status();
    assert!(
        before.is_empty() || before.ends_with("not-installed"),
        "a vxmesh package is already on this machine ({before}): not touching it"
    );
    let out = TempDir::new("deb");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_vxmesh")).parent().unwrap();
    assert!(bin_dir.join("vxmesh-cni").exists());
    assert!(
        bin_dir.join("vxmesh-lab").exists(),
        "no vxmesh-lab beside vxmesh: cargo build --workspace first"
    );
    let o = run(Command::new(repo().join("scripts/deb.sh"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(&out.0)
        .env("DEB_COMPRESS", "gzip"));
    assert!(o.status.success(), "deb.sh: {}", text(&o));
    let deb = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(deb.exists(), "{}", deb.display());

    let installed = Installed;
    let o = run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(o.status.success(), "dpkg -i: {}", text(&o));
    let o = run(Command::new("/usr/bin/vxmesh").arg("--version"));
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        v.starts_with(&format!("vxmesh {} (git ", env!("CARGO_PKG_VERSION")))
            && v.contains("features: +afxdp +tap +udp +store"),
        "{v}"
    );
    let o = run(Command::new("man").args(["-w", "vxmesh"]));
    assert!(o.status.success(), "man -w vxmesh: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("/usr/share/man/man1/vxmesh.1"),
        "{}",
        text(&o)
    );
    // `vxmesh demo` and `vxmesh lab` find the lab program the package put beside vxmesh.
    let o = run(Command::new("/usr/bin/vxmesh").args(["lab", "--help"]));
    assert!(
        o.status.success() && text(&o).contains("Build or remove a network-namespace lab"),
        "vxmesh lab --help: {}",
        text(&o)
    );
    // The CNI plugin, from both folders runtimes look in, answers VERSION.
    for p in ["/usr/lib/cni/vxmesh-cni", "/opt/cni/bin/vxmesh-cni"] {
        let o = run(Command::new(p).env("CNI_COMMAND", "VERSION"));
        assert!(o.status.success(), "{p}: {}", text(&o));
        assert!(text(&o).contains("supportedVersions"), "{p}: {}", text(&o));
    }
    for p in [
        "/usr/share/doc/vxmesh/examples/cluster.toml",
        "/usr/share/bash-completion/completions/vxmesh",
        "/usr/share/zsh/vendor-completions/_vxmesh",
        "/usr/share/fish/vendor_completions.d/vxmesh.fish",
    ] {
        assert!(Path::new(p).exists(), "{p} is not installed");
    }
    // The installed unit, as systemd would load it (its man page there too now).
    let o = run(Command::new("systemd-analyze").args(["verify", "vxmesh@n1.service"]));
    assert!(
        o.status.success() && text(&o).trim().is_empty(),
        "verify: {}",
        text(&o)
    );

    // What the package installed: its files and links (folders may be shared with others).
    let o = run(Command::new("dpkg").args(["-L", "vxmesh"]));
    assert!(o.status.success(), "{}", text(&o));
    let listed: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let files: Vec<&PathBuf> = listed
        .iter()
        // Folders, and links to folders (/lib on a merged-/usr system), are not the package's.
        .filter(|p| std::fs::symlink_metadata(p).is_ok() && !p.is_dir())
        .collect();
    assert!(files.len() >= 10, "{listed:?}");
    let o = run(Command::new("dpkg").args(["-r", "vxmesh"]));
    assert!(o.status.success(), "dpkg -r: {}", text(&o));
    let left: Vec<&&PathBuf> = files
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    assert!(left.is_empty(), "left behind by dpkg -r: {left:?}");
    for d in ["/usr/share/doc/vxmesh", "/etc/vxmesh"] {
        assert!(!Path::new(d).exists(), "{d} left behind");
    }
    // Its record (the maintainer scripts kept for a purge) goes with --purge.
    drop(installed);
    let after = dpkg_status();
    assert!(
        after.is_empty() || after.ends_with("not-installed"),
        "dpkg still knows vxmesh: {after}"
    );
}
