//! The deliveries an executant holds but has not started yet, one line per priority
//! (`todo.high`, `todo`, `todo.low`): the next one started is the oldest of the highest
//! priority, unless a delivery has waited half of what it may wait (it then starts first).
//! One that has waited all of it ([`Waiting::take_expired`]) must go back to its queue: it
//! could no longer run its longest time and be acked within the broker's consumer timeout.
//!
//! Generic over what is held, so the order is tested without a broker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tasks::Priority;

/// Deliveries held, not yet started.
pub(crate) struct Waiting<T> {
    lines: [VecDeque<(Instant, T)>; 3],
    /// Past this wait, a delivery starts before any other.
    overdue: Duration,
    /// Past this wait, a delivery may no longer start here.
    limit: Duration,
}

impl<T> Waiting<T> {
    /// Nothing waits; a delivery may wait `limit`, and after half of it starts before
    /// higher priorities.
    pub(crate) fn new(limit: Duration) -> Waiting<T> {
        Waiting {
            lines: Default::default(),
            overdue: limit / 2,
            limit,
        }
    }

    /// Removes the deliveries that have waited `limit` or longer (to be returned).
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<T> {
        let mut expired = Vec::new();
        for line in &mut self.lines {
            while line
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) >= self.limit)
            {
                expired.extend(line.pop_front().map(|(_, item)| item));
            }
        }
        expired
    }

    /// `item` of `priority`, received at `received`, waits its turn.
    pub(crate) fn push(&mut self, priority: Priority, received: Instant, item: T) {
        self.lines[priority.rank()].push_back((received, item));
    }

    /// The next delivery to start, with when it was received: the first overdue one, lowest
    /// priority first (it has waited longest behind the others); else the oldest of the
    /// highest priority.
    pub(crate) fn pop(&mut self, now: Instant) -> Option<(Instant, T)> {
        let overdue = self.lines.iter().rposition(|line| {
            line.front()
                .is_some_and(|(at, _)| now.duration_since(*at) >= self.overdue)
        });
        let line = overdue.or_else(|| self.lines.iter().position(|l| !l.is_empty()))?;
        self.lines[line].pop_front()
    }

    /// How many wait.
    pub(crate) fn len(&self) -> usize {
        self.lines.iter().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tasks::Priority::{High, Low, Normal};

    use super::Waiting;

    #[test]
    fn highest_priority_first_then_oldest() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut w = Waiting::new(Duration::from_secs(200));
        w.push(Low, at(0), "low-1");
        w.push(Normal, at(1), "normal-1");
        w.push(Normal, at(2), "normal-2");
        w.push(High, at(3), "high-1");
        w.push(Low, at(4), "low-2");
        w.push(High, at(5), "high-2");
        assert_eq!(w.len(), 6);
        let order: Vec<_> = std::iter::from_fn(|| w.pop(at(10)).map(|(_, x)| x)).collect();
        assert_eq!(
            order,
            ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]
        );
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn an_overdue_delivery_starts_first() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut w = Waiting::new(Duration::from_secs(120));
        w.push(Normal, at(0), "normal-old");
        w.push(Low, at(10), "low-old");
        w.push(High, at(50), "high");
        // At 65 s the normal delivery is overdue, the low one not yet.
        assert_eq!(w.pop(at(65)).map(|(_, x)| x), Some("normal-old"));
        assert_eq!(w.pop(at(65)).map(|(_, x)| x), Some("high"));
        // Later the low one is overdue too, and starts though a high one came meanwhile.
        w.push(High, at(70), "high-2");
        assert_eq!(w.pop(at(71)), Some((at(10), "low-old")));
        assert_eq!(w.pop(at(71)).map(|(_, x)| x), Some("high-2"));
        assert_eq!(w.pop(at(71)), None);
    }

    #[test]
    fn a_delivery_that_waited_the_limit_is_taken_out() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut w = Waiting::new(Duration::from_secs(120));
        w.push(Low, at(0), "low-old");
        w.push(Normal, at(10), "normal-old");
        w.push(Normal, at(100), "normal-new");
        assert!(w.take_expired(at(119)).is_empty());
        assert_eq!(w.take_expired(at(130)), ["normal-old", "low-old"]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.pop(at(130)).map(|(_, x)| x), Some("normal-new"));
    }
}
