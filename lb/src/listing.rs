//! Listings of the load balancer: the snapshots ([`Balancer::services`], [`Balancer::conns`])
//! and text in the shape of `ipvsadm -Ln` (with `--stats` / `--rate`) and `ipvsadm -Lnc`.
//!
//! Off the packet path: the node's control socket takes these snapshots between batches and
//! turns them into these tables (or into JSON, in the root crate).

use core::fmt::Write;
use std::net::Ipv4Addr;

use vswitch::Time;

use crate::balancer::{Balancer, secs};
use crate::conntrack::F_SNAT;
use crate::sched::SchedulerKind;
use crate::state::TcpState;
use crate::types::{Protocol, Rates, ServiceKey, Stats};

/// One backend in a listing (`ipvsadm -Ln` line `-> addr:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// Address.
    pub addr: Ipv4Addr,
    /// Target port (0: the packet's port).
    pub port: u16,
    /// Forwarding method ("Masq").
    pub forward: &'static str,
    /// Weight.
    pub weight: u32,
    /// Established connections.
    pub active_conns: u32,
    /// Other connections.
    pub inact_conns: u32,
    /// Counters.
    pub stats: Stats,
    /// Rates.
    pub rates: Rates,
}

/// One service in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Selection.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// SNAT address for the routing mesh, if any.
    pub snat: Option<Ipv4Addr>,
    /// Backends, in scheduling order.
    pub backends: Vec<BackendInfo>,
    /// Counters.
    pub stats: Stats,
    /// Rates.
    pub rates: Rates,
}

impl ServiceInfo {
    /// Add the counters of the same service on another balancer: a node's workers each run
    /// their own with the same services, and are listed as one. Backends are matched by
    /// address and port; one `o` has that this one lacks is left out.
    pub fn add(&mut self, o: &ServiceInfo) {
        self.stats.add(&o.stats);
        self.rates.add(&o.rates);
        for b in &mut self.backends {
            if let Some(ob) = o
                .backends
                .iter()
                .find(|x| x.addr == b.addr && x.port == b.port)
            {
                b.active_conns += ob.active_conns;
                b.inact_conns += ob.inact_conns;
                b.stats.add(&ob.stats);
                b.rates.add(&ob.rates);
            }
        }
    }
}

/// The services of several balancers with the same services (a node's workers), as one
/// listing: the first's, with every other's counters added to the service of the same key.
pub fn merge_services(all: Vec<Vec<ServiceInfo>>) -> Vec<ServiceInfo> {
    let mut it = all.into_iter();
    let mut out = it.next().unwrap_or_default();
    for other in it {
        for s in &mut out {
            if let Some(o) = other.iter().find(|o| o.key == s.key) {
                s.add(o);
            }
        }
    }
    out
}

/// One connection in a listing (`ipvsadm -Lnc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Protocol.
    pub proto: Protocol,
    /// Seconds until it expires.
    pub expires_in: u32,
    /// State name (TCP state, or "UDP").
    pub state: &'static str,
    /// Client address and port.
    pub client: (Ipv4Addr, u16),
    /// Virtual address and port.
    pub virtual_: (Ipv4Addr, u16),
    /// Backend address and port.
    pub dest: (Ipv4Addr, u16),
    /// Source the backend sees, when SNAT rewrote it.
    pub snat: Option<(Ipv4Addr, u16)>,
}

impl Balancer {
    /// Services with their backends and counters (`ipvsadm -Ln --stats --rate` data).
    pub fn services(&self) -> Vec<ServiceInfo> {
        let mut out: Vec<ServiceInfo> = self
            .services
            .iter()
            .filter(|s| s.in_use && !s.removed)
            .map(|s| ServiceInfo {
                key: s.cfg.key,
                scheduler: s.sched.kind(),
                snat: s.cfg.snat.map(|n| n.addr),
                backends: s
                    .dests
                    .iter()
                    .map(|&id| {
                        let b = &self.backends[usize::from(id)];
                        BackendInfo {
                            addr: b.cfg.addr,
                            port: b.cfg.port,
                            forward: "Masq",
                            weight: b.cfg.weight,
                            active_conns: b.active,
                            inact_conns: b.inactive,
                            stats: b.stats,
                            rates: b.est.rates,
                        }
                    })
                    .collect(),
                stats: s.stats,
                rates: s.est.rates,
            })
            .collect();
        out.sort_by_key(|s| {
            let k = s.key;
            (k.net.0, u32::from(k.addr), k.port, k.proto.number())
        });
        out
    }

    /// Every tracked connection, closing ones too (`ipvsadm -Lnc` data).
    pub fn conns(&self, now: Time) -> Vec<ConnInfo> {
        self.conns_slice(now, 0, usize::MAX).0
    }

    /// The tracked connections among `slots` slots of the table from slot `from` on, and where
    /// the next slice starts (`None` after the last). A listing of a large table calls this once
    /// per [`CONNS_SLICE_SLOTS`] between batches, so forwarding never waits for the whole table.
    pub fn conns_slice(
        &self,
        now: Time,
        from: usize,
        slots: usize,
    ) -> (Vec<ConnInfo>, Option<usize>) {
        let end = from.saturating_add(slots);
        let next = (end < self.ct.slots()).then_some(end);
        (self.conn_infos(now, from, slots), next)
    }

    fn conn_infos(&self, now: Time, from: usize, slots: usize) -> Vec<ConnInfo> {
        let t = secs(now);
        self.ct
            .iter_slots(from, slots)
            .filter_map(|(_, c)| {
                let proto = Protocol::from_number(c.proto)?;
                let sa = |a: u32, p: u16| (Ipv4Addr::from(a), p);
                Some(ConnInfo {
                    proto,
                    expires_in: c.expires.saturating_sub(t),
                    state: if proto == Protocol::Tcp {
                        TcpState::from_u8(c.state).name()
                    } else {
                        "UDP"
                    },
                    client: sa(c.caddr, c.cport),
                    virtual_: sa(c.vaddr, c.vport),
                    dest: sa(c.daddr, c.dport),
                    snat: (c.flags & F_SNAT != 0).then(|| sa(c.laddr, c.lport)),
                })
            })
            .collect()
    }
}

/// Slots of the connection table one [`Balancer::conns_slice`] reads: about 0.1 ms of the poll
/// thread's time at most, even when every slot is live.
pub const CONNS_SLICE_SLOTS: usize = 4096;

/// ipvsadm's version banner.
pub const IPVS_BANNER: &str = "IP Virtual Server version 1.2.1 (vxmesh)";

/// Which columns an `-Ln` listing shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListMode {
    /// Weight, ActiveConn, InActConn.
    #[default]
    Plain,
    /// Conns, InPkts, OutPkts, InBytes, OutBytes.
    Stats,
    /// CPS, InPPS, OutPPS, InBPS, OutBPS.
    Rate,
}

fn service_name(s: &ServiceInfo) -> String {
    let k = s.key;
    format!("{}  {}:{}", k.proto.name(), k.addr, k.port)
}

/// One `--stats`/`--rate` row: the label left-aligned in 33 columns, then five right-aligned
/// columns of 8.
fn write_counter_row(o: &mut String, label: &str, cols: [&dyn core::fmt::Display; 5]) {
    let [a, b, c, d, e] = cols;
    let _ = writeln!(o, "{label:<33} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}");
}

/// The five counters `mode` shows of `stats`/`rates` (none in plain mode).
fn counter_cols(mode: ListMode, t: &Stats, r: &Rates) -> Option<[u64; 5]> {
    match mode {
        ListMode::Plain => None,
        ListMode::Stats => Some([t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes]),
        ListMode::Rate => Some([r.cps, r.inpps, r.outpps, r.inbps, r.outbps]),
    }
}

/// Format services like `ipvsadm -Ln` (`--stats`, `--rate` with `mode`).
pub fn format_services(services: &[ServiceInfo], mode: ListMode) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{IPVS_BANNER}");
    let header = match mode {
        ListMode::Plain => None,
        ListMode::Stats => Some(["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]),
        ListMode::Rate => Some(["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]),
    };
    match header {
        None => {
            let _ = writeln!(o, "Prot LocalAddress:Port Scheduler Flags");
            let _ = writeln!(
                o,
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
            );
        }
        Some([a, b, c, d, e]) => {
            write_counter_row(&mut o, "Prot LocalAddress:Port", [&a, &b, &c, &d, &e]);
            let _ = writeln!(o, "  -> RemoteAddress:Port");
        }
    }
    for s in services {
        let name = service_name(s);
        match counter_cols(mode, &s.stats, &s.rates) {
            None => {
                let snat = s.snat.map(|a| format!(" snat {a}")).unwrap_or_default();
                let _ = writeln!(o, "{name} {}{snat}", s.scheduler);
            }
            Some([a, b, c, d, e]) => write_counter_row(&mut o, &name, [&a, &b, &c, &d, &e]),
        }
        for b in &s.backends {
            let label = format!("  -> {}:{}", b.addr, b.port);
            match counter_cols(mode, &b.stats, &b.rates) {
                None => {
                    let _ = writeln!(
                        o,
                        "{label:<33} {:<7} {:<6} {:<10} {:<10}",
                        b.forward, b.weight, b.active_conns, b.inact_conns
                    );
                }
                Some([v, w, x, y, z]) => {
                    write_counter_row(&mut o, &label, [&v, &w, &x, &y, &z]);
                }
            }
        }
    }
    o
}

/// Format connections like `ipvsadm -Lnc` (a `snat` column is added for routing-mesh entries).
pub fn format_conns(conns: &[ConnInfo]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "IPVS connection entries");
    let _ = writeln!(
        o,
        "pro expire state       source             virtual            destination"
    );
    for c in conns {
        let sa = |(a, p): (std::net::Ipv4Addr, u16)| format!("{a}:{p}");
        let _ = write!(
            o,
            "{:<3} {:02}:{:02}  {:<11} {:<18} {:<18} {}",
            c.proto.name(),
            c.expires_in / 60,
            c.expires_in % 60,
            c.state,
            sa(c.client),
            sa(c.virtual_),
            sa(c.dest)
        );
        if let Some(s) = c.snat {
            let _ = write!(o, " snat {}", sa(s));
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::NetId;

    fn svc() -> ServiceInfo {
        ServiceInfo {
            key: ServiceKey {
                net: NetId(0),
                proto: Protocol::Tcp,
                addr: Ipv4Addr::new(10, 0, 9, 100),
                port: 80,
            },
            scheduler: SchedulerKind::Rr,
            snat: None,
            backends: vec![BackendInfo {
                addr: Ipv4Addr::new(10, 0, 9, 12),
                port: 80,
                forward: "Masq",
                weight: 1,
                active_conns: 2,
                inact_conns: 3,
                stats: Stats {
                    conns: 5,
                    inpkts: 50,
                    outpkts: 40,
                    inbytes: 5000,
                    outbytes: 4000,
                },
                rates: Rates::default(),
            }],
            stats: Stats {
                conns: 5,
                inpkts: 50,
                outpkts: 40,
                inbytes: 5000,
                outbytes: 4000,
            },
            rates: Rates {
                cps: 1,
                inpps: 2,
                outpps: 3,
                inbps: 4,
                outbps: 5,
            },
        }
    }

    /// Two workers' listings of the same service: counters and connections added up per
    /// service and per backend; a service only the second lists is left out.
    #[test]
    fn merged_services_add_up() {
        let mut other = svc();
        other.backends[0].active_conns = 1;
        let mut only_there = svc();
        only_there.key.port = 81;
        let merged = merge_services(vec![vec![svc()], vec![other, only_there]]);
        assert_eq!(merged.len(), 1);
        let (s, b) = (&merged[0], &merged[0].backends[0]);
        assert_eq!(
            (s.stats.conns, s.stats.inbytes, s.rates.outbps),
            (10, 10_000, 10)
        );
        assert_eq!((b.active_conns, b.inact_conns, b.stats.outpkts), (3, 6, 80));
        assert_eq!(merge_services(Vec::new()), Vec::new());
    }

    #[test]
    fn plain_listing_matches_ipvsadm_layout() {
        let text = format_services(&[svc()], ListMode::Plain);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[3], "TCP  10.0.9.100:80 rr");
        assert_eq!(
            lines[4],
            "  -> 10.0.9.12:80                 Masq    1      2          3         "
        );
    }

    #[test]
    fn stats_and_rate_columns() {
        let text = format_services(&[svc()], ListMode::Stats);
        assert!(
            text.lines().any(|l| l.starts_with("TCP  10.0.9.100:80")
                && l.split_whitespace()
                    .skip(2)
                    .eq(["5", "50", "40", "5000", "4000"])),
            "{text}"
        );
        let text = format_services(&[svc()], ListMode::Rate);
        assert!(
            text.lines().any(|l| l.starts_with("TCP  10.0.9.100:80")
                && l.split_whitespace().skip(2).eq(["1", "2", "3", "4", "5"])),
            "{text}"
        );
    }

    #[test]
    fn conn_listing_line() {
        let c = ConnInfo {
            proto: Protocol::Tcp,
            expires_in: 899,
            state: "ESTABLISHED",
            client: (Ipv4Addr::new(10, 0, 9, 11), 40000),
            virtual_: (Ipv4Addr::new(10, 0, 9, 100), 80),
            dest: (Ipv4Addr::new(10, 0, 9, 12), 80),
            snat: None,
        };
        let text = format_conns(&[c]);
        assert_eq!(
            text.lines().nth(2),
            Some("TCP 14:59  ESTABLISHED 10.0.9.11:40000    10.0.9.100:80      10.0.9.12:80")
        );
    }
}
