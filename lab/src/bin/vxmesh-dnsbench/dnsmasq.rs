//! The reference resolver: dnsmasq in a namespace of its own, reached from the benchmark's
//! container over a second veth (a /30 of its own), serving the fixture's names with the same
//! answers and TTL as the switch's `dns` stage. Off the packet path: benchmark harness.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vxmesh::config::Cluster;

/// The container's end of the veth to dnsmasq.
pub const CLIENT_ADDR: &str = "10.254.0.1";
/// dnsmasq's address.
pub const SERVER_ADDR: &str = "10.254.0.2";

/// dnsmasq running in its namespace; dropping it kills the process (by PID) and deletes the
/// namespace (by name, which removes the veth).
pub struct Dnsmasq {
    /// The namespace dnsmasq runs in.
    pub netns: String,
    child: Option<Child>,
}

impl Dnsmasq {
    /// The dnsmasq process's PID (`ip netns exec` execs the program).
    pub fn pid(&self) -> libc::pid_t {
        self.child.as_ref().map_or(0, |c| c.id() as libc::pid_t)
    }

    /// Make namespace `PREFIXdm`, a veth from `client_ns` into it, and start dnsmasq there with
    /// the names of `network` in `cluster` (endpoints and aliases, services, `tasks.SERVICE`).
    pub fn start(
        prefix: &str,
        client_ns: &str,
        cluster: &Cluster,
        network: &str,
        ttl: u32,
    ) -> Result<Dnsmasq> {
        let netns = format!("{prefix}dm");
        ip(&["netns", "add", &netns])?;
        let mut dm = Dnsmasq { netns, child: None };
        let (a, b) = (format!("{prefix}dq"), format!("{prefix}dr"));
        ip(&[
            "link", "add", &a, "netns", client_ns, "type", "veth", "peer", "name", &b, "netns",
            &dm.netns,
        ])?;
        ip(&[
            "-n",
            client_ns,
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/30"),
            "dev",
            &a,
        ])?;
        ip(&[
            "-n",
            &dm.netns,
            "addr",
            "add",
            &format!("{SERVER_ADDR}/30"),
            "dev",
            &b,
        ])?;
        ip(&["-n", client_ns, "link", "set", &a, "up"])?;
        ip(&["-n", &dm.netns, "link", "set", &b, "up"])?;
        ip(&["-n", &dm.netns, "link", "set", "lo", "up"])?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &dm.netns, "dnsmasq"]).args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port",
            "53",
            "--listen-address",
            SERVER_ADDR,
            "--bind-interfaces",
            "--pid-file=",
            &format!("--local-ttl={ttl}"),
        ]);
        for (name, addr) in records(cluster, network)? {
            cmd.arg(format!("--host-record={name},{addr}"));
        }
        dm.child = Some(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting dnsmasq (Debian package dnsmasq-base)")?,
        );
        // Bounded wait until it answers one query (sent by dnsperf itself).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let o = Command::new("ip")
                .args(["netns", "exec", client_ns, "dnsperf", "-s", SERVER_ADDR])
                .args(["-n", "1", "-t", "1"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    let _ = c.stdin.take().map(|mut i| i.write_all(b"web A\n"));
                    c.wait_with_output()
                })?;
            if String::from_utf8_lossy(&o.stdout).contains("Queries completed:    1 ") {
                return Ok(dm);
            }
            if let Some(st) = dm.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("dnsmasq exited ({st})");
            }
            if Instant::now() > deadline {
                bail!("dnsmasq does not answer at {SERVER_ADDR} after 10 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// The A records the switch answers on `network`: endpoints and their aliases, services'
/// VIPs, `tasks.SERVICE` with each backend's address.
pub fn records(cluster: &Cluster, network: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in cluster.endpoints.iter().filter(|e| e.network == network) {
        out.push((e.name.clone(), e.ip.to_string()));
        for a in &e.aliases {
            out.push((a.clone(), e.ip.to_string()));
        }
    }
    for s in cluster.services.iter().filter(|s| s.network == network) {
        out.push((s.name.clone(), s.vip.to_string()));
        for (b, _) in s.backends.iter().filter(|(_, w)| *w > 0) {
            let e = cluster
                .endpoints
                .iter()
                .find(|e| e.name == *b)
                .with_context(|| format!("service {}: no endpoint {b}", s.name))?;
            out.push((format!("tasks.{}", s.name), e.ip.to_string()));
        }
    }
    Ok(out)
}

/// Run `ip ARGS`, failing with its message.
pub fn ip(args: &[&str]) -> Result<()> {
    let o = Command::new("ip").args(args).output()?;
    if !o.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(())
}
