//! The cluster files the measurement runs on and reloads, derived from the shared fixture
//! (`vxmesh_lab::fixture::Fixture`), and the veths of the containers that attach.
//!
//! - The base: the fixture, with the network widened to 10.0.0.0/14 (room for 50,000 more
//!   endpoints) and the service's one backend a sink: a container on n2 whose interface has no
//!   address ([`silence_sink`]), so its kernel drops what reaches it without a word and the
//!   connections that fill n1's table get no answer, no reset, and stay established.
//! - Remote: the base plus N endpoints on n2 (10.1.0.0 upwards, no `attach`: n1 only learns
//!   where they are, as for containers of another node).
//! - Attached: the base plus K containers on n1, each on an AF_XDP veth `hx{i}` this program
//!   makes in n1's namespace (both ends there, as `lab/tests/hotplug.rs` does).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::Running;

/// The network every container is on.
const NETWORK: &str = "appnet";
/// Wide enough for the remote endpoints (10.1.0.0 upwards) and the fixture's 10.0.9.0/24.
const WIDE_SUBNET: &str = "10.0.0.0/14";
/// The service's only backend: a container on n2 (AF_XDP veth `vsink`) that answers nothing.
pub const SINK: (&str, Ipv4Addr) = ("sink", Ipv4Addr::new(10, 0, 9, 50));
/// The first remote endpoint's address.
const FIRST_REMOTE: u32 = 0x0a01_0000;
/// The attached containers' MTU (the network's).
const MTU: &str = "1450";

/// The three files of a measurement, as text.
pub struct Files {
    /// The file the nodes start with, and every measured change returns to.
    pub base: String,
    /// `base` plus the remote endpoints.
    pub remote: String,
    /// `base` plus the attached containers.
    pub attached: String,
}

/// The files for namespaces prefixed `prefix`, with `remote` endpoints on n2 and `attach`
/// containers on n1.
pub fn files(prefix: &str, remote: u32, attach: usize) -> Files {
    let mut f = Fixture::new(prefix);
    f.set("network", NETWORK, "subnet", WIDE_SUBNET)
        .push(
            "endpoint",
            &format!(
                "name = \"{0}\"\nnode = \"n2\"\nnetwork = \"{NETWORK}\"\nip = \"{1}\"\nattach = \"afxdp:v{0}\"\nnetns = \"{{P}}{0}\"",
                SINK.0, SINK.1
            ),
        )
        .set("service", "web", "backends", vec![SINK.0]);
    let base = f.text();
    let mut r = f.clone();
    for i in 0..remote {
        let ip = Ipv4Addr::from(FIRST_REMOTE + i);
        r.push(
            "endpoint",
            &format!("name = \"r{i}\"\nnode = \"n2\"\nnetwork = \"{NETWORK}\"\nip = \"{ip}\""),
        );
    }
    let mut a = f;
    for i in 0..attach {
        a.push(
            "endpoint",
            &format!(
                "name = \"b{i}\"\nnode = \"n1\"\nnetwork = \"{NETWORK}\"\nip = \"{}\"\nattach = \"afxdp:{}\"",
                attached_ip(i),
                attached_if(i)
            ),
        );
    }
    Files {
        base,
        remote: r.text(),
        attached: a.text(),
    }
}

/// Take the sink's address away (the lab gave it one): the kernel in its namespace then drops
/// every packet for it (not its address, no forwarding), answering none, not even with a
/// reset.
pub fn silence_sink(run: &Running) -> Result<()> {
    let ns = run.lab.endpoint_netns(SINK.0);
    let o = Command::new("ip")
        .args(["-n", &ns, "addr", "flush", "dev", "eth0"])
        .output()
        .context("ip addr flush")?;
    if !o.status.success() {
        bail!(
            "ip -n {ns} addr flush dev eth0: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// Attached container `i`'s address: 10.0.10.{i}, beside the fixture's 10.0.9.0/24.
fn attached_ip(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).expect("a few containers");
    Ipv4Addr::from(0x0a00_0a00 + i + 1)
}

/// Attached container `i`'s veth end on the node side.
fn attached_if(i: usize) -> String {
    format!("hx{i}")
}

/// Make the `attach` veths (`hx{i}` for the node, `hy{i}` its peer; both up, in `node_netns`,
/// removed with it) in one `ip -batch`.
pub fn make_veths(node_netns: &str, attach: usize) -> Result<()> {
    let mut batch = String::new();
    for i in 0..attach {
        let (x, y) = (attached_if(i), format!("hy{i}"));
        batch.push_str(&format!(
            "link add {x} mtu {MTU} type veth peer name {y}\nlink set {x} up\nlink set {y} up\n"
        ));
    }
    let mut b = Command::new("ip")
        .args(["-n", node_netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("ip -batch")?;
    b.stdin
        .take()
        .expect("piped")
        .write_all(batch.as_bytes())
        .context("writing to ip -batch")?;
    if !b.wait()?.success() {
        bail!("ip -n {node_netns} -batch: making the veths of the attached containers failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use vxmesh::config::{Attach, Cluster};

    fn parse(text: &str) -> Cluster {
        Cluster::parse(Path::new("pause.toml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_three_files_differ_only_by_what_the_changes_add() {
        let f = files("p-", 300, 10);
        let base = parse(&f.base);
        assert_eq!(base.services[0].backends, vec![("sink".into(), 1)]);
        let sink = base.endpoint("sink").unwrap();
        assert_eq!(sink.node, "n2");
        assert_eq!(sink.attach, Some(Attach::Afxdp("vsink".into())));
        assert_eq!(sink.netns.as_deref(), Some("p-sink"));
        let remote = parse(&f.remote);
        assert_eq!(remote.endpoints.len(), base.endpoints.len() + 300);
        let r = remote.endpoint("r299").unwrap();
        assert_eq!((r.node.as_str(), r.ip), ("n2", Ipv4Addr::new(10, 1, 1, 43)));
        let attached = parse(&f.attached);
        assert_eq!(attached.endpoints.len(), base.endpoints.len() + 10);
        let b = attached.endpoint("b9").unwrap();
        assert_eq!(b.attach, Some(Attach::Afxdp("hx9".into())));
        assert_eq!(
            (b.node.as_str(), b.ip),
            ("n1", Ipv4Addr::new(10, 0, 10, 10))
        );
    }
}
