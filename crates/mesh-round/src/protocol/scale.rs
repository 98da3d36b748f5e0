//! Auto-scaling of a round's groups: how many members each secure-aggregation
//! group gets, and so how many groups (and group aggregators) a round has.
//!
//! The number of groups follows the number of participants (`p / size`), and
//! the size follows the measured round time against the job's deadline:
//!
//! ```text
//!   round time / deadline >= 1/2, or an attempt aborted at its deadline
//!       -> scale out: size * 2/3 (at least one less), down to the smallest
//!          size the job allows: more, smaller groups, so each member masks
//!          for fewer neighbours and each group aggregator unmasks less
//!   round time / deadline <= 1/5
//!       -> scale in: size * 3/2 (at least one more), up to the job's own
//!          size: fewer group results for the final aggregators, each update
//!          hidden among more others
//!   in between -> hold (the gap keeps the size from flapping)
//!   a scale-out whose next round is not at least 20% faster is undone, and
//!   slow rounds at that size hold until fast rounds come (where latency or
//!   training sets the round time, smaller groups only cost the final
//!   aggregators more group results)
//! ```
//!
//! Everything comes from the committed state, so every leader plans the
//! same size and any node can say afterwards what was decided and why: a
//! round's start time is its committed deadline less the job's deadline (the
//! proposer's clock when it started the round), a round's time is the next
//! round's start less its own (the clock now for the last one), and aborted
//! attempts are counted by the job. The size is the fold of those steps over
//! the job's history, starting at the job's size.
//!
//! Pure functions: no I/O, no clocks.

use mesh_consensus::command::JobSpec;
use mesh_consensus::state::jobs::Job;

use crate::job::{JobSpecCheck, SECAGG_GROUP_MIN};

/// A round that used at least this share of its deadline, in permille,
/// makes the next one scale out.
pub const SCALE_OUT_RATIO_PERMILLE: u64 = 500;
/// A round that used at most this share of its deadline, in permille,
/// makes the next one scale back in.
pub const SCALE_IN_RATIO_PERMILLE: u64 = 200;
/// A scale-out must make the next round at least this much faster (in
/// percent of the time ratio that caused it), or it is undone and not
/// tried again from that size until the rounds get fast.
pub const GAIN_MIN_PERCENT: u64 = 20;

/// Why a round has the group size it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleReason {
    /// The job's first attempt: the job's own size.
    First,
    /// The round before used at least half its deadline.
    Slow,
    /// An attempt was aborted at its deadline.
    Aborted,
    /// The round before used at most a fifth of its deadline.
    Fast,
    /// The last scale-out did not make rounds faster: undone.
    NoGain,
    /// Nothing to change (or nothing left to try).
    Held,
}

impl ScaleReason {
    /// The reason in words, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::First => "the job's first round uses the job's group size",
            Self::Slow => "the round before used at least half of its deadline",
            Self::Aborted => "an attempt was aborted at its deadline",
            Self::Fast => "the round before used at most a fifth of its deadline",
            Self::NoGain => "the last scale-out did not make rounds faster, so it is undone",
            Self::Held => "no change",
        }
    }
}

/// Which way a round's group size moved from the round before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleDirection {
    /// Smaller groups, more of them.
    Out,
    /// Larger groups, fewer of them.
    In,
    /// The same size.
    Hold,
}

impl ScaleDirection {
    /// The direction's name, as metrics and logs label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::In => "in",
            Self::Hold => "hold",
        }
    }
}

/// The smallest and largest group size a round may use: the job's own size
/// (already fitted to the rule's inputs) is the largest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeBounds {
    /// Fewest members (secure aggregation needs enough to survive a dropout).
    pub min: usize,
    /// Most members: the job's group size.
    pub max: usize,
}

/// What the scaler decided for one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleDecision {
    /// Members per group for the round.
    pub group_size: usize,
    /// The size the attempt before used (the round before, or an aborted
    /// attempt of this round); `None` for a job's first attempt.
    pub previous_size: Option<usize>,
    /// The attempt before's time over its deadline, in permille: 1000 for
    /// an attempt aborted at its deadline; `None` when there was none, or
    /// its end is unknown (aborted attempts came after it).
    pub round_time_ratio_permille: Option<u64>,
    /// How the size moved.
    pub direction: ScaleDirection,
    /// Why.
    pub reason: ScaleReason,
}

/// The sizes a round of `participants` of `spec` may use: at most the job's
/// group size fitted to its rule ([`crate::job::CheckedJob::group_size_for`]),
/// at least [`SECAGG_GROUP_MIN`] with secure aggregation (or that size when
/// it is smaller: three participants), else 1. `None` when the job cannot
/// run a round of that many.
pub fn bounds(spec: &JobSpec, participants: usize) -> Option<SizeBounds> {
    let max = spec
        .check()
        .and_then(|job| job.group_size_for(participants, spec.training.group_size as usize))
        .ok()?;
    let min = if spec.secagg {
        SECAGG_GROUP_MIN.min(max)
    } else {
        1
    };
    Some(SizeBounds { min, max })
}

/// What was decided for round `round` of `job`, a round already started
/// (`None` for one not started, or one its job could not have planned).
pub fn decided(job: &Job, round: usize) -> Option<ScaleDecision> {
    let record = job.rounds.get(round)?;
    let bounds = bounds(&job.spec, record.participants.len())?;
    Some(decide(job, round, bounds, 0))
}

/// The decision for a job's first attempt: the job's own size.
pub fn decide_first(bounds: SizeBounds) -> ScaleDecision {
    ScaleDecision {
        group_size: bounds.max.max(1),
        previous_size: None,
        round_time_ratio_permille: None,
        direction: ScaleDirection::Hold,
        reason: ScaleReason::First,
    }
}

/// One step of the fold: a measured round, or an attempt that hit its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// A round took this share of its deadline (permille).
    Measured(u64),
    /// A round's end is unknown (aborted attempts came after it).
    Unknown,
    /// An attempt aborted at its deadline.
    Aborted,
}

/// The group size for round `round` of `job` (the round being planned when
/// `round == job.rounds.len()`, else a started one), with `now_ms` standing
/// for the start of a round not started yet.
pub fn decide(job: &Job, round: usize, bounds: SizeBounds, now_ms: u64) -> ScaleDecision {
    let mut scaler = Scaler::new(bounds);
    let mut decision = decide_first(scaler.bounds);
    for step in steps(job, round, now_ms) {
        let previous = scaler.size;
        let reason = scaler.step(step);
        decision = ScaleDecision {
            group_size: scaler.size,
            previous_size: Some(previous),
            round_time_ratio_permille: match step {
                Step::Measured(r) => Some(r),
                Step::Aborted => Some(1000),
                Step::Unknown => None,
            },
            direction: match scaler.size.cmp(&previous) {
                std::cmp::Ordering::Less => ScaleDirection::Out,
                std::cmp::Ordering::Greater => ScaleDirection::In,
                std::cmp::Ordering::Equal => ScaleDirection::Hold,
            },
            reason,
        };
    }
    decision
}

/// The fold's state: the size, the last scale-out still on trial, and a
/// size from which scaling out was tried and did not pay.
#[derive(Clone, Copy, Debug)]
struct Scaler {
    bounds: SizeBounds,
    size: usize,
    /// The size before the last scale-out and the ratio that caused it,
    /// until the next measure says whether it paid.
    trial: Option<(usize, u64)>,
    /// Slow rounds at this size hold instead of scaling out again.
    no_gain_at: Option<usize>,
}

impl Scaler {
    fn new(bounds: SizeBounds) -> Self {
        let bounds = SizeBounds {
            min: bounds.min.min(bounds.max).max(1),
            max: bounds.max.max(1),
        };
        Self {
            bounds,
            size: bounds.max,
            trial: None,
            no_gain_at: None,
        }
    }

    /// Takes one step of the history; says why the size is what it is now.
    fn step(&mut self, step: Step) -> ScaleReason {
        let trial = self.trial.take();
        match step {
            Step::Aborted => self.scale_out(1000, ScaleReason::Aborted),
            Step::Unknown => ScaleReason::Held,
            Step::Measured(r) => match trial {
                Some((before, ratio))
                    if r.saturating_mul(100) > ratio * (100 - GAIN_MIN_PERCENT) =>
                {
                    self.size = before;
                    self.no_gain_at = Some(before);
                    ScaleReason::NoGain
                }
                _ if r >= SCALE_OUT_RATIO_PERMILLE && self.no_gain_at == Some(self.size) => {
                    ScaleReason::Held
                }
                _ if r >= SCALE_OUT_RATIO_PERMILLE => self.scale_out(r, ScaleReason::Slow),
                _ if r <= SCALE_IN_RATIO_PERMILLE && self.size < self.bounds.max => {
                    self.size = (self.size * 3).div_ceil(2).min(self.bounds.max);
                    self.no_gain_at = None;
                    ScaleReason::Fast
                }
                _ => ScaleReason::Held,
            },
        }
    }

    fn scale_out(&mut self, ratio: u64, reason: ScaleReason) -> ScaleReason {
        let smaller = (self.size * 2 / 3)
            .min(self.size.saturating_sub(1))
            .max(self.bounds.min);
        if smaller == self.size {
            return ScaleReason::Held;
        }
        self.trial = Some((self.size, ratio));
        self.size = smaller;
        reason
    }
}

/// The steps of `job`'s history before round `round` starts.
fn steps(job: &Job, round: usize, now_ms: u64) -> Vec<Step> {
    let deadline_ms = job.spec.training.round_deadline_ms.max(1);
    let start_of = |r: usize| {
        job.rounds
            .get(r)
            .map(|rec| rec.deadline_unix_ms.saturating_sub(deadline_ms))
    };
    let aborts_before = |r: usize| -> u32 {
        let at = job
            .rounds
            .get(r)
            .map_or(job.aborted_rounds, |rec| rec.aborted_attempts);
        let before = r
            .checked_sub(1)
            .and_then(|p| job.rounds.get(p))
            .map_or(0, |rec| rec.aborted_attempts);
        at.saturating_sub(before)
    };
    let mut out = Vec::new();
    for r in 0..=round.min(job.rounds.len()) {
        if r > 0 {
            let aborted_after = aborts_before(r) > 0;
            let end = start_of(r).unwrap_or(now_ms);
            out.push(match (aborted_after, start_of(r - 1)) {
                (false, Some(start)) => {
                    Step::Measured(end.saturating_sub(start).saturating_mul(1000) / deadline_ms)
                }
                _ => Step::Unknown,
            });
        }
        let aborts = aborts_before(r).min(ABORT_STEPS_MAX);
        out.extend((0..aborts).map(|_| Step::Aborted));
    }
    out
}

/// Most aborted attempts of one round that count (the size is at its
/// smallest long before).
const ABORT_STEPS_MAX: u32 = 16;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::plan::tests::complete_round;
    use mesh_consensus::command::{Command, GroupPlan, JobId, NodeId, RoundPlan};
    use mesh_consensus::MeshState;
    use mesh_security::rbac::Role;

    const DEADLINE_MS: u64 = 10_000;
    const BOUNDS: SizeBounds = SizeBounds { min: 4, max: 10 };

    fn node(name: &str) -> NodeId {
        NodeId(name.into())
    }

    /// A committed state whose job `j` runs rounds of chosen lengths on a
    /// clock of its own.
    struct History {
        state: MeshState,
        index: u64,
        now_ms: u64,
    }

    impl History {
        fn new() -> Self {
            let mut spec = crate::protocol::plan::tests::job_spec(2, 50);
            spec.training.round_deadline_ms = DEADLINE_MS;
            let mut h = Self {
                state: MeshState::new(),
                index: 0,
                now_ms: 1_000_000,
            };
            for (name, role) in [
                ("a", Role::Trainer),
                ("b", Role::Trainer),
                ("c", Role::Aggregator),
            ] {
                h.apply(Command::AddMember {
                    node: node(name),
                    roles: [role].into(),
                    zone: None,
                });
            }
            h.apply(Command::CreateJob {
                job: JobId::from("j"),
                spec,
            });
            h
        }

        fn apply(&mut self, command: Command) {
            self.index += 1;
            self.state.apply(self.index, &command).unwrap();
        }

        fn job(&self) -> &Job {
            self.state.jobs().get(&JobId::from("j")).unwrap()
        }

        fn round(&self) -> u32 {
            self.job().rounds.len() as u32
        }

        fn start(&mut self) {
            let round = self.round();
            self.apply(Command::StartRound {
                job: JobId::from("j"),
                round,
                model_hash: [round as u8; 32],
                participants: [node("a"), node("b")].into(),
                deadline_unix_ms: self.now_ms + DEADLINE_MS,
                plan: RoundPlan {
                    groups: vec![GroupPlan {
                        aggregator: node("c"),
                        members: vec![node("a"), node("b")],
                    }],
                    aggregators: vec![node("c")],
                },
            });
        }

        /// Runs the next round for `time_ms` and completes it.
        fn run(&mut self, time_ms: u64) {
            self.start();
            self.now_ms += time_ms;
            let round = self.round() - 1;
            let done = complete_round(JobId::from("j"), round, [100 + round as u8; 32]);
            self.apply(done);
        }

        /// Starts the next round and aborts it at its deadline.
        fn abort(&mut self) {
            self.start();
            self.now_ms += DEADLINE_MS;
            let round = self.round() - 1;
            self.apply(Command::AbortRound {
                job: JobId::from("j"),
                round,
            });
        }

        fn next(&self) -> ScaleDecision {
            decide(self.job(), self.job().rounds.len(), BOUNDS, self.now_ms)
        }
    }

    #[test]
    fn the_first_round_uses_the_jobs_size() {
        let h = History::new();
        let d = h.next();
        assert_eq!(d.group_size, 10);
        assert_eq!(d.previous_size, None);
        assert_eq!(d.direction, ScaleDirection::Hold);
        assert_eq!(d.reason, ScaleReason::First);
        assert_eq!(d.round_time_ratio_permille, None);
    }

    #[test]
    fn fast_rounds_keep_the_jobs_size() {
        let mut h = History::new();
        for _ in 0..5 {
            h.run(1_000);
            let d = h.next();
            assert_eq!(d.group_size, 10);
            assert_eq!(d.round_time_ratio_permille, Some(100));
            assert_eq!(d.direction, ScaleDirection::Hold);
        }
    }

    /// Rounds whose time follows the group size (the members' masking
    /// work), `per_member_ms` for each member of a group.
    fn run_sized(h: &mut History, per_member_ms: u64) -> ScaleDecision {
        let size = h.next().group_size as u64;
        h.run(size * per_member_ms);
        h.next()
    }

    #[test]
    fn slow_rounds_scale_out_while_it_pays_down_to_the_smallest_size() {
        let mut h = History::new();
        let sizes: Vec<usize> = (0..4)
            .map(|_| run_sized(&mut h, 1_000).group_size)
            .collect();
        assert_eq!(sizes, vec![6, 4, 4, 4]);
        let mut h = History::new();
        let d = run_sized(&mut h, 1_000);
        assert_eq!(d.direction, ScaleDirection::Out);
        assert_eq!(d.reason, ScaleReason::Slow);
        assert_eq!(d.previous_size, Some(10));
        assert_eq!(d.round_time_ratio_permille, Some(1000));
    }

    /// Where the round time does not depend on the group size (the
    /// network's latency, or training, dominates), smaller groups only cost
    /// the final aggregators more group results: the scale-out is undone
    /// and not tried again from that size.
    #[test]
    fn a_scale_out_that_does_not_pay_is_undone_and_not_tried_again() {
        let mut h = History::new();
        h.run(7_000);
        assert_eq!(h.next().group_size, 6);
        h.run(7_000);
        let undone = h.next();
        assert_eq!(undone.group_size, 10);
        assert_eq!(undone.reason, ScaleReason::NoGain);
        assert_eq!(undone.direction, ScaleDirection::In);
        for _ in 0..3 {
            h.run(7_000);
            let d = h.next();
            assert_eq!((d.group_size, d.reason), (10, ScaleReason::Held));
        }
        // An abort still tries smaller groups.
        h.abort();
        assert_eq!(h.next().group_size, 6);
    }

    #[test]
    fn rounds_in_the_band_hold_and_fast_ones_scale_back_in() {
        let mut h = History::new();
        run_sized(&mut h, 900);
        assert_eq!(run_sized(&mut h, 900).group_size, 4);
        h.run(3_000);
        let held = h.next();
        assert_eq!((held.group_size, held.direction), (4, ScaleDirection::Hold));
        h.run(1_000);
        let grown = h.next();
        assert_eq!(grown.group_size, 6);
        assert_eq!(grown.direction, ScaleDirection::In);
        assert_eq!(grown.reason, ScaleReason::Fast);
        h.run(1_000);
        h.run(1_000);
        assert_eq!(h.next().group_size, 10);
    }

    #[test]
    fn an_attempt_aborted_at_its_deadline_scales_the_retry_out() {
        let mut h = History::new();
        h.run(1_000);
        h.abort();
        let d = h.next();
        assert_eq!(d.group_size, 6);
        assert_eq!(d.direction, ScaleDirection::Out);
        assert_eq!(d.round_time_ratio_permille, Some(1000));
        h.abort();
        assert_eq!(h.next().group_size, 4);
        // The round that finally ran was fast: back in one step.
        h.run(1_000);
        assert_eq!(h.next().group_size, 6);
        // The first round's attempts count too.
        let mut first = History::new();
        first.abort();
        assert_eq!(first.next().group_size, 6);
    }

    #[test]
    fn the_decision_for_a_started_round_is_the_one_planned() {
        let mut h = History::new();
        h.run(6_000);
        h.run(2_500);
        let planned = h.next();
        h.start();
        let started = h.round() as usize - 1;
        let later = decide(h.job(), started, BOUNDS, h.now_ms + 99_999);
        assert_eq!(planned, later);
        // Every earlier round's decision can be read back the same way.
        assert_eq!(decide(h.job(), 1, BOUNDS, 0).group_size, 6);
        assert_eq!(decide(h.job(), 0, BOUNDS, 0).group_size, 10);
    }

    #[test]
    fn bounds_hold_whatever_the_history() {
        let mut h = History::new();
        for t in [9_000, 1, 9_000, 9_000, 9_000, 1, 1, 1, 1, 1, 1] {
            h.run(t);
            let size = h.next().group_size;
            assert!((BOUNDS.min..=BOUNDS.max).contains(&size), "{size}");
        }
        for _ in 0..5 {
            h.abort();
            let size = h.next().group_size;
            assert!((BOUNDS.min..=BOUNDS.max).contains(&size), "{size}");
        }
        // Plain updates may go down to groups of one; degenerate bounds hold.
        let tight = SizeBounds { min: 1, max: 1 };
        assert_eq!(decide(h.job(), 3, tight, 0).group_size, 1);
        let crossed = SizeBounds { min: 8, max: 3 };
        assert_eq!(decide(h.job(), 3, crossed, 0).group_size, 3);
    }
}
