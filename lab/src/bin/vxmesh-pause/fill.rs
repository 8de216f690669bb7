//! Filling n1's connection table: for each source port, a TCP SYN and then an ACK to the VIP,
//! written as whole frames (correct IPv4 and TCP checksums, `vswitch::frames::tcp`) on an
//! AF_PACKET socket opened inside a container's namespace, so they enter n1 through that
//! container's port as its own traffic (its MAC and address: port security lets them through).
//! The load balancer makes an entry per SYN and moves it to ESTABLISHED on the ACK (IPVS's
//! table: an ACK from the client in SYN_RECV), 15 minutes to live; the backend is a sink
//! (`cluster::SINK`), so no answer or reset ever closes one. Frames are paced, and the table is
//! counted afterwards with `conntrack show --json`; sending the same ports again only refreshes
//! their entries.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vswitch::Mac;
use vswitch::frames::{TcpFlags, tcp};
use vxmesh_lab::labrun::{Running, in_netns};
use vxmesh_lab::rawsock::PacketSocket;

use crate::scenario::NODE;
use crate::{Plan, check, log, nap};

/// The VIP and its port (the fixture's service `web`).
pub const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 9, 100), 80);
/// The containers the connections come from: n1's two (c11 on AF_XDP, c12 on a TAP), so both
/// kinds of port carry the SYNs.
pub const FROM: [&str; 2] = ["c11", "c12"];
/// The first source port of each container.
pub const FIRST_PORT: u16 = 10_000;
/// Fill rounds before giving up on reaching the target (a round resends every port).
const ROUNDS: usize = 3;
/// Frames written between two looks at the clock.
const BURST: u32 = 32;

/// A container the connections come from.
pub struct Source {
    /// Its namespace.
    pub netns: String,
    /// Its interface there.
    pub ifname: String,
    /// Its MAC.
    pub mac: Mac,
    /// Its address.
    pub ip: Ipv4Addr,
}

impl Source {
    /// Endpoint `name` of the running lab (its first interface is `eth0`; a TAP endpoint's is
    /// the TAP the node made there, named in its `attach`).
    pub fn of(run: &Running, name: &str) -> Result<Source> {
        let e = run
            .cluster
            .endpoint(name)
            .with_context(|| format!("no endpoint {name}"))?;
        let ifname = match &e.attach {
            Some(vxmesh::config::Attach::Tap(i)) => i.clone(),
            _ => "eth0".to_string(),
        };
        Ok(Source {
            netns: run.lab.endpoint_netns(name),
            ifname,
            mac: e.mac,
            ip: e.ip,
        })
    }
}

/// Write, from `src`, a SYN then an ACK to the VIP from each port of `ports`, at about `pps`
/// frames a second. Returns the frames written.
pub fn send(src: &Source, ports: std::ops::Range<u16>, pps: u32) -> Result<u64> {
    let (mac, ip, ifname) = (src.mac, src.ip, src.ifname.clone());
    let h = in_netns(&src.netns, move || -> Result<u64> {
        let sock = PacketSocket::open(&ifname)?;
        let vmac = Mac::docker_default(VIP.0);
        let start = Instant::now();
        let mut sent = 0u64;
        for port in ports {
            for (flags, seq, ack) in [(TcpFlags::SYN, 1000, 0), (TcpFlags::ACK, 1001, 1)] {
                let f = tcp(mac, vmac, ip, VIP.0, port, VIP.1, flags, seq, ack, b"");
                sock.send(&f)?;
                sent += 1;
            }
            if sent.is_multiple_of(u64::from(BURST)) {
                // Ahead of the rate: wait until the clock catches up.
                let due = Duration::from_secs_f64(sent as f64 / f64::from(pps));
                if let Some(ahead) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
        }
        Ok(sent)
    })?;
    h.join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
        .with_context(|| format!("sending from {}", src.netns))
}

/// Send the connections until n1's table holds `plan.conns` (bounded rounds); its (entries,
/// established).
pub fn fill_table(run: &Running, plan: &Plan) -> Result<(usize, usize)> {
    let mut have = count(run, NODE)?;
    let per = u16::try_from(plan.conns.div_ceil(FROM.len() as u64))
        .context("too many connections per container")?;
    for round in 1..=ROUNDS {
        if have.0 as u64 >= plan.conns {
            break;
        }
        check()?;
        let t = Instant::now();
        let mut frames = 0;
        for name in FROM {
            let src = Source::of(run, name)?;
            frames += send(&src, FIRST_PORT..FIRST_PORT + per, plan.fill_pps)?;
        }
        nap(Duration::from_millis(200))?;
        have = count(run, NODE)?;
        log(&format!(
            "fill round {round}: {frames} frames in {:.1} s; n1's table holds {} connections ({} established)",
            t.elapsed().as_secs_f64(),
            have.0,
            have.1
        ));
    }
    if (have.0 as u64) < plan.conns {
        bail!(
            "n1's table holds {} connections after {ROUNDS} rounds, not {} (see `vxmesh stats` drops)",
            have.0,
            plan.conns
        );
    }
    Ok(have)
}

/// The connections n1's table holds now: (entries, of them ESTABLISHED).
pub fn count(run: &Running, node: &str) -> Result<(usize, usize)> {
    let out = run.ctl_ok(node, &["conntrack", "show", "--json"])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).context("conntrack show --json is not JSON")?;
    let conns = v.as_array().context("conntrack show --json: not a list")?;
    let est = conns.iter().filter(|c| c["state"] == "ESTABLISHED").count();
    Ok((conns.len(), est))
}
