//! A linearizability checker for a history of key-value reads and writes, in
//! the style of Wing & Gong with Lowe's memoization (as Porcupine and Knossos
//! do it).
//!
//! Each key is an independent register, so the history is split by key and
//! each part is searched on its own. The search walks the call and return
//! events in time order, tries to linearize any pending call whose effect
//! agrees with the register, backtracks when it reaches the return of an
//! operation it could not place, and remembers every (set of placed
//! operations, register value) it has seen so no configuration is searched
//! twice. A set is remembered by a 128-bit Zobrist hash, so each step costs
//! O(1) memory.
//!
//! Writes whose outcome the client never learned (a timeout, a dropped
//! connection) may or may not have taken effect. Values are unique per
//! write, so such a write that no read ever returned is dropped (placing it
//! last is always possible), and one that a read did return must take effect
//! before the earliest return of the reads that saw it.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::{RngCore, SeedableRng};

/// What one client operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Set the key to a value (unique across the history).
    Write(String),
    /// Read the key and saw this value (`None`: the key was not set).
    Read(Option<String>),
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The key.
    pub key: String,
    /// Read or write.
    pub kind: OpKind,
    /// When the client sent it (ns since the run began).
    pub invoked_ns: u64,
    /// When the answer arrived; `None` when the outcome is unknown (writes only).
    pub completed_ns: Option<u64>,
}

/// The verdict on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations explains every read.
    Linearizable,
    /// No order does: the history shows an anomaly.
    NotLinearizable,
    /// The search used its step budget without an answer.
    Inconclusive,
}

/// The verdict for every key, with the operations each one covered.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Per key: operations checked (after dropping unseen unknown writes) and the verdict.
    pub keys: BTreeMap<String, (usize, Verdict)>,
}

impl Report {
    /// Keys whose history is not linearizable.
    pub fn anomalies(&self) -> usize {
        self.count(&Verdict::NotLinearizable)
    }

    /// Keys the search could not decide within its budget.
    pub fn inconclusive(&self) -> usize {
        self.count(&Verdict::Inconclusive)
    }

    fn count(&self, verdict: &Verdict) -> usize {
        self.keys.values().filter(|(_, v)| v == verdict).count()
    }
}

/// Checks every key of `history`, spending at most `steps_max` search steps per key.
pub fn check(history: &[Operation], steps_max: u64) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| {
            let register = Register::from_ops(&ops);
            let verdict = register.search(steps_max);
            (key.to_string(), (register.ops.len(), verdict))
        })
        .collect();
    Report { keys }
}

/// One register's operations in the search's terms: values interned to
/// numbers (0: unset), unknown writes resolved as the module docs say.
struct Register {
    /// (invoked, completed, is_write, value).
    ops: Vec<(u64, u64, bool, u32)>,
}

impl Register {
    fn from_ops<'a>(ops: &[&'a Operation]) -> Self {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut intern = |v: Option<&'a str>| match v {
            None => 0,
            Some(v) => {
                let next = ids.len() as u32 + 1;
                *ids.entry(v).or_insert(next)
            }
        };
        let mut first_seen: HashMap<u32, u64> = HashMap::new();
        let mut interned = Vec::with_capacity(ops.len());
        for op in ops {
            let (is_write, value) = match &op.kind {
                OpKind::Write(v) => (true, intern(Some(v.as_str()))),
                OpKind::Read(v) => (false, intern(v.as_deref())),
            };
            if let (false, Some(done)) = (is_write, op.completed_ns) {
                let seen = first_seen.entry(value).or_insert(done);
                *seen = (*seen).min(done);
            }
            interned.push((op.invoked_ns, op.completed_ns, is_write, value));
        }
        let ops = interned
            .into_iter()
            .filter_map(|(invoked, completed, is_write, value)| match completed {
                Some(done) => Some((invoked, done, is_write, value)),
                // An unknown write: dropped if never read, else due by its first reader's return.
                None => first_seen
                    .get(&value)
                    .map(|&due| (invoked, due.max(invoked), is_write, value)),
            })
            .collect();
        Self { ops }
    }

    /// Wing & Gong's search with Lowe's cache over a linked list of events.
    fn search(&self, steps_max: u64) -> Verdict {
        let n = self.ops.len();
        if n == 0 {
            return Verdict::Linearizable;
        }
        let events = Events::new(&self.ops);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x11ea_7a81);
        let zobrist: Vec<u128> = (0..n)
            .map(|_| (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()))
            .collect();
        let mut list = events.list();
        let mut seen: HashSet<(u128, u32)> = HashSet::new();
        let mut placed: Vec<(usize, u32)> = Vec::new(); // (call event, state before)
        let (mut set, mut state) = (0u128, 0u32);
        let mut cursor = list.next[HEAD];
        for _ in 0..steps_max {
            if cursor == NIL {
                return Verdict::Linearizable;
            }
            let (op, is_call) = events.at[cursor];
            if is_call {
                let (_, _, is_write, value) = self.ops[op];
                let fits = is_write || value == state;
                let after = if is_write { value } else { state };
                if fits && seen.insert((set ^ zobrist[op], after)) {
                    placed.push((cursor, state));
                    set ^= zobrist[op];
                    state = after;
                    list.lift(cursor, events.partner[cursor]);
                    cursor = list.next[HEAD];
                } else {
                    cursor = list.next[cursor];
                }
            } else {
                let Some((call, before)) = placed.pop() else {
                    return Verdict::NotLinearizable;
                };
                let op = events.at[call].0;
                set ^= zobrist[op];
                state = before;
                list.unlift(call, events.partner[call]);
                cursor = list.next[call];
            }
        }
        Verdict::Inconclusive
    }
}

/// The list's head sentinel and its end marker.
const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// Call and return events in time order (a call before a return at the same
/// instant, so touching operations count as concurrent).
struct Events {
    /// Per event (index from 1): (operation, is a call).
    at: Vec<(usize, bool)>,
    /// Per event: the index of the other event of the same operation.
    partner: Vec<usize>,
}

impl Events {
    fn new(ops: &[(u64, u64, bool, u32)]) -> Self {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, &(invoked, completed, _, _)) in ops.iter().enumerate() {
            order.push((invoked, false, i));
            order.push((completed, true, i));
        }
        // (time, is_return): calls sort first at equal times.
        order.sort_unstable();
        let mut at = vec![(0, false); order.len() + 1];
        let mut partner = vec![0; order.len() + 1];
        let mut call_of = vec![0; ops.len()];
        for (slot, &(_, is_return, op)) in order.iter().enumerate() {
            let event = slot + 1;
            at[event] = (op, !is_return);
            if is_return {
                partner[event] = call_of[op];
                partner[call_of[op]] = event;
            } else {
                call_of[op] = event;
            }
        }
        Self { at, partner }
    }

    /// A doubly linked list of every event after the head sentinel.
    fn list(&self) -> List {
        let len = self.at.len();
        let next = (0..len)
            .map(|i| if i + 1 < len { i + 1 } else { NIL })
            .collect();
        let prev = (0..len).map(|i| i.wrapping_sub(1)).collect();
        List { next, prev }
    }
}

/// The events not yet linearized.
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl List {
    fn unlink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = event;
        if next != NIL {
            self.prev[next] = event;
        }
    }

    /// Removes an operation's call and return.
    fn lift(&mut self, call: usize, ret: usize) {
        self.unlink(call);
        self.unlink(ret);
    }

    /// Puts them back (in the reverse order of [`List::lift`]).
    fn unlift(&mut self, call: usize, ret: usize) {
        self.relink(ret);
        self.relink(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: &str, invoked_ns: u64, completed: Option<u64>) -> Operation {
        Operation {
            key: key.into(),
            kind: OpKind::Write(value.into()),
            invoked_ns,
            completed_ns: completed,
        }
    }

    fn read(key: &str, value: Option<&str>, invoked_ns: u64, completed_ns: u64) -> Operation {
        Operation {
            key: key.into(),
            kind: OpKind::Read(value.map(String::from)),
            invoked_ns,
            completed_ns: Some(completed_ns),
        }
    }

    fn verdict(history: &[Operation]) -> Verdict {
        let report = check(history, 1_000_000);
        assert_eq!(report.keys.len(), 1);
        report
            .keys
            .into_values()
            .next()
            .map(|(_, v)| v)
            .unwrap_or(Verdict::Inconclusive)
    }

    #[test]
    fn sequential_reads_of_the_latest_write_are_linearizable() {
        let h = [
            read("k", None, 0, 1),
            write("k", "a", 2, Some(3)),
            read("k", Some("a"), 4, 5),
            write("k", "b", 6, Some(7)),
            read("k", Some("b"), 8, 9),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_an_anomaly() {
        let h = [
            write("k", "a", 0, Some(1)),
            write("k", "b", 2, Some(3)),
            read("k", Some("a"), 4, 5),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps both writes, so it may see either.
        for seen in ["a", "b"] {
            let h = [
                write("k", "a", 0, Some(10)),
                write("k", "b", 1, Some(10)),
                read("k", Some(seen), 2, 11),
            ];
            assert_eq!(verdict(&h), Verdict::Linearizable, "saw {seen}");
        }
    }

    #[test]
    fn two_readers_may_not_see_two_writes_in_opposite_orders() {
        let h = [
            write("k", "a", 0, Some(100)),
            write("k", "b", 0, Some(100)),
            read("k", Some("a"), 10, 20),
            read("k", Some("b"), 21, 30),
            read("k", Some("a"), 31, 40),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not() {
        let unseen = [
            write("k", "a", 0, Some(1)),
            write("k", "lost", 2, None),
            read("k", Some("a"), 3, 4),
        ];
        assert_eq!(verdict(&unseen), Verdict::Linearizable);
        let seen_later = [
            write("k", "a", 0, Some(1)),
            write("k", "maybe", 2, None),
            read("k", Some("a"), 3, 4),
            read("k", Some("maybe"), 50, 60),
        ];
        assert_eq!(verdict(&seen_later), Verdict::Linearizable);
        // Once read, it cannot be un-done by an older value.
        let undone = [
            write("k", "a", 0, Some(1)),
            write("k", "maybe", 2, None),
            read("k", Some("maybe"), 3, 4),
            read("k", Some("a"), 5, 6),
        ];
        assert_eq!(verdict(&undone), Verdict::NotLinearizable);
    }

    #[test]
    fn a_value_nobody_wrote_is_an_anomaly() {
        let h = [write("k", "a", 0, Some(1)), read("k", Some("z"), 2, 3)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn keys_are_checked_apart_and_a_budget_bounds_the_search() {
        let h = [
            write("x", "a", 0, Some(1)),
            read("y", None, 0, 1),
            read("x", Some("a"), 2, 3),
        ];
        let report = check(&h, 1_000);
        assert_eq!(report.keys.len(), 2);
        assert_eq!(report.anomalies(), 0);
        let report = check(&h, 1);
        assert_eq!(report.inconclusive(), 2, "{report:?}");
    }

    #[test]
    fn a_long_concurrent_history_is_decided() {
        // 4 clients, 2,000 operations each overlapping its neighbours.
        let mut h = Vec::new();
        let mut last = None;
        for i in 0..2_000u64 {
            let t = i * 10;
            if i % 2 == 0 {
                let value = format!("v{i}");
                h.push(write("k", &value, t, Some(t + 25)));
                last = Some(value);
            } else {
                // Reads after the previous write completed see it.
                h.push(read("k", last.as_deref(), t + 20, t + 30));
            }
        }
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }
}
