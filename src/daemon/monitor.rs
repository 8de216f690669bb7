//! The control side's watch on the running node, for the log: never on the packet path.
//!
//! - Dataplane anomalies, rate-limited: every [`DROPS_EVERY`] a job between two batches copies
//!   the drop counters (as `vxmesh stats` does), and [`DropWatch`] compares them with the last
//!   copy; a drop reason whose counter grew gets one `warn` event (stage, reason, how many, the
//!   rate, the total), and then no other for [`WARN_AGAIN_AFTER`] however fast it keeps
//!   counting. A flood of bad packets costs the log one line per reason per minute.
//! - The store's connection: every [`STORE_EVERY`] the node's store counters are read
//!   (atomics); reconnecting and resynchronising become `info` events (losing the connection is
//!   logged where it happens, `store::watch`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Handle;
use crate::store::watch::StoreStats;

/// How often the drop counters are compared.
pub const DROPS_EVERY: Duration = Duration::from_secs(5);
/// The least time between two warnings for the same drop reason.
pub const WARN_AGAIN_AFTER: Duration = Duration::from_secs(60);
/// How often the store's connection counters are read.
pub const STORE_EVERY: Duration = Duration::from_secs(1);

/// One drop counter: (stage or port, reason).
pub type DropKey = (String, &'static str);

/// A drop reason that started counting, to warn about.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// The stage (or `port NAME` for a port's transmit drops).
    pub stage: String,
    /// The drop reason.
    pub reason: &'static str,
    /// Drops since the last comparison.
    pub count: u64,
    /// Those per second.
    pub rate: f64,
    /// The counter's value.
    pub total: u64,
}

/// The last drop counters and when each reason was last warned about.
#[derive(Debug, Default)]
pub struct DropWatch {
    last: HashMap<DropKey, u64>,
    last_at: Option<Instant>,
    warned: HashMap<DropKey, Instant>,
}

impl DropWatch {
    /// Compare `counters` (taken at `now`) with the last ones: the reasons that grew and were
    /// not warned about in the last [`WARN_AGAIN_AFTER`]. The first call only sets the baseline.
    pub fn observe(&mut self, now: Instant, counters: Vec<(DropKey, u64)>) -> Vec<Anomaly> {
        let mut out = Vec::new();
        let secs = self
            .last_at
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .filter(|s| *s > 0.0);
        let mut next = HashMap::with_capacity(counters.len());
        for (key, total) in counters {
            if let Some(secs) = secs {
                let before = self.last.get(&key).copied().unwrap_or(0);
                let quiet = self
                    .warned
                    .get(&key)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= WARN_AGAIN_AFTER);
                if total > before && quiet {
                    let count = total - before;
                    out.push(Anomaly {
                        stage: key.0.clone(),
                        reason: key.1,
                        count,
                        rate: count as f64 / secs,
                        total,
                    });
                    self.warned.insert(key.clone(), now);
                }
            }
            next.insert(key, total);
        }
        self.last = next;
        self.last_at = Some(now);
        out
    }
}

/// The node's drop counters (every stage's named drops, unnamed drops, ports' transmit drops),
/// from its counters (every worker's added up).
fn drop_counters(s: &vswitch::SwitchStats) -> Vec<(DropKey, u64)> {
    let mut out = Vec::new();
    for st in &s.stages {
        for (reason, v) in &st.drops {
            out.push(((st.name.to_string(), *reason), *v));
        }
        out.push(((st.name.to_string(), "drop_unnamed"), st.drop_unnamed));
    }
    for p in &s.ports {
        out.push((
            (format!("port {}", p.name), "tx_dropped"),
            p.stats.tx_dropped,
        ));
    }
    out
}

/// Run the watch until the node stops (the caller drops this future).
pub(super) async fn run(h: Handle, node: String, store: Option<Arc<StoreStats>>) {
    let mut drops = DropWatch::default();
    let mut tick = tokio::time::interval(STORE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_drops = (DROPS_EVERY.as_secs() / STORE_EVERY.as_secs()).max(1);
    let (mut connected, mut resyncs) = store
        .as_ref()
        .map(|s| {
            (
                s.connected.load(Ordering::Relaxed),
                s.resyncs.load(Ordering::Relaxed),
            )
        })
        .unwrap_or((true, 0));
    for i in 0u64.. {
        tick.tick().await;
        if let Some(s) = &store {
            let now = s.connected.load(Ordering::Relaxed);
            if now && !connected {
                tracing::info!(
                    node,
                    disconnects = s.disconnects.load(Ordering::Relaxed),
                    "store: connected again"
                );
            }
            connected = now;
            let r = s.resyncs.load(Ordering::Relaxed);
            if r > resyncs {
                tracing::info!(
                    node,
                    resyncs = r,
                    "store: resynchronised (read whole again)"
                );
            }
            resyncs = r;
        }
        if i % per_drops != 0 {
            continue;
        }
        let Ok(counters) = h.stats().await.map(|s| drop_counters(&s)) else {
            return;
        };
        for a in drops.observe(Instant::now(), counters) {
            tracing::warn!(
                node,
                stage = %a.stage,
                reason = a.reason,
                count = a.count,
                rate_per_s = format_args!("{:.1}", a.rate),
                total = a.total,
                "dataplane dropping packets (next warning for this reason in a minute at the earliest)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &[(&str, &'static str, u64)]) -> Vec<(DropKey, u64)> {
        v.iter()
            .map(|(s, r, n)| ((s.to_string(), *r), *n))
            .collect()
    }

    #[test]
    fn warns_once_a_minute_per_reason_that_counts() {
        let mut w = DropWatch::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // The baseline: counts from before are not news.
        assert!(
            w.observe(at(0), c(&[("l2-parse", "drop_runt", 7)]))
                .is_empty()
        );
        // Growing: one warning, with the count and the rate.
        let a = w.observe(
            at(5),
            c(&[
                ("l2-parse", "drop_runt", 17),
                ("lb-nat", "drop_table_full", 0),
            ]),
        );
        assert_eq!(
            a,
            [Anomaly {
                stage: "l2-parse".into(),
                reason: "drop_runt",
                count: 10,
                rate: 2.0,
                total: 17
            }]
        );
        // Still growing within the minute: quiet; another reason starting: warned.
        let a = w.observe(
            at(10),
            c(&[
                ("l2-parse", "drop_runt", 1000),
                ("lb-nat", "drop_table_full", 3),
            ]),
        );
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].reason, "drop_table_full");
        for s in (15..65).step_by(5) {
            let a = w.observe(at(s), c(&[("l2-parse", "drop_runt", 1000 + s)]));
            assert!(a.is_empty(), "{s}: {a:?}");
        }
        // A minute after the first warning: again.
        let a = w.observe(at(65), c(&[("l2-parse", "drop_runt", 2000)]));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].count, 2000 - 1060);
        // Not growing: nothing, however long.
        assert!(
            w.observe(at(200), c(&[("l2-parse", "drop_runt", 2000)]))
                .is_empty()
        );
    }
}
