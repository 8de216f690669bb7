//! The load balancer of one worker: services, backends and connection tracking in one
//! [`Balancer`], owned by the `lb-nat` stage ([`crate::stage::LbStage`]).
//!
//! As Katran separates its control plane from its forwarding path, the operations are split
//! by who calls them, over this one set of tables (the worker owns them; there is no lock):
//!
//! - [`crate::control`]: services, backends, weights, timeouts, expiry and the rate
//!   estimator, called between batches (the control plane, the daemon's housekeeping, and the
//!   stage's bounded expiry sweep after each batch);
//! - [`crate::data`]: the per-packet path, [`Balancer::prepare`], [`Balancer::lookup_prepared`]
//!   and [`Balancer::process_prepared`]: look a packet up in connection tracking (either
//!   direction); on a hit translate it (DNAT client -> backend, or un-NAT backend -> client,
//!   plus SNAT for routing-mesh services) and advance the TCP state; on a miss for a service,
//!   schedule a backend, track the new connection and translate; otherwise let it pass;
//! - [`crate::listing`]: the `ipvsadm -Ln` / `-Lnc` snapshots ([`Balancer::services`],
//!   [`Balancer::conns`]).
//!
//! This file holds the tables themselves and the bookkeeping both sides share (releasing a
//! connection, slot allocation).

use std::collections::{HashMap, HashSet};

use vswitch::{NetId, Time};

use crate::conntrack::{ConnTable, F_INACTIVE};
use crate::control::Estimator;
use crate::sched::{DestSet, Scheduler};
use crate::state::Timeouts;
use crate::types::{
    BackendConfig, BalancerConfig, BalancerError, LbCounters, ServiceConfig, ServiceKey, Stats,
};

/// A backend in the arena (services name theirs by slot).
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub(crate) cfg: BackendConfig,
    pub(crate) last_weight: u32,
    pub(crate) active: u32,
    pub(crate) inactive: u32,
    pub(crate) stats: Stats,
    pub(crate) est: Estimator,
    pub(crate) removed: bool,
    pub(crate) in_use: bool,
}

/// A service in the arena (the key map names it by slot).
#[derive(Clone, Debug)]
pub(crate) struct Service {
    pub(crate) cfg: ServiceConfig,
    pub(crate) sched: Scheduler,
    pub(crate) dests: Vec<u16>,
    pub(crate) stats: Stats,
    pub(crate) est: Estimator,
    pub(crate) conns: u32,
    pub(crate) removed: bool,
    pub(crate) in_use: bool,
}

/// A service's backends as the scheduler sees them.
pub(crate) struct Dests<'a> {
    pub(crate) ids: &'a [u16],
    pub(crate) arena: &'a [Backend],
}

impl DestSet for Dests<'_> {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn weight(&self, i: usize) -> u32 {
        self.arena[usize::from(self.ids[i])].cfg.weight
    }
    fn last_weight(&self, i: usize) -> u32 {
        self.arena[usize::from(self.ids[i])].last_weight
    }
    fn active(&self, i: usize) -> u32 {
        self.arena[usize::from(self.ids[i])].active
    }
    fn inactive(&self, i: usize) -> u32 {
        self.arena[usize::from(self.ids[i])].inactive
    }
    fn addr(&self, i: usize) -> (u32, u16) {
        let b = &self.arena[usize::from(self.ids[i])].cfg;
        (u32::from(b.addr), b.port)
    }
}

/// Services, backends and connection tracking: the whole load balancer of one worker.
pub struct Balancer {
    pub(crate) services: Vec<Service>,
    pub(crate) by_key: HashMap<ServiceKey, u16, foldhash::fast::FixedState>,
    pub(crate) vips: HashSet<(NetId, u32), foldhash::fast::FixedState>,
    pub(crate) backends: Vec<Backend>,
    pub(crate) ct: ConnTable,
    pub(crate) timeouts: Timeouts,
    pub(crate) counters: LbCounters,
    pub(crate) sweep: u32,
    pub(crate) last_estimate: Option<Time>,
}

/// Whole seconds of `now`, as connection expiry times are kept.
#[inline]
pub(crate) fn secs(now: Time) -> u32 {
    now.secs() as u32
}

impl Balancer {
    /// An empty balancer.
    pub fn new(cfg: BalancerConfig) -> Balancer {
        Balancer {
            services: Vec::new(),
            by_key: HashMap::default(),
            vips: HashSet::default(),
            backends: Vec::new(),
            ct: ConnTable::new(cfg.max_conns, cfg.seed),
            timeouts: cfg.timeouts,
            counters: LbCounters::default(),
            sweep: 0,
            last_estimate: None,
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> &LbCounters {
        &self.counters
    }

    /// The connection table (read-only: sizes, memory).
    pub fn conn_table(&self) -> &ConnTable {
        &self.ct
    }

    /// Release a connection: backend and service counts, then the table entry.
    pub(crate) fn release(&mut self, idx: u32) {
        let c = *self.ct.get(idx);
        let b = &mut self.backends[usize::from(c.backend)];
        if c.flags & F_INACTIVE != 0 {
            b.inactive -= 1;
        } else {
            b.active -= 1;
        }
        if b.removed && b.active + b.inactive == 0 {
            b.in_use = false;
        }
        let s = &mut self.services[usize::from(c.service)];
        s.conns -= 1;
        if s.removed && s.conns == 0 {
            s.in_use = false;
        }
        self.ct.remove(idx);
        self.counters.expired += 1;
    }
}

/// Put `item` in the first free slot of `arena` (`free`), or at its end while it holds fewer
/// than `u16::MAX` (slots are named by `u16` ids); its slot.
pub(crate) fn place<T>(
    arena: &mut Vec<T>,
    item: T,
    free: impl Fn(&T) -> bool,
    what: &'static str,
) -> Result<usize, BalancerError> {
    if let Some(i) = arena.iter().position(free) {
        arena[i] = item;
        return Ok(i);
    }
    if arena.len() >= usize::from(u16::MAX) {
        return Err(BalancerError::TooMany(what));
    }
    arena.push(item);
    Ok(arena.len() - 1)
}

/// Fixtures shared by the balancer's tests here, in [`crate::control`] and in [`crate::data`].
#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use vswitch::{Mac, NetId};

    use super::*;
    use crate::packet::tests::build;
    use crate::packet::{self, Flow, Tuple};
    use crate::sched::SchedulerKind;
    use crate::types::Protocol;
    use vswitch::wire::ipv4;

    pub(crate) const NET: NetId = NetId(0);
    pub(crate) const INGRESS: NetId = NetId(1);
    pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 100);
    pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 11);
    pub(crate) const CMAC: Mac = Mac([2, 0x42, 10, 0, 9, 11]);
    pub(crate) const VMAC: Mac = Mac([2, 0x42, 10, 0, 9, 100]);
    pub(crate) const ETH: usize = 14;

    #[test]
    fn slots_are_reused_first_and_bounded_by_their_u16_ids() {
        // `true` marks a slot in use.
        let mut arena = vec![true, false, true];
        assert_eq!(place(&mut arena, true, |&u| !u, "things").unwrap(), 1);
        assert_eq!(place(&mut arena, true, |&u| !u, "things").unwrap(), 3);
        let mut full = vec![true; usize::from(u16::MAX)];
        assert!(matches!(
            place(&mut full, true, |&u| !u, "things"),
            Err(BalancerError::TooMany("things"))
        ));
        full[7] = false;
        assert_eq!(place(&mut full, true, |&u| !u, "things").unwrap(), 7);
    }

    pub(crate) fn backend(i: u8, weight: u32) -> BackendConfig {
        BackendConfig {
            addr: Ipv4Addr::new(10, 0, 9, 20 + i),
            port: 8080,
            weight,
            mac: Mac([2, 0x42, 10, 0, 9, 20 + i]),
        }
    }

    pub(crate) fn key() -> ServiceKey {
        ServiceKey {
            net: NET,
            proto: Protocol::Tcp,
            addr: VIP,
            port: 80,
        }
    }

    pub(crate) fn lb_with(n: u8, sched: SchedulerKind, max: usize) -> Balancer {
        let mut lb = Balancer::new(BalancerConfig {
            max_conns: max,
            ..BalancerConfig::default()
        });
        lb.add_service(ServiceConfig {
            key: key(),
            scheduler: sched,
            backend_net: NET,
            snat: None,
        })
        .unwrap();
        for i in 0..n {
            lb.add_backend(&key(), backend(i, 1)).unwrap();
        }
        lb
    }

    pub(crate) fn frame(
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        proto: u8,
        flags: u8,
        smac: Mac,
        dmac: Mac,
    ) -> Vec<u8> {
        let t = Tuple {
            proto,
            src: src.0.into(),
            dst: dst.0.into(),
            sport: src.1,
            dport: dst.1,
        };
        let mut f = Vec::new();
        f.extend_from_slice(&dmac.0);
        f.extend_from_slice(&smac.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&build(t, flags, b"payload"));
        f
    }

    pub(crate) fn client_pkt(port: u16, flags: u8) -> Vec<u8> {
        frame(
            (CLIENT, port),
            (VIP, 80),
            ipv4::PROTO_TCP,
            flags,
            CMAC,
            VMAC,
        )
    }

    pub(crate) fn tuple_of(f: &[u8]) -> Tuple {
        match packet::parse(&f[ETH..]) {
            Ok(Flow::Transport { tuple, .. }) => tuple,
            other => panic!("not transport: {other:?}"),
        }
    }
}
