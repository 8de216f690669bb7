//! Anti-replay for an inbound SA: 64-bit sequence numbers as (epoch, seq) and a 1024-packet
//! sliding window (RFC 4303 section 3.4.3; the bitmap kept as a ring of words, RFC 6479).
//!
//! Where it sits: `esp-decrypt` asks [`ReplayWindow::check`] before it decrypts (cheap refusals
//! first) and calls [`ReplayWindow::accept`] only after the ICV verified, so a forged packet
//! never moves the window.
//!
//! A sender numbers its packets (epoch, seq): the epoch is the high half (the IV's first 4
//! bytes), seq the low half (the ESP sequence number, also the IV's last 4 bytes). The receiver
//! keeps the epoch it is in and the window of seqs around the highest seen in it:
//! - no state yet: anything is new (the first verified packet sets the epoch);
//! - epoch below the state's: [`ReplayError::TooOld`];
//! - epoch above: new (a sender that restarted, or wrapped its 32-bit seq); once verified the
//!   state moves to that epoch with a fresh window, so stragglers of the old epoch are then
//!   `TooOld`;
//! - same epoch: seq above the highest: new; at or more than [`WINDOW`] below it: `TooOld`;
//!   inside the window: new once, [`ReplayError::Replay`] after.
//!
//! Sequence number 0 is never sent (a sender's seq runs 1..=u32::MAX) and is refused as
//! `TooOld`.

/// Packets of the window: a seq this far or farther below the highest is too old.
pub const WINDOW: u32 = 1024;

/// Bits per bitmap word.
const WORD_BITS: u32 = 64;
/// Words in the ring: one more than the window needs, so the word of the highest seq may be
/// partly ahead of it (RFC 6479's trick: advancing clears whole words).
const WORDS: usize = (WINDOW / WORD_BITS) as usize + 1;

/// Why a packet's sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Seen before, inside the window.
    #[error("replayed sequence number")]
    Replay,
    /// Left of the window, from an earlier epoch, or seq 0.
    #[error("sequence number too old")]
    TooOld,
}

/// The receive state of one inbound SA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Whether a verified packet was seen (the state below is meaningful).
    started: bool,
    /// The epoch of the highest verified packet.
    epoch: u32,
    /// The highest verified seq in `epoch`.
    top: u32,
    /// Bit `s % 64` of word `(s / 64) % WORDS` is set when seq `s` was seen.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    /// A window that has seen nothing.
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            started: false,
            epoch: 0,
            top: 0,
            bits: [0; WORDS],
        }
    }

    /// The (epoch, highest seq) of the highest verified packet, or `None` before the first.
    pub fn position(&self) -> Option<(u32, u32)> {
        self.started.then_some((self.epoch, self.top))
    }

    #[inline]
    fn slot(seq: u32) -> (usize, u64) {
        (
            (seq / WORD_BITS) as usize % WORDS,
            1u64 << (seq % WORD_BITS),
        )
    }

    /// Whether (epoch, seq) may be new: checked before decrypting; changes nothing.
    #[inline]
    pub fn check(&self, epoch: u32, seq: u32) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::TooOld);
        }
        if !self.started || epoch > self.epoch || (epoch == self.epoch && seq > self.top) {
            return Ok(());
        }
        if epoch < self.epoch || self.top - seq >= WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (w, bit) = Self::slot(seq);
        if self.bits[w] & bit != 0 {
            Err(ReplayError::Replay)
        } else {
            Ok(())
        }
    }

    /// Records a verified packet (one [`ReplayWindow::check`] let through): moves the window.
    #[inline]
    pub fn accept(&mut self, epoch: u32, seq: u32) {
        if !self.started || epoch > self.epoch {
            self.started = true;
            self.epoch = epoch;
            self.top = seq;
            self.bits = [0; WORDS];
        } else if epoch < self.epoch {
            // Not let through by check; nothing to record.
            return;
        } else if seq > self.top {
            // Clear the words between the old top's word and the new one's (all of them after
            // a jump of a whole ring or more).
            let old = self.top / WORD_BITS;
            let new = seq / WORD_BITS;
            let clear = (new - old).min(WORDS as u32);
            for i in 1..=clear {
                self.bits[(old + i) as usize % WORDS] = 0;
            }
            self.top = seq;
        }
        let (w, bit) = Self::slot(seq);
        self.bits[w] |= bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// check, then accept when allowed (as `esp-decrypt` does with a valid ICV).
    fn offer(w: &mut ReplayWindow, epoch: u32, seq: u32) -> Result<(), ReplayError> {
        w.check(epoch, seq)?;
        w.accept(epoch, seq);
        Ok(())
    }

    #[test]
    fn in_order_then_duplicates_then_old() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.position(), None);
        for s in 1..=2000 {
            assert_eq!(offer(&mut w, 7, s), Ok(()), "{s}");
        }
        assert_eq!(w.position(), Some((7, 2000)));
        assert_eq!(offer(&mut w, 7, 2000), Err(ReplayError::Replay));
        assert_eq!(
            offer(&mut w, 7, 2000 - WINDOW + 1),
            Err(ReplayError::Replay)
        );
        assert_eq!(offer(&mut w, 7, 2000 - WINDOW), Err(ReplayError::TooOld));
        assert_eq!(offer(&mut w, 7, 1), Err(ReplayError::TooOld));
        assert_eq!(offer(&mut w, 6, 5000), Err(ReplayError::TooOld));
        assert_eq!(offer(&mut w, 7, 0), Err(ReplayError::TooOld));
    }

    #[test]
    fn first_packet_sets_the_epoch_and_a_later_epoch_starts_fresh() {
        let mut w = ReplayWindow::new();
        assert_eq!(offer(&mut w, 100, 50), Ok(()));
        // below the first seq but inside the window: still new
        assert_eq!(offer(&mut w, 100, 10), Ok(()));
        assert_eq!(offer(&mut w, 100, 10), Err(ReplayError::Replay));
        // the sender restarted with a greater epoch, seq from 1 again
        assert_eq!(offer(&mut w, 101, 1), Ok(()));
        assert_eq!(w.position(), Some((101, 1)));
        assert_eq!(offer(&mut w, 100, 51), Err(ReplayError::TooOld));
        assert_eq!(offer(&mut w, 101, 1), Err(ReplayError::Replay));
        assert_eq!(offer(&mut w, 101, 50), Ok(()));
    }

    #[test]
    fn a_forged_packet_that_only_passed_check_moves_nothing() {
        let mut w = ReplayWindow::new();
        offer(&mut w, 5, 10).unwrap();
        // check alone (the ICV then fails): the window does not move
        assert_eq!(w.check(9, 1), Ok(()));
        assert_eq!(w.check(5, u32::MAX), Ok(()));
        assert_eq!(w.position(), Some((5, 10)));
        assert_eq!(offer(&mut w, 5, 9), Ok(()));
    }

    #[test]
    fn jumps_clear_the_bits_they_pass() {
        let mut w = ReplayWindow::new();
        for s in 1..=64 * WORDS as u32 {
            offer(&mut w, 1, s).unwrap();
        }
        // jump by exactly one ring: every old bit is cleared, the ones inside the window new
        let top = 64 * WORDS as u32;
        offer(&mut w, 1, top + 64 * WORDS as u32).unwrap();
        let new_top = 2 * top;
        assert_eq!(offer(&mut w, 1, new_top - WINDOW + 1), Ok(()));
        assert_eq!(offer(&mut w, 1, new_top - WINDOW), Err(ReplayError::TooOld));
        // up to the top of u32
        offer(&mut w, 1, u32::MAX).unwrap();
        assert_eq!(offer(&mut w, 1, u32::MAX), Err(ReplayError::Replay));
        assert_eq!(offer(&mut w, 1, u32::MAX - 1), Ok(()));
        assert_eq!(offer(&mut w, 2, 1), Ok(()));
    }

    proptest! {
        /// Against a model (a set of every (epoch, seq) accepted, the highest one, the
        /// window rule), for random orders, duplicates and epochs.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u32..4, 0u32..3000, any::<bool>()), 1..600)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            let mut state: Option<(u32, u32)> = None;
            for (epoch, seq, verified) in ops {
                let want = if seq == 0 {
                    Err(ReplayError::TooOld)
                } else {
                    match state {
                        None => Ok(()),
                        Some((e, _)) if epoch > e => Ok(()),
                        Some((e, _)) if epoch < e => Err(ReplayError::TooOld),
                        Some((_, top)) if seq > top => Ok(()),
                        Some((_, top)) if top - seq >= WINDOW => Err(ReplayError::TooOld),
                        Some(_) if seen.contains(&(epoch, seq)) => Err(ReplayError::Replay),
                        Some(_) => Ok(()),
                    }
                };
                prop_assert_eq!(w.check(epoch, seq), want, "({}, {}) state {:?}", epoch, seq, state);
                if want.is_ok() && verified {
                    w.accept(epoch, seq);
                    seen.insert((epoch, seq));
                    state = match state {
                        Some((e, top)) if e == epoch => Some((e, top.max(seq))),
                        _ => Some((epoch, seq)),
                    };
                }
                prop_assert_eq!(w.position(), state);
            }
        }

        /// Any permutation of a run of distinct seqs no wider than the window is accepted
        /// whole, and then every one of them is a replay.
        #[test]
        fn reordering_inside_the_window_loses_nothing(seqs in Just((1..=WINDOW).collect::<Vec<u32>>()).prop_shuffle()) {
            let mut w = ReplayWindow::new();
            // start at the highest so that every other one is below it
            offer(&mut w, 3, WINDOW).unwrap();
            for &s in &seqs {
                if s != WINDOW {
                    prop_assert_eq!(offer(&mut w, 3, s), Ok(()));
                }
            }
            for &s in &seqs {
                prop_assert_eq!(offer(&mut w, 3, s), Err(ReplayError::Replay));
            }
        }
    }
}
