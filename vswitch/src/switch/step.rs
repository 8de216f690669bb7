//! Stepping through the pipeline, one step of a traced packet at a time: the simulator's
//! `--break` (`vxmesh sim`). A hook set on the switch is called after every step that recorded
//! something for a marked packet (its receive, each stage of its port's path, the output step,
//! each stage of a transmit path), with the records of that step and the whole switch to look
//! at, while the next step has not run yet. A hook that blocks (reading a debugger's commands)
//! holds the packet between two stages with every table as that stage left it.
//!
//! Off the packet path: only batches holding a marked packet ever look at the hook, and the
//! tracer marks packets only while a trace is armed.

use super::Switch;
use crate::trace::TraceRecord;

/// What the switch calls after each step of a traced packet: the switch (its tables and
/// counters as the step left them) and the records the step wrote (taken out of the tracer).
pub type StepHook = Box<dyn FnMut(&Switch, Vec<TraceRecord>) + Send>;

impl Switch {
    /// Call `hook` after every step of a traced packet (`None`: stop). Arm the tracer
    /// ([`Tracer::arm`](crate::trace::Tracer::arm)) for the packets to step through.
    pub fn set_step_hook(&mut self, hook: Option<StepHook>) {
        self.step_hook = hook;
    }

    /// Hand the records written since the last call to the hook.
    #[cold]
    pub(super) fn call_step_hook(&mut self) {
        let Some(mut hook) = self.step_hook.take() else {
            return;
        };
        let recs = self.env.tracer.drain();
        if !recs.is_empty() {
            hook(self, recs);
        }
        self.step_hook = Some(hook);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use crate::trace::TraceFilter;
    use crate::{Env, FdbConfig, FdbDest, Mac, MemPort, Network, PortRole, Switch, Time};

    /// Every step of a traced frame reaches the hook in order, with the switch's tables as
    /// that step left them: `l2-learn` has learned the source before `l2-fwd` runs.
    #[test]
    fn the_hook_sees_every_step_in_order_with_the_tables_between_steps() {
        let (a, b) = (Mac([2, 0x42, 10, 0, 0, 1]), Mac([2, 0x42, 10, 0, 0, 2]));
        let mut env = Env::new(FdbConfig::default());
        let net = env.add_network(Network::new("n", 1, 1450));
        let (mut sw, l2) = Switch::with_l2(env);
        let (pa, ha) = MemPort::new();
        let (pb, hb) = MemPort::new();
        let path = l2.local_path(&[]);
        let _ = sw.add_port("a", Box::new(pa), PortRole::Local(net), path.clone());
        let ib = sw.add_port("b", Box::new(pb), PortRole::Local(net), path);
        sw.env.fdb.add_static(net, b, FdbDest::Local(ib)).unwrap();
        // (step, source learned by then, snapshot present) of each record.
        type Seen = Vec<(&'static str, bool, bool)>;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s2 = seen.clone();
        sw.set_step_hook(Some(Box::new(move |sw, recs| {
            let learned = sw.env.fdb.lookup(net, a, Time::from_secs(1)).is_some();
            for r in recs {
                s2.lock()
                    .unwrap()
                    .push((r.stage, learned, r.data.is_some()));
            }
        })));
        sw.env.tracer.set_snapshots(true);
        sw.env.tracer.arm(1, TraceFilter::default());
        ha.inject(&crate::frames::udp(
            a,
            b,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            1,
            2,
            b"x",
        ));
        sw.poll(Time::from_secs(1));
        assert_eq!(hb.take_tx().len(), 1);
        let seen = seen.lock().unwrap().clone();
        let stages: Vec<_> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            stages,
            [
                "rx",
                "l2-parse",
                "l2-learn",
                "arp-proxy",
                "l2-fwd",
                "output"
            ]
        );
        assert!(!seen[1].1, "not learned after l2-parse");
        assert!(seen[2].1, "learned after l2-learn");
        assert!(seen.iter().all(|s| s.2), "every record has its snapshot");
    }
}
