//! Build script of the `vxmesh` crate: records the git revision the binary is built from, for
//! `vxmesh --version` (`VXMESH_GIT_REV`: `git rev-parse --short HEAD`, or "unknown" outside a
//! git checkout, e.g. from a source tarball).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git").args(args).output().ok()?;
    if !o.status.success() {
        return None;
    }
    let s = String::from_utf8(o.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VXMESH_GIT_REV={rev}");
    // Built again when HEAD moves: HEAD itself (a branch switch) and the branch it points at.
    // Only files that exist: cargo takes a missing one (no packed-refs in a fresh clone) as
    // changed, and would build the crate again every time.
    let watch = |p: String| {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    };
    for what in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", what]) {
            watch(p);
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &r])
    {
        watch(p);
    }
    println!("cargo:rerun-if-changed=build.rs");
}
