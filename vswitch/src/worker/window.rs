//! The adaptive busy-poll window of the poll loop: how long to keep polling after the last
//! received frame before sleeping in `poll(2)`. A sleeping thread pays a wake-up (tens of
//! microseconds on a VM) for the next frame; a polling one pays a core. So the window follows
//! the traffic, as OVS's PMD load-based sleeping and NAPI's deferred interrupts do: when frames
//! keep coming back within the longest window ([`PollConfig::busy_poll_max`]), the loop polls
//! through the gaps between them (twice the recent gap); when they stop, or come further apart
//! than that, it shrinks back to the shortest ([`PollConfig::busy_poll`]) and sleeps, so an
//! idle node costs no CPU.
//!
//! The recent gap is a decaying maximum of the gaps between arrivals (a round that receives
//! after empty rounds): it rises at once to a longer gap and falls by 1/8 per arrival, so a
//! request and its quick answer (a 30 µs gap, then 2 ms to the next request) keep the longer
//! one. Gaps are counted at most twice the longest window, so after an idle minute a steady
//! flow brings the window back within a few arrivals.
//!
//! [`PollConfig::busy_poll`]: super::PollConfig::busy_poll
//! [`PollConfig::busy_poll_max`]: super::PollConfig::busy_poll_max

/// The window, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    min: u64,
    max: u64,
    /// The decaying maximum of recent gaps.
    gap: u64,
}

impl Window {
    /// Between `min` and `max` nanoseconds (`max` below `min` counts as `min`: a fixed window).
    pub fn new(min: u64, max: u64) -> Window {
        let max = max.max(min);
        Window {
            min,
            max,
            gap: max.saturating_mul(2),
        }
    }

    /// A frame arrived `gap` nanoseconds after the one before, with empty rounds between.
    #[inline]
    pub fn arrival(&mut self, gap: u64) {
        let gap = gap.min(self.max.saturating_mul(2));
        let decayed = self.gap - self.gap / 8;
        self.gap = gap.max(decayed);
    }

    /// How long to keep polling after the last frame.
    #[inline]
    pub fn get(&self) -> u64 {
        let want = self.gap.saturating_mul(2);
        if want > self.max.saturating_mul(2) || self.gap > self.max {
            // The frames come further apart than the longest window: polling through the
            // gap would cost a core for nothing.
            self.min
        } else {
            want.clamp(self.min, self.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;

    #[test]
    fn a_steady_flow_within_the_longest_window_is_polled_through() {
        let mut w = Window::new(200 * US, 5 * MS);
        assert_eq!(w.get(), 200 * US, "starts short: nothing seen yet");
        // A ping every 2 ms, its answer 30 us after each request.
        let mut rounds = 0;
        while w.get() < 2 * MS && rounds < 100 {
            w.arrival(2 * MS);
            w.arrival(30 * US);
            rounds += 1;
        }
        assert!(rounds <= 8, "adapts within a few arrivals ({rounds})");
        assert!(w.get() > 2 * MS && w.get() <= 5 * MS, "{}", w.get());
        for _ in 0..50 {
            w.arrival(2 * MS);
            w.arrival(30 * US);
            assert!(
                w.get() > 2 * MS,
                "the answer's short gap never shrinks it below the flow's"
            );
        }
    }

    #[test]
    fn sparse_traffic_and_idle_sleep_at_once() {
        let mut w = Window::new(200 * US, 5 * MS);
        for _ in 0..20 {
            w.arrival(MS);
        }
        assert!(w.get() >= 2 * MS);
        // Ten seconds of silence, then one frame: back to the shortest window.
        w.arrival(10_000 * MS);
        assert_eq!(w.get(), 200 * US);
        // 100 packets per second: 10 ms apart, more than the longest window.
        for _ in 0..50 {
            w.arrival(10 * MS);
            assert_eq!(w.get(), 200 * US);
        }
        // A steady flow again: the window comes back within a few arrivals.
        let mut n = 0;
        while w.get() == 200 * US && n < 100 {
            w.arrival(MS);
            n += 1;
        }
        assert!(n <= 8, "{n}");
    }

    #[test]
    fn a_fixed_window_stays_fixed() {
        let mut w = Window::new(200 * US, 200 * US);
        for g in [US, MS, 10 * MS, 100 * US] {
            w.arrival(g);
            assert_eq!(w.get(), 200 * US);
        }
        let mut w = Window::new(0, 0);
        w.arrival(US);
        assert_eq!(w.get(), 0);
    }
}
