//! TODO deliveries acked together: one `basic.ack` with `multiple` for every delivery of the
//! consume channel up to a tag, instead of a frame (and, on a quorum queue, a settle command
//! in the queue's log) per task.
//!
//! A handler hands its delivery over once the outcome was confirmed ([`Acks::ready`]); the
//! session's acker ([`Acks::next`]) acks what is ready. A multiple ack up to tag T settles,
//! on the broker, every unacked delivery of the channel with a tag up to T, so T is only
//! ever a tag below which every delivery of the channel is known here and settled: ready
//! (its outcome confirmed), or returned (nacked) already. Tags are the channel's (a new
//! session opens a new channel: a new [`Acks`], tags from 1), sequential over the three
//! work queues' consumers; a tag not seen yet (still in another consumer's stream) is a
//! gap that nothing is acked across. A delivery returned individually is taken out of the
//! way only once its nack was written ([`Acks::returned`]): the broker then no longer holds
//! it unacked, and a later multiple ack cannot reach it.
//!
//! A ready delivery above a gap or an unsettled one (a longer task, a delivery waiting for a
//! slot) is not held for it longer than [`HOLD`]: it is then acked on its own, as before. So
//! an ack is at most [`HOLD`] later than its confirm allows, never sooner.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

/// The longest a ready delivery waits for the deliveries below it before it is acked on its
/// own.
pub(crate) const HOLD: Duration = Duration::from_millis(50);

/// A delivery tag of the consume channel.
pub(crate) type Tag = u64;

/// The deliveries of one consume channel between their arrival and their ack; `T` is what a
/// ready delivery carries (its acker, and whom to tell).
#[derive(Debug)]
pub(crate) struct Acks<T> {
    /// Every tag from 1 to this one was seen.
    seen: Tag,
    /// Tags seen above a gap (`seen + 1` not seen yet).
    early: BTreeSet<Tag>,
    /// Seen, neither ready nor returned.
    open: BTreeSet<Tag>,
    /// Confirmed, not acked yet, with when they became ready.
    ready: BTreeMap<Tag, (Instant, T)>,
}

/// What to send now: at most one multiple ack, and single acks.
#[derive(Debug)]
pub(crate) struct Due<T> {
    /// The ack with `multiple` up to the last of these (acked all at once), or a plain ack
    /// when there is only one.
    pub together: Vec<(Tag, T)>,
    /// Each acked on its own: ready longer than [`HOLD`] above a delivery not settled.
    pub alone: Vec<(Tag, T)>,
}

impl<T> Default for Acks<T> {
    fn default() -> Self {
        Acks {
            seen: 0,
            early: BTreeSet::new(),
            open: BTreeSet::new(),
            ready: BTreeMap::new(),
        }
    }
}

impl<T> Acks<T> {
    /// A delivery arrived.
    pub(crate) fn received(&mut self, tag: Tag) {
        self.open.insert(tag);
        if tag == self.seen + 1 {
            self.seen = tag;
            while self.early.remove(&(self.seen + 1)) {
                self.seen += 1;
            }
        } else if tag > self.seen {
            self.early.insert(tag);
        }
    }

    /// A delivery's outcome was confirmed: it may be acked, alone or with others.
    pub(crate) fn ready(&mut self, tag: Tag, now: Instant, item: T) {
        self.open.remove(&tag);
        self.ready.insert(tag, (now, item));
    }

    /// A delivery was returned (its nack written) or can no longer be settled here: it no
    /// longer stands in the way of a multiple ack.
    pub(crate) fn returned(&mut self, tag: Tag) {
        self.open.remove(&tag);
    }

    /// Whether nothing is ready.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.ready.is_empty()
    }

    /// The highest tag a multiple ack may reach: every tag up to it seen, none open.
    fn floor(&self) -> Tag {
        match self.open.first() {
            Some(&lowest) => self.seen.min(lowest - 1),
            None => self.seen,
        }
    }

    /// What to ack at `now`: every ready delivery up to the floor together, those above it
    /// ready for [`HOLD`] or longer alone. They are no longer ready: the caller acks them.
    pub(crate) fn due(&mut self, now: Instant) -> Due<T> {
        let floor = self.floor();
        let above = self.ready.split_off(&(floor + 1));
        let together = std::mem::replace(&mut self.ready, above)
            .into_iter()
            .map(|(tag, (_, item))| (tag, item))
            .collect();
        let mut alone = Vec::new();
        let expired: Vec<Tag> = self
            .ready
            .iter()
            .filter(|(_, (since, _))| now.duration_since(*since) >= HOLD)
            .map(|(&tag, _)| tag)
            .collect();
        for tag in expired {
            let (_, item) = self.ready.remove(&tag).expect("a ready tag");
            alone.push((tag, item));
        }
        Due { together, alone }
    }

    /// When the next delivery held above the floor is due alone, if any is.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.ready.values().map(|(since, _)| *since + HOLD).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags<T>(v: &[(Tag, T)]) -> Vec<Tag> {
        v.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn contiguous_ready_deliveries_go_together() {
        let now = Instant::now();
        let mut acks = Acks::default();
        for tag in 1..=5 {
            acks.received(tag);
        }
        for tag in [3, 1, 2] {
            acks.ready(tag, now, ());
        }
        let due = acks.due(now);
        assert_eq!(tags(&due.together), [1, 2, 3]);
        assert!(due.alone.is_empty());
        // 4 is open: 5 waits for it, then goes together with it.
        acks.ready(5, now, ());
        let due = acks.due(now);
        assert!(due.together.is_empty() && due.alone.is_empty());
        acks.ready(4, now, ());
        assert_eq!(tags(&acks.due(now).together), [4, 5]);
        assert!(acks.is_idle());
    }

    #[test]
    fn nothing_is_acked_across_a_tag_not_seen_yet() {
        let now = Instant::now();
        let mut acks = Acks::default();
        // Tag 2 is still in another consumer's stream.
        acks.received(1);
        acks.received(3);
        acks.ready(1, now, ());
        acks.ready(3, now, ());
        assert_eq!(tags(&acks.due(now).together), [1]);
        assert!(acks.due(now).together.is_empty());
        acks.received(2);
        acks.ready(2, now, ());
        assert_eq!(tags(&acks.due(now).together), [2, 3]);
    }

    #[test]
    fn an_open_delivery_holds_the_ones_above_for_hold_at_most() {
        let start = Instant::now();
        let mut acks = Acks::default();
        for tag in 1..=3 {
            acks.received(tag);
        }
        acks.ready(2, start, ());
        acks.ready(3, start + HOLD / 2, ());
        assert!(acks.due(start).together.is_empty());
        assert_eq!(acks.next_due(), Some(start + HOLD));
        let due = acks.due(start + HOLD);
        assert!(due.together.is_empty());
        assert_eq!(tags(&due.alone), [2]);
        assert_eq!(tags(&acks.due(start + HOLD * 2).alone), [3]);
        // 1 still open: an ack up to 3 would settle it.
        acks.ready(1, start, ());
        assert_eq!(tags(&acks.due(start + HOLD * 2).together), [1]);
    }

    #[test]
    fn a_returned_delivery_no_longer_holds_the_others() {
        let now = Instant::now();
        let mut acks = Acks::default();
        for tag in 1..=4 {
            acks.received(tag);
        }
        acks.ready(1, now, ());
        acks.ready(3, now, ());
        acks.ready(4, now, ());
        assert_eq!(tags(&acks.due(now).together), [1]);
        // 2 nacked: the multiple ack up to 4 no longer reaches it on the broker.
        acks.returned(2);
        assert_eq!(tags(&acks.due(now).together), [3, 4]);
        assert!(acks.is_idle());
        assert_eq!(acks.next_due(), None);
    }

    #[test]
    fn tags_seen_out_of_order_fill_the_gap() {
        let mut acks = Acks::<()>::default();
        for tag in [1, 4, 3, 6] {
            acks.received(tag);
        }
        assert_eq!(acks.seen, 1);
        acks.received(2);
        assert_eq!(acks.seen, 4);
        acks.received(5);
        assert_eq!(acks.seen, 6);
        for tag in 1..=6 {
            acks.returned(tag);
        }
        assert_eq!(acks.floor(), 6);
    }
}
