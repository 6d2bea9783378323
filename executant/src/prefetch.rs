//! The TODO prefetch, sized to the work as it goes.
//!
//! A small prefetch starves short tasks: each one waits for a round trip through the broker
//! before the next arrives. A large one hoards long tasks: an executant holds tasks that
//! another, idle one could run, and a held task may wait for its turn longer than its
//! delivery lives. So the prefetch follows the rate at which deliveries are settled here:
//! enough to hold about [`AHEAD`] of work, from `--concurrency` (nothing finishes in a
//! window: long tasks) up to [`MAX_PREFETCH`] (thousands of tasks a second). Unless
//! `--prefetch` fixes it. A window that settled eight times the prefetch ends at once
//! ([`Sizer::starved`]): a project of short tasks leaves the floor within milliseconds of
//! its first results, not a window later.
//!
//! RabbitMQ applies a consumer's prefetch when the consumer starts, so a new size takes new
//! consumers (`lib.rs`, `Consumers::start`): started first, then the old ones cancelled; the
//! deliveries these had received still arrive on their streams and are handled like any
//! other (none is dropped, none acked before its outcome). The size also bounds how many
//! deliveries are handled at once (containers are capped at `--concurrency` below that);
//! beyond it they wait here, highest priority first.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// The largest prefetch chosen when `--prefetch` is not given: two worker lanes' batches.
pub const MAX_PREFETCH: u16 = 512;

/// How much work the prefetch aims to hold: the deliveries settled here in this long.
pub const AHEAD: Duration = Duration::from_millis(250);

/// How often the rate is measured and the prefetch reconsidered.
pub(crate) const WINDOW: Duration = Duration::from_millis(250);

/// Chooses the prefetch from the deliveries settled in each [`WINDOW`].
#[derive(Debug)]
pub(crate) struct Sizer {
    floor: u16,
    ceiling: u16,
    current: u16,
    settled: u64,
    since: Instant,
}

impl Sizer {
    /// Starts at the smallest prefetch: nothing is known of the work yet.
    pub(crate) fn new(config: &Config) -> Sizer {
        let (floor, ceiling) = match config.prefetch {
            Some(fixed) => (fixed, fixed),
            None => (config.concurrency, MAX_PREFETCH.max(config.concurrency)),
        };
        Sizer {
            floor,
            ceiling,
            current: floor,
            settled: 0,
            since: Instant::now(),
        }
    }

    /// The prefetch in force.
    pub(crate) fn current(&self) -> u16 {
        self.current
    }

    /// Starts a new window at `now`, forgetting what was settled since the last one.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.settled = 0;
        self.since = now;
    }

    /// Counts a delivery settled (acked or returned).
    pub(crate) fn settled(&mut self) {
        self.settled += 1;
    }

    /// Whether the window may end before [`WINDOW`]: it settled eight times the prefetch
    /// in force already, so its end could only answer with the ceiling (the rate wants at
    /// least `settled` ahead); short tasks starved by the floor need not wait for it.
    pub(crate) fn starved(&self) -> bool {
        self.current < self.ceiling && self.settled >= u64::from(self.current) * 8
    }

    /// At the end of a window: the new prefetch, when it should change. It grows when the
    /// rate wants twice as much or more, at least fourfold (the rate a prefetch allows is
    /// bounded by the prefetch: small steps would take many windows to reach the work's),
    /// and straight to the ceiling when it wants eight times as much or more (short tasks
    /// starved by the floor: the measured rate is only what the small prefetch let through;
    /// tasks that turn out to want less are brought down at the next window by the rule
    /// below, so the overshoot lasts one window); it shrinks only to an eighth or less (a window slowed by a resize or a slow task is
    /// not a change of work; idle, or long tasks, is).
    /// A [`Sizer::starved`] window ends early.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<u16> {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < WINDOW && !self.starved() {
            return None;
        }
        let rate = self.settled as f64 / elapsed.as_secs_f64().max(1e-3);
        self.settled = 0;
        self.since = now;
        let wanted = wanted(rate, self.floor, self.ceiling);
        let next = if wanted >= self.current.saturating_mul(8) {
            self.ceiling
        } else if wanted >= self.current.saturating_mul(2) {
            wanted.max(self.current.saturating_mul(4)).min(self.ceiling)
        } else if u32::from(wanted) * 8 <= u32::from(self.current) {
            wanted
        } else {
            return None;
        };
        if next == self.current {
            return None;
        }
        self.current = next;
        Some(next)
    }
}

/// The prefetch holding [`AHEAD`] of work at `rate` deliveries a second: a power of two,
/// within `floor..=ceiling`.
pub(crate) fn wanted(rate: f64, floor: u16, ceiling: u16) -> u16 {
    let ahead = (rate * AHEAD.as_secs_f64())
        .ceil()
        .clamp(1.0, f64::from(ceiling));
    (ahead as u16)
        .checked_next_power_of_two()
        .unwrap_or(ceiling)
        .clamp(floor, ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_follows_the_rate_within_its_bounds() {
        // Long tasks (nothing settled in a window) keep the floor.
        assert_eq!(wanted(0.0, 2, 512), 2);
        assert_eq!(wanted(3.0, 2, 512), 2);
        // 1,000 a second hold 250 in a quarter of a second: 256.
        assert_eq!(wanted(1_000.0, 2, 512), 256);
        assert_eq!(wanted(100_000.0, 2, 512), 512);
        // A fixed --prefetch.
        assert_eq!(wanted(100_000.0, 64, 64), 64);
        assert_eq!(wanted(0.0, 64, 64), 64);
    }

    #[test]
    fn a_starved_prefetch_leaves_the_floor_before_the_window_ends() {
        let mut config = Config::new("amqp://x");
        config.concurrency = 2;
        let mut sizer = Sizer::new(&config);
        let start = Instant::now();
        sizer.restart(start);
        // Fifteen settled in 10 ms: not yet eight times the prefetch, the window goes on.
        for _ in 0..15 {
            sizer.settled();
        }
        assert!(!sizer.starved());
        assert_eq!(sizer.tick(start + Duration::from_millis(10)), None);
        // The sixteenth: whatever the rest of the window brings, the ceiling is the answer.
        sizer.settled();
        assert!(sizer.starved());
        assert_eq!(sizer.tick(start + Duration::from_millis(12)), Some(512));
        // At the ceiling nothing ends a window early.
        for _ in 0..10_000 {
            sizer.settled();
        }
        assert!(!sizer.starved());
        assert_eq!(sizer.tick(start + Duration::from_millis(20)), None);
        // Even settled all at once (elapsed nothing), the rate is finite.
        let mut sizer = Sizer::new(&config);
        sizer.restart(start);
        for _ in 0..16 {
            sizer.settled();
        }
        assert_eq!(sizer.tick(start), Some(512));
    }

    #[test]
    fn small_moves_keep_the_consumer() {
        let mut config = Config::new("amqp://x");
        config.concurrency = 2;
        let mut sizer = Sizer::new(&config);
        assert_eq!(sizer.current(), 2);
        let mut now = Instant::now();
        let mut window = |sizer: &mut Sizer, settled: u64| {
            for _ in 0..settled {
                sizer.settled();
            }
            now += WINDOW;
            sizer.tick(now)
        };
        // 4 a second hold one in a quarter of a second: the floor stays.
        assert_eq!(window(&mut sizer, 1), None);
        // 16 a second: 4 wanted, at least four times as many taken.
        assert_eq!(window(&mut sizer, 4), Some(8));
        // 124 a second: 32 wanted, four times 8: 32.
        assert_eq!(window(&mut sizer, 31), Some(32));
        // 1,000 a second: 256 wanted, eight times 32: the ceiling.
        assert_eq!(window(&mut sizer, 250), Some(512));
        // 800 a second: 256 wanted; 400 a second (a slow window): kept.
        assert_eq!(window(&mut sizer, 200), None);
        assert_eq!(window(&mut sizer, 100), None);
        // 250 a second: 64 wanted, an eighth: shrinks.
        assert_eq!(window(&mut sizer, 62), Some(64));
        // Idle: back to the floor.
        assert_eq!(window(&mut sizer, 0), Some(2));
        assert_eq!(window(&mut sizer, 0), None);
    }

    #[test]
    fn a_starved_floor_goes_straight_to_the_ceiling() {
        let mut config = Config::new("amqp://x");
        config.concurrency = 2;
        let mut sizer = Sizer::new(&config);
        let mut now = Instant::now();
        // Short tasks through a prefetch of 2: 128 a second, 32 wanted, 16 times the floor.
        for _ in 0..32 {
            sizer.settled();
        }
        now += WINDOW;
        assert_eq!(sizer.tick(now), Some(512));
        // They wanted less after all (16 a window, 64 a second): one window later, 16.
        for _ in 0..16 {
            sizer.settled();
        }
        now += WINDOW;
        assert_eq!(sizer.tick(now), Some(16));
    }
}
