//! One blob fetch under way at a node: whom it asks, which parts it asked
//! for, the parts it holds ([`Download`]) and who waits here for what.
//!
//! A fetch asks one holder at a time, in the order it was given (the fetch
//! tree of [`super::spread`]): for parts 0 and 1 first (part 0 proves the
//! blob's size), then for up to [`PARTS_IN_FLIGHT`] parts at once, topped
//! up as parts arrive.
//! It stays with a holder while parts keep coming. A holder that sends
//! nothing for a fetch retry, or sends a part that fails verification, is
//! left for the next one, and the parts already held are kept: the download
//! resumes there. A "not here" is asked again once, soon (the holder is
//! alive and likely starting its own fetch), and then the next holder is asked.
//!
//! ```text
//!   holder h:  ask 0, 1 ─► part 0 ─► ask 2..4 ─► part 1 ─► ask 5 ─► ...  ─► complete
//!                  └─ nothing for fetch_retry_ms, or a refused part ─► holder h+1,
//!                     asked for the parts still missing
//! ```
//!
//! Pure state without I/O or clocks: [`super::shared::Shared`] sends what a
//! fetch asks for, serves the parts it holds and caches the finished blob.

use std::collections::BTreeSet;

use mesh_consensus::command::{ModelHash, NodeId};

use super::transfer::{Download, TransferError};

/// Parts one fetch asks its holder for at once, once part 0 proved the
/// size (before, [`super::transfer::EARLY_PARTS_MAX`]).
pub const PARTS_IN_FLIGHT: usize = 4;

/// Most peers one wanted blob is owed to (whole, or part by part, up to
/// [`PARTS_IN_FLIGHT`] parts each); more are told "not here" at once.
pub const WAITERS_MAX: usize = 16;

/// A peer that asked this node for a blob it is still fetching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiter {
    /// Asked for the whole blob (a node speaking round messages before version 3).
    Whole(NodeId),
    /// Asked for one part.
    Part(NodeId, u32),
}

/// Parts to ask one holder for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The holder.
    pub to: NodeId,
    /// The parts.
    pub parts: Vec<u32>,
}

/// What became of a part that arrived.
#[derive(Debug)]
pub enum PartArrival {
    /// Verified and kept: these parts became held (more than one when
    /// part 0 proved the size parts kept aside were checked against).
    Kept {
        /// The parts now held.
        held: Vec<u32>,
        /// Peers owed one of them, or a part the proven size shows is past
        /// the end (answered so).
        waiters: Vec<(NodeId, u32)>,
    },
    /// Already held, or kept aside until part 0 proves the size.
    Ignored,
    /// Failed verification; its sender is left if it was the holder asked.
    Refused(TransferError),
}

/// A blob this node wants.
#[derive(Clone, Debug)]
pub struct Fetch {
    holders: Vec<NodeId>,
    /// Index (cycled) in `holders` of the holder asked now.
    current: usize,
    /// Parts asked of it that have not arrived.
    asked: BTreeSet<u32>,
    /// When to ask again (`None`: at once): the deadline of the asked parts,
    /// or the retry after a "not here".
    due_ms: Option<u64>,
    /// Whether the holder asked now already answered "not here" once.
    answered_empty: bool,
    download: Download,
    waiters: Vec<Waiter>,
}

impl Fetch {
    /// A fetch of `hash` from `holders` (in order, cycled; never empty),
    /// refusing blobs over `limit_bytes`.
    pub fn new(hash: ModelHash, holders: Vec<NodeId>, limit_bytes: u64) -> Self {
        Self {
            holders,
            current: 0,
            asked: BTreeSet::new(),
            due_ms: None,
            answered_empty: false,
            download: Download::new(hash, limit_bytes),
            waiters: Vec::new(),
        }
    }

    /// The parts held so far.
    pub fn download(&self) -> &Download {
        &self.download
    }

    fn holder(&self) -> &NodeId {
        &self.holders[self.current % self.holders.len()]
    }

    fn next_holder(&mut self) {
        self.current = self.current.wrapping_add(1);
        self.asked.clear();
        self.answered_empty = false;
    }

    /// What to ask now: nothing while asked parts may still come; the
    /// missing parts of the next holder once they are overdue.
    pub fn poll(&mut self, now_ms: u64, retry_ms: u64) -> Option<Ask> {
        if let Some(due) = self.due_ms {
            if now_ms < due {
                return None;
            }
            if !self.asked.is_empty() {
                self.next_holder();
            }
        }
        self.ask(now_ms, retry_ms)
    }

    /// Fills the window of parts asked of the current holder.
    pub fn ask(&mut self, now_ms: u64, retry_ms: u64) -> Option<Ask> {
        let room = PARTS_IN_FLIGHT.saturating_sub(self.asked.len());
        let parts: Vec<u32> = self
            .download
            .missing()
            .filter(|p| !self.asked.contains(p))
            .take(room)
            .collect();
        if parts.is_empty() {
            return None;
        }
        self.asked.extend(parts.iter().copied());
        self.due_ms = Some(now_ms.saturating_add(retry_ms));
        Some(Ask {
            to: self.holder().clone(),
            parts,
        })
    }

    /// Part `part` arrived from `from` at `now_ms`, of a blob it says has
    /// `size_bytes`. A kept part gives the holder another `retry_ms` for
    /// the parts still asked.
    pub fn on_part(
        &mut self,
        from: &NodeId,
        (part, size_bytes): (u32, u64),
        encoded: Vec<u8>,
        (now_ms, retry_ms): (u64, u64),
    ) -> PartArrival {
        let proven = self.download.size_bytes().is_some();
        match self.download.accept(part, size_bytes, encoded) {
            Ok(held) if held.is_empty() => {
                self.asked.remove(&part);
                PartArrival::Ignored
            }
            Ok(held) => {
                self.asked.remove(&part);
                self.answered_empty = false;
                self.due_ms = Some(now_ms.saturating_add(retry_ms));
                let download = &self.download;
                let now_known = |p: u32| held.contains(&p) || (!proven && download.is_past_end(p));
                let waiters = take_waiters(&mut self.waiters, now_known);
                PartArrival::Kept { held, waiters }
            }
            Err(err) => {
                if from == self.holder() {
                    self.next_holder();
                    self.due_ms = None;
                }
                PartArrival::Refused(err)
            }
        }
    }

    /// `part` is past the end of the blob, says `from`: not asked again
    /// (part 0 proves the real size, and with it which parts exist). Where
    /// the proven size says otherwise, it counts as "not here".
    pub fn on_past_end(&mut self, from: &NodeId, part: u32, now_ms: u64, soon_ms: u64) {
        let proven = self.download.size_bytes().is_some();
        if proven && !self.download.is_past_end(part) {
            return self.on_empty(from, now_ms, soon_ms);
        }
        self.asked.remove(&part);
    }

    /// "Not here" from `from`: when it is the holder asked now, ask it once
    /// more after `soon_ms`, then the next holder after `soon_ms` again.
    pub fn on_empty(&mut self, from: &NodeId, now_ms: u64, soon_ms: u64) {
        if from != self.holder() || self.asked.is_empty() {
            return;
        }
        if self.answered_empty {
            self.next_holder();
        } else {
            self.asked.clear();
            self.answered_empty = true;
        }
        self.due_ms = Some(now_ms.saturating_add(soon_ms));
    }

    /// Owes `waiter` what it asked for, once held; false when too many wait.
    pub fn owe(&mut self, waiter: Waiter) -> bool {
        if self.waiters.contains(&waiter) {
            return true;
        }
        if self.waiters.len() >= WAITERS_MAX * PARTS_IN_FLIGHT {
            return false;
        }
        self.waiters.push(waiter);
        true
    }

    /// Everyone still waiting (the fetch ends).
    pub fn into_waiters(self) -> Vec<Waiter> {
        self.waiters
    }
}

/// Takes from `waiters` the peers owed a part that `answerable` says can
/// be answered now.
fn take_waiters(waiters: &mut Vec<Waiter>, answerable: impl Fn(u32) -> bool) -> Vec<(NodeId, u32)> {
    let mut owed = Vec::new();
    waiters.retain(|w| match w {
        Waiter::Part(peer, p) if answerable(*p) => {
            owed.push((peer.clone(), *p));
            false
        }
        _ => true,
    });
    owed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::transfer::{encode_part, part_count, Outboard, PART_BYTES};

    const RETRY: u64 = 100;

    fn holders() -> Vec<NodeId> {
        ["a", "b", "c"].into_iter().map(NodeId::from).collect()
    }

    struct Blob {
        bytes: Vec<u8>,
        outboard: Outboard,
    }

    impl Blob {
        fn new(parts: u64) -> Self {
            let bytes: Vec<u8> = (0..parts * PART_BYTES - 10).map(|i| i as u8).collect();
            let outboard = Outboard::of(&bytes);
            Self { bytes, outboard }
        }

        fn part(&self, part: u32) -> Vec<u8> {
            encode_part(&self.bytes, &self.outboard, part).expect("encodes")
        }

        fn deliver(&self, fetch: &mut Fetch, from: &str, part: u32) -> PartArrival {
            let size = self.bytes.len() as u64;
            fetch.on_part(
                &NodeId::from(from),
                (part, size),
                self.part(part),
                (0, RETRY),
            )
        }
    }

    #[test]
    fn part_zero_comes_first_then_a_window_of_parts_from_the_same_holder() {
        let blob = Blob::new(7);
        let mut fetch = Fetch::new(blob.outboard.hash(), holders(), u64::MAX);
        let first = fetch.poll(0, RETRY).expect("asks");
        assert_eq!((first.to.0.as_str(), first.parts), ("a", vec![0, 1]));
        assert!(fetch.poll(10, RETRY).is_none(), "waits for the parts");
        assert!(matches!(
            blob.deliver(&mut fetch, "a", 1),
            PartArrival::Ignored
        ));
        assert!(fetch.ask(20, RETRY).is_none(), "part 1 is aside");
        let PartArrival::Kept { held, .. } = blob.deliver(&mut fetch, "a", 0) else {
            panic!("part 0 kept");
        };
        assert_eq!(held, vec![0, 1]);
        let window = fetch.ask(30, RETRY).expect("tops up");
        assert_eq!(window.parts, vec![2, 3, 4, 5]);
        blob.deliver(&mut fetch, "a", 3);
        assert_eq!(fetch.ask(40, RETRY).expect("tops up").parts, vec![6]);
    }

    #[test]
    fn a_silent_holder_is_left_and_the_next_resumes_with_the_missing_parts() {
        let blob = Blob::new(3);
        let mut fetch = Fetch::new(blob.outboard.hash(), holders(), u64::MAX);
        fetch.poll(0, RETRY);
        blob.deliver(&mut fetch, "a", 0);
        assert_eq!(fetch.ask(0, RETRY).expect("the rest").parts, vec![2]);
        blob.deliver(&mut fetch, "a", 1);
        assert!(fetch.poll(RETRY - 1, RETRY).is_none());
        let resumed = fetch.poll(RETRY, RETRY).expect("moves on");
        assert_eq!((resumed.to.0.as_str(), resumed.parts), ("b", vec![2]));
        blob.deliver(&mut fetch, "b", 2);
        assert!(fetch.download().is_complete());
        let bytes = fetch
            .download()
            .assemble()
            .expect("complete")
            .expect("valid");
        assert_eq!(bytes, blob.bytes);
    }

    #[test]
    fn a_forged_part_leaves_its_holder_at_once_and_keeps_the_good_parts() {
        let blob = Blob::new(2);
        let mut fetch = Fetch::new(blob.outboard.hash(), holders(), u64::MAX);
        fetch.poll(0, RETRY);
        blob.deliver(&mut fetch, "a", 0);
        let mut forged = blob.part(1);
        forged[100] ^= 0xff;
        let size = blob.bytes.len() as u64;
        let arrival = fetch.on_part(&NodeId::from("a"), (1, size), forged, (0, RETRY));
        assert!(matches!(arrival, PartArrival::Refused(_)), "{arrival:?}");
        let next = fetch.poll(1, RETRY).expect("asks the next at once");
        assert_eq!((next.to.0.as_str(), next.parts), ("b", vec![1]));
        assert_eq!(fetch.download().parts_held(), 1);
    }

    #[test]
    fn not_here_is_asked_again_once_then_the_next_holder_is_asked() {
        let blob = Blob::new(1);
        let mut fetch = Fetch::new(blob.outboard.hash(), holders(), u64::MAX);
        fetch.poll(0, RETRY);
        fetch.on_empty(&NodeId::from("b"), 5, 10);
        assert!(fetch.poll(6, RETRY).is_none(), "not from the holder asked");
        fetch.on_empty(&NodeId::from("a"), 5, 10);
        assert!(fetch.poll(14, RETRY).is_none());
        assert_eq!(fetch.poll(15, RETRY).expect("again").to, NodeId::from("a"));
        fetch.on_empty(&NodeId::from("a"), 20, 10);
        assert_eq!(fetch.poll(30, RETRY).expect("next").to, NodeId::from("b"));
    }

    #[test]
    fn waiters_of_a_part_are_handed_over_when_it_arrives_and_are_bounded() {
        let blob = Blob::new(2);
        assert_eq!(part_count(blob.bytes.len() as u64), 2);
        let mut fetch = Fetch::new(blob.outboard.hash(), holders(), u64::MAX);
        assert!(fetch.owe(Waiter::Part(NodeId::from("x"), 0)));
        assert!(fetch.owe(Waiter::Part(NodeId::from("x"), 0)), "owed once");
        assert!(fetch.owe(Waiter::Part(NodeId::from("y"), 1)));
        assert!(fetch.owe(Waiter::Part(NodeId::from("w"), 3)));
        assert!(fetch.owe(Waiter::Whole(NodeId::from("z"))));
        fetch.poll(0, RETRY);
        let PartArrival::Kept { waiters, .. } = blob.deliver(&mut fetch, "a", 0) else {
            panic!("part 0 kept");
        };
        let x = NodeId::from("x");
        let w = NodeId::from("w");
        assert_eq!(waiters, vec![(x, 0), (w, 3)], "part 3 is past the end");
        let left = fetch.clone().into_waiters();
        assert_eq!(left.len(), 2);
        for i in 0..WAITERS_MAX * PARTS_IN_FLIGHT {
            fetch.owe(Waiter::Part(NodeId(format!("p{i}")), 1));
        }
        assert!(!fetch.owe(Waiter::Part(NodeId::from("late"), 1)));
    }
}
