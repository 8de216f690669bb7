//! Stages and their counters: the graph nodes of the packet path.
//!
//! A [`Stage`] runs over a whole batch and sets a disposition on each packet it decides on
//! (packets another stage already decided on are left alone). The pipeline, not the stage, counts
//! the outcomes: before a stage runs it knows which packets are still undecided (the "in" count),
//! and after it runs it classifies each of them as continued, output, flooded, sent to a remote
//! VTEP, or dropped under one of the stage's named reasons. So for every stage, packets in = the
//! sum of its outcomes, by construction, and every drop has a name. Events that are not
//! dispositions (a MAC move, a full table refusing a learned entry) are the stage's own counters,
//! reported through [`Stage::counters`].

use std::any::Any;

use crate::batch::{Batch, MAX_BATCH};
use crate::env::Env;
use crate::packet::{DropReason, Next, Packet};
use crate::trace::TraceRecord;

/// Declare a stage's drop reasons once, as VPP's `foreach_*_error` lists do: each reason is a
/// variant with its doc and its counter name, and the macro generates the `#[repr(u8)]` enum,
/// its `NAMES` (what [`Stage::drop_names`] returns, in variant order) and the conversion to
/// [`DropReason`](crate::DropReason) (the variant's index), so a stage's names and indexes
/// cannot drift apart. A counter name is any constant `&'static str` expression.
///
/// ```
/// vswitch::drop_table! {
///     /// Why `toy` drops a frame.
///     pub enum ToyDrop {
///         /// An odd length.
///         Odd => "drop_odd",
///         /// A zero first byte.
///         Zero => "drop_zero",
///     }
/// }
/// assert_eq!(ToyDrop::NAMES, ["drop_odd", "drop_zero"]);
/// assert_eq!(vswitch::DropReason::from(ToyDrop::Zero), vswitch::DropReason(1));
/// assert_eq!(ToyDrop::Zero.name(), "drop_zero");
/// ```
#[macro_export]
macro_rules! drop_table {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident => $counter:expr
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
        }

        impl $name {
            /// Counter names, by reason: what the stage's `drop_names` returns.
            pub const NAMES: &'static [&'static str] = &[$($counter),+];

            /// The reason's counter name.
            #[inline]
            pub const fn name(self) -> &'static str {
                Self::NAMES[self as usize]
            }

            /// The reason as the pipeline's [`DropReason`]($crate::DropReason).
            #[inline]
            pub const fn reason(self) -> $crate::DropReason {
                $crate::DropReason(self as u8)
            }
        }

        impl ::core::convert::From<$name> for $crate::DropReason {
            #[inline]
            fn from(r: $name) -> $crate::DropReason {
                r.reason()
            }
        }
    };
}

/// A processing step of the packet path.
///
/// A stage is `Any` so that the switch can hand the control plane the concrete stage behind a
/// typed [`StageHandle`](crate::switch::StageHandle) (see [`Switch::stage_mut`](crate::Switch::stage_mut)).
pub trait Stage: Any + Send {
    /// Short kebab-case graph name (`l2-learn`, `vxlan-decap`).
    fn name(&self) -> &'static str;
    /// Names of the drop reasons: [`DropReason(i)`](crate::DropReason) is `drop_names()[i]`
    /// (declare them with [`drop_table!`](crate::drop_table) and return its `NAMES`).
    fn drop_names(&self) -> &'static [&'static str] {
        &[]
    }
    /// Decide on the undecided packets of the batch (those whose `next` is `Continue`).
    fn process(&mut self, batch: &mut Batch, env: &mut Env);
    /// For the trace: what the stage used to decide on `pkt` (header fields, the table entry).
    fn describe(&self, _pkt: &Packet, _env: &Env) -> String {
        String::new()
    }
    /// Event counters that are not dispositions, as (name, value).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// What a packet it leaves undecided is afterwards, if the stage changes its layer
    /// (encapsulates, decapsulates, encrypts, decrypts); only the trace's snapshots read it.
    fn layer_after(&self) -> Option<crate::trace::Layer> {
        None
    }
}

/// Outcome counts of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    /// The stage's name.
    pub name: &'static str,
    /// Packets the stage was given (undecided when it ran).
    pub rx: u64,
    /// Left undecided, for the next stage.
    pub cont: u64,
    /// Sent to a port.
    pub output: u64,
    /// Flooded.
    pub flood: u64,
    /// Sent to a remote VTEP.
    pub remote: u64,
    /// Drops per reason, as (name, count), in the stage's order.
    pub drops: Vec<(&'static str, u64)>,
    /// Drops under a reason the stage did not name (a stage bug; kept so nothing goes uncounted).
    pub drop_unnamed: u64,
    /// The stage's event counters.
    pub events: Vec<(&'static str, u64)>,
}

impl StageStats {
    /// Counters for a stage, all zero.
    pub fn for_stage(stage: &dyn Stage) -> StageStats {
        StageStats {
            name: stage.name(),
            drops: stage.drop_names().iter().map(|n| (*n, 0)).collect(),
            ..StageStats::default()
        }
    }

    /// Sum of all drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|d| d.1).sum::<u64>() + self.drop_unnamed
    }

    /// Sum of all outcomes: equals `rx` (tests assert this).
    pub fn outcomes(&self) -> u64 {
        self.cont + self.output + self.flood + self.remote + self.dropped()
    }

    /// The count of one drop reason by name (0 if the stage has no such reason).
    pub fn drop_count(&self, name: &str) -> u64 {
        self.drops.iter().find(|d| d.0 == name).map_or(0, |d| d.1)
    }

    /// Count one drop under `reason` (for steps that count outside [`run_stage`], as the
    /// switch's output step does).
    #[inline]
    pub fn count_drop(&mut self, reason: impl Into<DropReason>) {
        match self.drops.get_mut(usize::from(reason.into().0)) {
            Some(d) => d.1 += 1,
            None => self.drop_unnamed += 1,
        }
    }

    #[inline]
    fn tally(&mut self, next: Next) -> bool {
        match next {
            Next::Continue => {
                self.cont += 1;
                return true;
            }
            Next::Output(_) => self.output += 1,
            Next::Flood => self.flood += 1,
            Next::Remote(_) => self.remote += 1,
            Next::Drop(r) => self.count_drop(r),
        }
        false
    }
}

/// Bit mask of the first `n` packets of a batch.
#[inline]
pub fn mask_of(n: usize) -> u64 {
    debug_assert!(n <= MAX_BATCH);
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Run `stage` over the packets of `batch` in the `live` mask (the undecided ones), count the
/// outcomes into `stats`, record traced packets, and return the mask of packets still undecided.
pub fn run_stage(
    stage: &mut dyn Stage,
    stats: &mut StageStats,
    batch: &mut Batch,
    env: &mut Env,
    live: u64,
) -> u64 {
    if live == 0 {
        return 0;
    }
    stats.rx += u64::from(live.count_ones());
    stage.process(batch, env);
    let mut still = 0u64;
    let mut m = live;
    while m != 0 {
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        if stats.tally(batch[i].meta.next) {
            still |= 1 << i;
        }
    }
    if batch.traced {
        record_trace(&*stage, batch, env, live);
    }
    still
}

#[cold]
fn record_trace(stage: &dyn Stage, batch: &Batch, env: &mut Env, live: u64) {
    let mut m = live;
    while m != 0 {
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        let pkt = &batch[i];
        if pkt.meta.trace == 0 {
            continue;
        }
        let next = pkt.meta.next;
        let drop = match next {
            Next::Drop(r) => Some(
                stage
                    .drop_names()
                    .get(r.0 as usize)
                    .copied()
                    .unwrap_or("drop_unnamed"),
            ),
            _ => None,
        };
        let detail = stage.describe(pkt, env);
        let becomes = match next {
            Next::Drop(_) => None,
            _ => stage.layer_after(),
        };
        let data = env.tracer.snapshot(pkt, becomes, env.local_vtep);
        env.tracer.record(TraceRecord {
            id: pkt.meta.trace,
            stage: stage.name(),
            next,
            drop,
            detail,
            data,
            time_ns: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdb::FdbConfig;
    use crate::packet::PortId;

    crate::drop_table! {
        /// Why `toy` drops a frame.
        enum ToyDrop {
            /// An odd length.
            Odd => "drop_odd",
        }
    }

    /// Drops odd-length frames, outputs frames starting with 1, continues the rest.
    struct Toy;
    impl Stage for Toy {
        fn name(&self) -> &'static str {
            "toy"
        }
        fn drop_names(&self) -> &'static [&'static str] {
            ToyDrop::NAMES
        }
        fn process(&mut self, batch: &mut Batch, _env: &mut Env) {
            for (_, p) in batch.active_mut() {
                p.meta.next = if p.len() % 2 == 1 {
                    Next::Drop(ToyDrop::Odd.into())
                } else if p.data()[0] == 1 {
                    Next::Output(PortId(1))
                } else {
                    Next::Continue
                };
            }
        }
    }

    #[test]
    fn outcomes_are_conserved_and_decided_packets_are_not_offered_again() {
        let mut env = Env::new(FdbConfig::default());
        let mut b = Batch::new(8);
        for f in [&[1u8, 0][..], &[0, 0], &[0, 0, 0], &[1, 0, 0, 0]] {
            b.push_frame(f).unwrap();
        }
        let mut toy = Toy;
        let mut st = StageStats::for_stage(&toy);
        let all = mask_of(b.len());
        let live = run_stage(&mut toy, &mut st, &mut b, &mut env, all);
        assert_eq!(live, 0b0010);
        assert_eq!((st.rx, st.cont, st.output, st.dropped()), (4, 1, 2, 1));
        assert_eq!(st.outcomes(), st.rx);
        assert_eq!(st.drop_count(ToyDrop::Odd.name()), 1);
        // a second stage only sees the one undecided packet
        let mut st2 = StageStats::for_stage(&toy);
        run_stage(&mut toy, &mut st2, &mut b, &mut env, live);
        assert_eq!(st2.rx, 1);
        assert_eq!(st2.outcomes(), st2.rx);
    }

    #[test]
    fn masks() {
        assert_eq!(mask_of(0), 0);
        assert_eq!(mask_of(3), 0b111);
        assert_eq!(mask_of(64), u64::MAX);
    }
}
