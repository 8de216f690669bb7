//! Named network namespaces: run a piece of setup inside another namespace on the calling
//! thread, and come back.
//!
//! Where it sits: outside the packet path, in port setup. The node process lives in the node's
//! namespace; creating a container's TAP ([`tap`](super::tap)) or turning offloads off on the
//! container side of a veth ([`ethtool`](super::ethtool)) has to happen in the container's
//! namespace (`/run/netns/NAME`, as `ip netns` makes them). `setns(2)` with `CLONE_NEWNET`
//! moves only the calling thread, so [`NetnsSwitch::enter`] moves it there and
//! [`NetnsSwitch::leave`] (or dropping the switch) moves it back. Descriptors opened meanwhile
//! (a TAP, a socket) keep working from any namespace.
//!
//! A thread that cannot return would open the node's later sockets in a container's
//! namespace, so a failed return on drop aborts the process rather than carry on there.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Where `ip netns` keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The calling thread's own network namespace.
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Why the thread could not switch namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name is empty, `.`, `..`, or holds a '/' or NUL.
    #[error("network namespace name {0:?} is not a plain name")]
    BadName(String),
    /// The namespace could not be entered.
    #[error("entering network namespace {netns}: {source}")]
    Enter {
        /// Its name.
        netns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The thread could not return to its namespace.
    #[error("returning to the original network namespace: {0}")]
    Leave(#[source] io::Error),
}

/// Whether `name` is a plain file name under [`NETNS_DIR`].
pub fn valid_name(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']))
}

/// The calling thread is in another network namespace until this is left (or dropped).
#[derive(Debug)]
pub struct NetnsSwitch {
    orig: File,
    left: bool,
}

impl NetnsSwitch {
    /// Move the calling thread into the named namespace.
    pub fn enter(netns: &str) -> Result<NetnsSwitch, NetnsError> {
        if !valid_name(netns) {
            return Err(NetnsError::BadName(netns.to_string()));
        }
        let err = |source| NetnsError::Enter {
            netns: netns.to_string(),
            source,
        };
        let orig = File::open(THREAD_NETNS).map_err(err)?;
        let target = File::open(PathBuf::from(NETNS_DIR).join(netns)).map_err(err)?;
        // SAFETY: setns on a descriptor we own; it changes only this thread's namespace.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(NetnsSwitch { orig, left: false })
    }

    /// Move the thread back.
    pub fn leave(mut self) -> Result<(), NetnsError> {
        self.left = true;
        // SAFETY: setns on a descriptor we own, back to where the thread was.
        if unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(NetnsError::Leave(io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for NetnsSwitch {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        // SAFETY: as in `leave`.
        if unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            // A thread left in a container's namespace would open the node's sockets there:
            // nothing after this point could be trusted.
            eprintln!(
                "vxmesh: cannot return to the original network namespace: {}",
                io::Error::last_os_error()
            );
            std::process::abort();
        }
    }
}

/// Run `f` in the named namespace (`None`: where the thread is), then return the thread to its
/// own namespace, also when `f` fails.
pub fn run_in<T>(netns: Option<&str>, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
    let Some(netns) = netns else {
        return Ok(f());
    };
    let switch = NetnsSwitch::enter(netns)?;
    let out = f();
    switch.leave()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_names_that_are_not_plain() {
        for bad in ["", ".", "..", "a/b", "x\0y"] {
            assert!(!valid_name(bad), "{bad:?}");
            assert!(
                matches!(NetnsSwitch::enter(bad), Err(NetnsError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(valid_name("vxa123-node"));
    }

    #[test]
    fn a_missing_namespace_is_an_enter_error_and_the_thread_stays_home() {
        let before = std::fs::read_link(THREAD_NETNS).ok();
        let e = run_in(Some("vxmesh-no-such-netns"), || ()).unwrap_err();
        assert!(matches!(e, NetnsError::Enter { .. }), "{e}");
        assert!(e.to_string().contains("vxmesh-no-such-netns"), "{e}");
        assert_eq!(std::fs::read_link(THREAD_NETNS).ok(), before);
        assert_eq!(run_in(None, || 7).unwrap(), 7);
    }
}
