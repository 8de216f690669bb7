//! vxmesh on one machine, apart from the node: the network-namespace lab a cluster file
//! describes ([`lab`]), real `vxmesh run` nodes started in it ([`labrun`]), the one-command
//! tour ([`demo`]), the cluster file the tests, benches and the demo share ([`fixture`]), and Open
//! vSwitch's userspace datapath as a lab node for the comparison ([`ovs`]).
//! Nothing here is on the packet path; the product (`vxmesh`) does not depend on this crate:
//! `vxmesh demo` and `vxmesh lab` run the `vxmesh-lab` program (external subcommands, as git and
//! cargo have them).

pub mod cnirun;
pub mod demo;
pub mod etcd;
pub mod fixture;
pub mod lab;
pub mod labrun;
pub mod ovs;
pub mod podman;
pub mod rawsock;

/// Whether this process runs as root (the namespace tests need it; without it they say so and
/// pass).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the program `prog` is on the PATH (an executable file in one of its directories).
pub fn have(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(prog))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}
