//! The control side of the load balancer: services, backends and weights (`ipvsadm -A/-a/-e/-d`),
//! timeouts (`--set`), the expiry sweep and the `--rate` estimator. Off the packet path: these
//! run between batches on the worker that owns the [`Balancer`] (the node's control commands,
//! its housekeeping, and `lb-nat`'s bounded sweep after each batch), so a change is never seen
//! half-made by a packet. Adding or removing a backend never moves an existing connection.

use std::net::Ipv4Addr;

use vswitch::Time;

use crate::balancer::{Backend, Balancer, Dests, Service, place, secs};
use crate::sched::Scheduler;
use crate::state::Timeouts;
use crate::types::{BackendConfig, BalancerError, Rates, ServiceConfig, ServiceKey, Stats};

/// IPVS estimator smoothing: `avg += (rate - avg) / 4`.
const RATE_EWMA_SHIFT: u32 = 2;
/// Nanoseconds per second.
const NANOS: u128 = 1_000_000_000;

/// A service's or backend's `--rate` estimator.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Estimator {
    pub(crate) last: Stats,
    pub(crate) rates: Rates,
}

impl Estimator {
    /// Fold the counters' change over `elapsed_ns` into the smoothed rates.
    pub(crate) fn update(&mut self, now: &Stats, elapsed_ns: u64) {
        let per_sec = |cur: u64, last: u64| {
            (u128::from(cur.saturating_sub(last)) * NANOS / u128::from(elapsed_ns)) as u64
        };
        let ewma = |avg: &mut u64, r: u64| {
            let a = *avg as i128;
            *avg = (a + ((r as i128 - a) >> RATE_EWMA_SHIFT)).max(0) as u64;
        };
        ewma(&mut self.rates.cps, per_sec(now.conns, self.last.conns));
        ewma(&mut self.rates.inpps, per_sec(now.inpkts, self.last.inpkts));
        ewma(
            &mut self.rates.outpps,
            per_sec(now.outpkts, self.last.outpkts),
        );
        ewma(
            &mut self.rates.inbps,
            per_sec(now.inbytes, self.last.inbytes),
        );
        ewma(
            &mut self.rates.outbps,
            per_sec(now.outbytes, self.last.outbytes),
        );
        self.last = *now;
    }
}

impl Balancer {
    /// Current timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Add a virtual service.
    pub fn add_service(&mut self, cfg: ServiceConfig) -> Result<(), BalancerError> {
        if self.by_key.contains_key(&cfg.key) {
            return Err(BalancerError::ServiceExists(cfg.key));
        }
        let svc = Service {
            sched: Scheduler::new(cfg.scheduler),
            cfg: cfg.clone(),
            dests: Vec::new(),
            stats: Stats::default(),
            est: Estimator::default(),
            conns: 0,
            removed: false,
            in_use: true,
        };
        let slot = place(&mut self.services, svc, |s| !s.in_use, "services")?;
        self.by_key.insert(cfg.key, slot as u16);
        self.vips.insert((cfg.key.net, u32::from(cfg.key.addr)));
        Ok(())
    }

    /// Remove a service and its backends; its connections expire on their next packet.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), BalancerError> {
        let s = self
            .by_key
            .remove(key)
            .ok_or(BalancerError::NoService(*key))?;
        let ids = core::mem::take(&mut self.services[usize::from(s)].dests);
        for id in ids {
            self.retire_backend(id);
        }
        let svc = &mut self.services[usize::from(s)];
        svc.removed = true;
        if svc.conns == 0 {
            svc.in_use = false;
        }
        self.vips = self
            .by_key
            .keys()
            .map(|k| (k.net, u32::from(k.addr)))
            .collect();
        Ok(())
    }

    /// Change a service's configuration in place (scheduler, backend network, source NAT): its
    /// backends and connections stay, new connections follow the new configuration. Returns
    /// the configuration it had, so that a change can be taken back exactly. The key cannot
    /// change: a service under another key is another service.
    pub fn replace_service(&mut self, cfg: ServiceConfig) -> Result<ServiceConfig, BalancerError> {
        let s = self.service_slot(&cfg.key)?;
        let svc = &mut self.services[s];
        let scheduler_changed = svc.cfg.scheduler != cfg.scheduler;
        let old = std::mem::replace(&mut svc.cfg, cfg);
        if scheduler_changed {
            svc.sched = Scheduler::new(svc.cfg.scheduler);
            self.resched(s, None);
        }
        Ok(old)
    }

    fn service_slot(&self, key: &ServiceKey) -> Result<usize, BalancerError> {
        self.by_key
            .get(key)
            .map(|&s| usize::from(s))
            .ok_or(BalancerError::NoService(*key))
    }

    fn find_dest(&self, s: usize, addr: Ipv4Addr, port: u16) -> Option<usize> {
        self.services[s].dests.iter().position(|&id| {
            let b = &self.backends[usize::from(id)].cfg;
            b.addr == addr && b.port == port
        })
    }

    /// The service's slot and the backend's position in its `dests`.
    fn backend_slot(
        &self,
        key: &ServiceKey,
        addr: Ipv4Addr,
        port: u16,
    ) -> Result<(usize, usize), BalancerError> {
        let s = self.service_slot(key)?;
        let pos = self
            .find_dest(s, addr, port)
            .ok_or(BalancerError::NoBackend(addr, port))?;
        Ok((s, pos))
    }

    fn resched(&mut self, s: usize, removed: Option<usize>) {
        let Service { sched, dests, .. } = &mut self.services[s];
        sched.dests_changed(
            &Dests {
                ids: dests,
                arena: &self.backends,
            },
            removed,
        );
    }

    /// Add a backend at the end of a service's list; existing connections never move.
    pub fn add_backend(&mut self, key: &ServiceKey, b: BackendConfig) -> Result<(), BalancerError> {
        let s = self.service_slot(key)?;
        if self.find_dest(s, b.addr, b.port).is_some() {
            return Err(BalancerError::BackendExists(b.addr, b.port));
        }
        let be = Backend {
            cfg: b,
            last_weight: b.weight,
            active: 0,
            inactive: 0,
            stats: Stats::default(),
            est: Estimator::default(),
            removed: false,
            in_use: true,
        };
        let id = place(&mut self.backends, be, |b| !b.in_use, "backends")?;
        self.services[s].dests.push(id as u16);
        self.resched(s, None);
        Ok(())
    }

    /// Change a backend's weight (0 drains: no new connections, existing ones continue).
    pub fn set_weight(
        &mut self,
        key: &ServiceKey,
        addr: Ipv4Addr,
        port: u16,
        weight: u32,
    ) -> Result<(), BalancerError> {
        let (s, pos) = self.backend_slot(key, addr, port)?;
        let b = &mut self.backends[usize::from(self.services[s].dests[pos])];
        b.cfg.weight = weight;
        if weight > 0 {
            b.last_weight = weight;
        }
        self.resched(s, None);
        Ok(())
    }

    /// Remove a backend; its connections expire (IPVS `expire_nodest_conn=1`).
    pub fn remove_backend(
        &mut self,
        key: &ServiceKey,
        addr: Ipv4Addr,
        port: u16,
    ) -> Result<(), BalancerError> {
        let (s, pos) = self.backend_slot(key, addr, port)?;
        let id = self.services[s].dests.remove(pos);
        self.resched(s, Some(pos));
        self.retire_backend(id);
        Ok(())
    }

    fn retire_backend(&mut self, id: u16) {
        let b = &mut self.backends[usize::from(id)];
        b.removed = true;
        if b.active + b.inactive == 0 {
            b.in_use = false;
        }
    }

    /// Expire up to `budget` table slots' worth of connections (call between batches so
    /// idle entries go away without a timer per entry). Returns how many were released.
    pub fn expire(&mut self, now: Time, budget: usize) -> usize {
        let cap = self.ct.capacity() as u32;
        let t = secs(now);
        let mut released = 0;
        for _ in 0..budget.min(cap as usize) {
            let idx = self.sweep;
            self.sweep = if idx + 1 >= cap { 0 } else { idx + 1 };
            if !self.ct.is_live(idx) {
                continue;
            }
            let c = self.ct.get(idx);
            if t >= c.expires || self.backends[usize::from(c.backend)].removed {
                self.release(idx);
                released += 1;
            }
        }
        released
    }

    /// Update the `--rate` estimators (call about every 2 s, as IPVS's estimator runs).
    pub fn estimate(&mut self, now: Time) {
        let Some(last) = self.last_estimate.replace(now) else {
            return;
        };
        let elapsed = now.0.saturating_sub(last.0);
        if elapsed == 0 {
            return;
        }
        for s in self.services.iter_mut().filter(|s| s.in_use) {
            s.est.update(&s.stats, elapsed);
        }
        for b in self.backends.iter_mut().filter(|b| b.in_use) {
            b.est.update(&b.stats, elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use vswitch::Time;

    use crate::balancer::Balancer;
    use crate::balancer::tests::*;
    use crate::packet::tests::verify;
    use crate::sched::SchedulerKind;
    use crate::state::Timeouts;
    use crate::types::{BalancerConfig, LbDrop, Protocol, ServiceConfig, ServiceKey, Verdict};
    use vswitch::wire::{ipv4, tcp};

    #[test]
    fn configurable_timeouts_and_udp() {
        // Timeouts come with the balancer's settings (`ipvsadm --set` at start).
        let mut timeouts = Timeouts::default();
        timeouts.set(0, 0, 42);
        let mut lb = Balancer::new(BalancerConfig {
            timeouts,
            ..BalancerConfig::default()
        });
        let ukey = ServiceKey {
            net: NET,
            proto: Protocol::Udp,
            addr: VIP,
            port: 53,
        };
        lb.add_service(ServiceConfig {
            key: ukey,
            scheduler: SchedulerKind::Rr,
            backend_net: NET,
            snat: None,
        })
        .unwrap();
        lb.add_backend(&ukey, backend(1, 1)).unwrap();
        let mut f = frame((CLIENT, 999), (VIP, 53), ipv4::PROTO_UDP, 0, CMAC, VMAC);
        assert!(matches!(
            lb.process(&mut f, ETH, NET, Time::from_secs(0)),
            Verdict::ToBackend { .. }
        ));
        assert!(verify(&f[ETH..]));
        assert_eq!(
            (
                lb.conns(Time::from_secs(0))[0].state,
                lb.conns(Time::from_secs(0))[0].expires_in
            ),
            ("UDP", 42)
        );
        let udp = lb.services().into_iter().find(|s| s.key == ukey).unwrap();
        assert_eq!(udp.backends[0].inact_conns, 1);
    }

    #[test]
    fn a_service_replaced_in_place_keeps_its_connections() {
        let mut lb = lb_with(2, SchedulerKind::Rr, 64);
        let now = Time::from_secs(1);
        let mut f = client_pkt(100, tcp::FLAG_SYN);
        lb.process(&mut f, ETH, NET, now);
        let to = tuple_of(&f).dst;
        let old = lb.services()[0].clone();
        let mut cfg = ServiceConfig {
            key: key(),
            scheduler: SchedulerKind::Wrr,
            backend_net: NET,
            snat: None,
        };
        let was = lb.replace_service(cfg.clone()).unwrap();
        assert_eq!(was.scheduler, SchedulerKind::Rr);
        // The connection goes on to the same backend, through the same service.
        let mut f = client_pkt(100, tcp::FLAG_ACK);
        assert!(matches!(
            lb.process(&mut f, ETH, NET, now),
            Verdict::ToBackend { .. }
        ));
        assert_eq!(tuple_of(&f).dst, to);
        assert_eq!(lb.conns(now).len(), 1);
        // And back: exactly as it was.
        cfg.scheduler = SchedulerKind::Rr;
        lb.replace_service(was).unwrap();
        let back = lb.services()[0].clone();
        assert_eq!(
            (back.key, back.backends.len()),
            (old.key, old.backends.len())
        );
        let other = ServiceKey { port: 81, ..key() };
        assert!(
            lb.replace_service(ServiceConfig { key: other, ..cfg })
                .is_err()
        );
    }

    #[test]
    fn drain_remove_and_add() {
        let mut lb = lb_with(2, SchedulerKind::Rr, 64);
        let now = Time::from_secs(1);
        let mut dsts = Vec::new();
        for p in 0..4 {
            let mut f = client_pkt(100 + p, tcp::FLAG_SYN);
            lb.process(&mut f, ETH, NET, now);
            dsts.push(tuple_of(&f).dst);
        }
        // Adding a backend never moves existing connections.
        lb.add_backend(&key(), backend(2, 1)).unwrap();
        for p in 0..4u16 {
            let mut f = client_pkt(100 + p, tcp::FLAG_ACK);
            lb.process(&mut f, ETH, NET, now);
            assert_eq!(tuple_of(&f).dst, dsts[usize::from(p)]);
        }
        // Weight 0 drains: existing continue, new ones avoid it.
        let b0 = backend(0, 1);
        lb.set_weight(&key(), b0.addr, b0.port, 0).unwrap();
        let mut f = client_pkt(100, tcp::FLAG_ACK);
        lb.process(&mut f, ETH, NET, now);
        assert_eq!(Ipv4Addr::from(tuple_of(&f).dst), b0.addr);
        for p in 0..10 {
            let mut f = client_pkt(200 + p, tcp::FLAG_SYN);
            lb.process(&mut f, ETH, NET, now);
            assert_ne!(Ipv4Addr::from(tuple_of(&f).dst), b0.addr);
        }
        // Removal: its connections expire; a further SYN is rescheduled elsewhere.
        lb.remove_backend(&key(), b0.addr, b0.port).unwrap();
        assert_eq!(
            lb.process(&mut client_pkt(100, tcp::FLAG_ACK), ETH, NET, now),
            Verdict::Drop(LbDrop::TcpNotSyn)
        );
        let mut f = client_pkt(102, tcp::FLAG_SYN);
        lb.process(&mut f, ETH, NET, now);
        assert_ne!(Ipv4Addr::from(tuple_of(&f).dst), b0.addr);
        lb.expire(now, 64);
        assert!(lb.conns(now).iter().all(|c| c.dest.0 != b0.addr));
        assert!(lb.services()[0].backends.iter().all(|b| b.addr != b0.addr));
        // Everything drained: no backend.
        for i in [1, 2] {
            let b = backend(i, 1);
            lb.set_weight(&key(), b.addr, b.port, 0).unwrap();
        }
        assert_eq!(
            lb.process(&mut client_pkt(999, tcp::FLAG_SYN), ETH, NET, now),
            Verdict::Drop(LbDrop::NoBackend)
        );
    }
}
