//! Gap filling for the tail reader on PostgreSQL with the Kafka log, where outbox ids are
//! drawn in one order and committed in another: a row can become visible after the reader's
//! cursor has passed its id (its transaction drew the id first and committed last). The
//! embedded log serializes appends (ids visible in order) and SQLite has one writer, so there
//! the reader needs none of this.
//!
//! **How.** The reader keeps a *window* of ids below its cursor that may still fill: from a
//! `floor` (every row at or below it was delivered, or never will be visible) up to the
//! cursor, with the ids of the tails' topics it already delivered there (`seen`). After each
//! read it notes the read's extent together with the transaction-id horizon taken after it
//! (`dialect::xid_horizon`: a mark `(upto, xmax)`), looks for rows of the tails' topics in the
//! window that it has not seen (ids only, from the `(topic, id)` index; a payload is fetched
//! once, when its row is found), and raises the floor past every mark whose `xmax` the
//! horizon's `xmin` has passed.
//!
//! **Why that is exact.** A row below `upto` that was invisible at the read was drawn before
//! the row at `upto` (one sequence, handed out in order), which committed before the read; its
//! transaction had its id before it drew (`dialect::notify_holding_xid`, in the append), so
//! that id is below the `xmax` of any snapshot taken after the read. Once a later snapshot's
//! `xmin` passes that `xmax`, every such transaction has ended: the look that follows (in a
//! later snapshot still) sees each of those rows that committed, and the rest (rolled back,
//! or rows of other topics, which are never tracked at all) can no longer appear. Holes are
//! dropped by that, not by a timer, and a late row is delivered once: it joins `seen` when
//! found, and the floor only passes ids that were looked at after they were final.
//!
//! **Costs.** A look scans the tails' topics' ids in the window, which holds the rows of the
//! last read or two while transactions are short, so the reader stays O(new rows); an idle
//! reader (floor at the cursor) makes no extra query. A long-running writing transaction
//! anywhere in the database holds the horizon back and the window grows; it is capped at
//! `telemetry.tail.gap_window` ids: past the cap the oldest marks are given up without
//! waiting (the floor rises anyway), and a row committed later below the floor is not
//! delivered to tails (as before gap filling; it is stored all the same), with a warning.

use std::collections::{BTreeSet, VecDeque};

/// The ids below the reader's cursor that may still fill, and what was delivered there.
#[derive(Debug)]
pub struct Window {
    /// Every row at or below it was delivered, or can no longer become visible.
    floor: i64,
    /// Ids above `floor` of rows already delivered.
    seen: BTreeSet<i64>,
    /// `(upto, xmax)` per read, oldest first: ids up to `upto` are final once a horizon's
    /// `xmin` reaches `xmax`.
    marks: VecDeque<(i64, i64)>,
    /// Most ids kept in `seen`.
    cap: usize,
}

/// What `mark` did beyond noting the read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Overflow {
    /// Marks given up before their horizon passed (the window was full).
    pub given_up: usize,
    /// The floor after it (rows committed later at or below it are not delivered).
    pub floor: i64,
}

impl Window {
    /// A window starting at `cursor` (nothing below it is followed).
    pub fn new(cursor: i64, cap: usize) -> Self {
        Self {
            floor: cursor,
            seen: BTreeSet::new(),
            marks: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// The ids to look at: `(floor, upto]`, or `None` when everything up to `upto` is final.
    pub fn open(&self, upto: i64) -> Option<(i64, i64)> {
        (upto > self.floor).then_some((self.floor, upto))
    }

    /// A row was delivered.
    pub fn saw(&mut self, id: i64) {
        if id > self.floor {
            self.seen.insert(id);
        }
    }

    /// Of `ids` (visible now, within the window), those not delivered yet, in id order.
    pub fn unseen(&self, ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
        let mut out: Vec<i64> = ids
            .into_iter()
            .filter(|id| *id > self.floor && !self.seen.contains(id))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Notes a read that reached `upto`, with the `xmax` of a horizon taken after it. Keeps
    /// the window within its cap by giving up its oldest marks; says so when it did.
    pub fn mark(&mut self, upto: i64, xmax: i64) -> Option<Overflow> {
        // A read that went no further adds nothing: the earlier mark, with the lower `xmax`,
        // already covers those ids.
        let last = self.marks.back().map_or(self.floor, |m| m.0);
        if upto > last {
            self.marks.push_back((upto, xmax));
        }
        let mut given_up = 0;
        while self.seen.len() > self.cap {
            let Some((upto, _)) = self.marks.pop_front() else {
                break;
            };
            self.raise(upto);
            given_up += 1;
        }
        (given_up > 0).then_some(Overflow {
            given_up,
            floor: self.floor,
        })
    }

    /// Raises the floor past every mark whose `xmax` the horizon's `xmin` has passed; call it
    /// after a look taken after that horizon.
    pub fn settle(&mut self, xmin: i64) {
        while let Some(&(upto, xmax)) = self.marks.front() {
            if xmax > xmin {
                break;
            }
            self.marks.pop_front();
            self.raise(upto);
        }
    }

    fn raise(&mut self, floor: i64) {
        if floor > self.floor {
            self.floor = floor;
            self.seen = self.seen.split_off(&(floor + 1));
        }
    }

    /// Ids kept (delivered rows above the floor).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn floor(&self) -> i64 {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hole_is_looked_at_until_the_horizon_passes_the_read_that_found_it() {
        let mut w = Window::new(10, 100);
        // A read delivered 11 and 13; 12 is invisible (in flight, another topic, rolled back).
        w.saw(11);
        w.saw(13);
        assert_eq!(w.mark(13, 500), None);
        assert_eq!(w.open(13), Some((10, 13)));
        assert_eq!(w.unseen([11, 13]), Vec::<i64>::new());
        // Transaction 499 is still running: nothing settles.
        w.settle(499);
        assert_eq!(w.floor(), 10);
        // 12 commits: found once, then seen.
        assert_eq!(w.unseen([11, 12, 13]), vec![12]);
        w.saw(12);
        assert_eq!(w.unseen([11, 12, 13]), Vec::<i64>::new());
        // A later read reached 20 under a later horizon; the first mark passes.
        w.saw(20);
        w.mark(20, 600);
        w.settle(500);
        assert_eq!((w.floor(), w.len()), (13, 1));
        assert_eq!(w.open(20), Some((13, 20)));
        w.settle(600);
        assert_eq!((w.floor(), w.len(), w.open(20)), (20, 0, None));
    }

    #[test]
    fn a_read_that_went_no_further_keeps_the_earlier_mark() {
        let mut w = Window::new(0, 100);
        w.saw(5);
        w.mark(5, 100);
        w.mark(5, 200);
        // The mark of 100 covers 5: a horizon past 100 settles it.
        w.settle(100);
        assert_eq!(w.open(5), None);
    }

    #[test]
    fn a_full_window_gives_up_its_oldest_marks() {
        let mut w = Window::new(0, 2);
        for id in 1..=2 {
            w.saw(id);
        }
        assert_eq!(w.mark(2, 100), None);
        w.saw(3);
        let o = w.mark(3, 101).expect("over the cap");
        assert_eq!(
            o,
            Overflow {
                given_up: 1,
                floor: 2
            }
        );
        assert_eq!(w.len(), 1);
        // Below the floor nothing is reported any more.
        assert_eq!(w.unseen([1, 2, 3]), Vec::<i64>::new());
    }
}
