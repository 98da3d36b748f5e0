//! The typed commands that the committee commits to the log, and their
//! stateless validation and bounded wire encoding.
//!
//! A command is checked twice: here, for what can be judged from the command
//! alone (lengths, ranges, finite numbers), and in [`crate::state`], against
//! the current state (does the job exist, is the round running). Both checks
//! are deterministic, so every node accepts or rejects an entry alike. A job
//! spec is checked a third time, before it is proposed at all:
//! [`JobSpec::check_bounds`] keeps every numeric field in a sane range.

use std::collections::BTreeSet;
use std::fmt;

use mesh_security::ca::{SignedRevocation, REASON_BYTES_MAX};
use mesh_spec::{DataSchema, ModelSpec};
use serde::{Deserialize, Serialize};

use crate::error::{ApplyError, CommandDecodeError};

mod bounds;
mod initial;
mod once;

pub use bounds::{
    JobSpecError, BATCH_SIZE_MAX, CLIP_NORM_MAX, EPOCHS_MAX, EPSILON_MICROS_MAX,
    JOB_PARTICIPANTS_MIN, LEARNING_RATE_MAX, NOISE_MULTIPLIER_MAX, ROUND_DEADLINE_MS_MAX,
    ROUND_DEADLINE_MS_MIN,
};
pub use initial::{parse_model_hash, InitialModel, INITIAL_MODEL_HOLDERS_MAX};

/// Longest node id, job id, model name or rule name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// Longest certificate serial number, in bytes (RFC 5280 allows 20 octets).
pub const SERIAL_BYTES_MAX: usize = 20;
/// Longest key of a key-value entry, in bytes.
pub const KV_KEY_BYTES_MAX: usize = 1024;
/// Longest value of a key-value entry, in bytes.
pub const KV_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Most rounds one job may ask for.
pub const ROUNDS_MAX: u32 = 100_000;
/// Most participants one round may have.
pub const PARTICIPANTS_MAX: u32 = 10_000;
/// Largest encoded command accepted by [`Command::decode`], in bytes.
pub const COMMAND_BYTES_MAX: usize = 1024 * 1024;
/// Longest reason a node may give for declining a job.
pub const DECLINE_REASON_BYTES_MAX: usize = 512;

/// A node's identity as the mesh names it (the libp2p peer id in text form).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// A federated-learning job's identity, chosen by the admin who submits it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// BLAKE3 hash of a serialized model (the key it has in the content-addressed cache).
pub type ModelHash = [u8; 32];

/// What a member may do in the mesh: the RBAC roles of `mesh-security`, recorded
/// here so the replicated membership and the certificates speak of the same roles.
pub use mesh_security::rbac::Role;

/// Why a certificate was revoked (a subset of the RFC 5280 reason codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The private key is known or suspected to be exposed.
    KeyCompromise,
    /// A newer certificate replaces this one.
    Superseded,
    /// The node left the mesh for good.
    CessationOfOperation,
    /// The node was caught misbehaving (committed evidence).
    Misbehaviour,
}

impl RevocationReason {
    /// Reads the CA's free-text reason: a known name in any case, with `-`,
    /// `_` or spaces between words ("key compromise", "key-compromise");
    /// anything else is [`RevocationReason::Unspecified`].
    pub fn from_text(text: &str) -> Self {
        let folded: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        match folded.as_str() {
            "keycompromise" | "keyleaked" => Self::KeyCompromise,
            "superseded" => Self::Superseded,
            "cessationofoperation" | "retired" | "decommissioned" => Self::CessationOfOperation,
            "misbehaviour" | "misbehavior" => Self::Misbehaviour,
            _ => Self::Unspecified,
        }
    }
}

/// What a piece of reputation evidence accuses a node of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EvidenceKind {
    /// Two valid signatures over conflicting statements for the same index.
    Equivocation,
    /// A signed state hash that differs from the committed one.
    StateHashMismatch,
    /// An aggregator whose result hash disagreed with its shard's majority.
    AggregatorDisagreement,
    /// An update flagged as anomalous by the robust aggregation rule.
    AnomalousUpdate,
    /// A participant that missed a round deadline.
    MissedDeadline,
}

/// A job's differential-privacy budget: epsilon in millionths (exact integer
/// accounting, so every node agrees on when it runs out) and a fixed delta.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpBudget {
    /// Total epsilon the job may spend, in millionths of one.
    pub epsilon_micros: u64,
    /// Delta of the (epsilon, delta) guarantee; finite, in (0, 1).
    pub delta: f64,
}

/// What an admin asks for when submitting a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The model: a preset (`"mlp"`), a layer list, or an external
    /// learner's parameter layout (mesh-spec's model language).
    pub model: ModelSpec,
    /// Number of rounds to run.
    pub rounds: u32,
    /// Most participants in one round.
    pub participants_per_round: u32,
    /// Robust aggregation rule name (for example `multi-krum`).
    pub rule_name: String,
    /// Pre-aggregation step before the rule (`none`, `nnm`, `bucketing[:size=S]`).
    #[serde(default = "default_pre_aggregation")]
    pub pre_aggregation: String,
    /// Server optimizer that steps the global model by the aggregate
    /// (`sgd[:lr=..]`, `fedadam[:..]`, `fedyogi[:..]`).
    #[serde(default = "default_server_optimizer")]
    pub server_optimizer: String,
    /// Byzantine participants the rule must tolerate per round.
    pub byzantine_count: u32,
    /// Whether updates go through secure aggregation.
    pub secagg: bool,
    /// Differential-privacy budget; `None` runs the job without DP.
    pub dp_budget: Option<DpBudget>,
    /// How each round trains and is grouped.
    pub training: TrainingSpec,
    /// Starting weights to fine-tune from; `None` starts from the seeded
    /// initialisation of `model`.
    #[serde(default)]
    pub initial_model: Option<InitialModel>,
}

/// How a job trains: what every participant and aggregator must agree on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSpec {
    /// Name of the data each node binds to this job (its own private copy), e.g. `mnist`.
    pub dataset: String,
    /// What that data must look like; `None` takes each node's data as it is
    /// (every node must then hold data of one shape, e.g. MNIST).
    #[serde(default)]
    pub schema: Option<DataSchema>,
    /// Local epochs per round.
    pub epochs: u32,
    /// Rows per SGD step.
    pub batch_size: u32,
    /// Local SGD step size.
    pub learning_rate: f32,
    /// FedProx proximal coefficient `mu` of local training (0: plain local SGD).
    #[serde(default)]
    pub proximal_mu: f32,
    /// Seed of the initial model and of every seeded choice of the job.
    pub seed: u64,
    /// How long a round may run, in milliseconds, before it closes with the updates it has.
    pub round_deadline_ms: u64,
    /// Participants per aggregation group (the last group takes the remainder;
    /// secure aggregation needs at least 2, plain updates may go alone).
    pub group_size: u32,
    /// L2 norm every update is clipped to before it leaves its node.
    pub clip_norm: f32,
    /// Gaussian noise multiplier `z` of client-level DP (0 without DP).
    pub noise_multiplier: f64,
    /// Sampling rate `q` the privacy accountant charges each round with.
    pub sampling_rate: f64,
}

fn default_pre_aggregation() -> String {
    "none".into()
}

fn default_server_optimizer() -> String {
    "sgd".into()
}

impl Default for TrainingSpec {
    fn default() -> Self {
        Self {
            dataset: "mnist".into(),
            schema: None,
            epochs: 1,
            batch_size: 32,
            learning_rate: 0.05,
            proximal_mu: 0.0,
            seed: 0,
            round_deadline_ms: 120_000,
            group_size: 5,
            clip_norm: 5.0,
            noise_multiplier: 0.0,
            sampling_rate: 1.0,
        }
    }
}

/// Who aggregates one round: a group aggregator per group of participants
/// (it unmasks the group's sum) and the final aggregators that combine the
/// group results with the robust rule and must agree on the model hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundPlan {
    /// The groups, in order; every participant is in exactly one.
    pub groups: Vec<GroupPlan>,
    /// The final aggregators (at least one, distinct).
    pub aggregators: Vec<NodeId>,
}

/// One secure-aggregation group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlan {
    /// The node that collects and unmasks the group's updates.
    pub aggregator: NodeId,
    /// The group's participants, sorted.
    pub members: Vec<NodeId>,
}

/// Which aggregator of a round is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregatorSlot {
    /// The aggregator of this group.
    Group(u32),
    /// This final aggregator.
    Final(u32),
}

/// One group result a completed round was combined from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInput {
    /// The group.
    pub group: u32,
    /// BLAKE3 hash of the group's mean update blob.
    pub hash: ModelHash,
    /// Participants whose updates are in it.
    pub contributors: u32,
}

/// Why a job stopped before its last round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// An admin cancelled it.
    Cancelled,
    /// The next round would exceed the privacy budget.
    BudgetExhausted,
}

/// Results of one completed round, as the aggregators report them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Validation accuracy of the new global model, in [0, 1].
    pub accuracy: f64,
    /// Validation loss of the new global model; finite, not negative.
    pub loss: f64,
    /// Updates that made it into the aggregate.
    pub updates_count: u32,
}

/// One entry of the replicated log.
// `CreateJob` (the job spec) is the largest variant by about 200 bytes. A
// command lives from decoding to applying, and the log keeps its bytes, so
// boxing the spec would add an allocation per job for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Admit a node with the given roles.
    AddMember {
        /// The node admitted.
        node: NodeId,
        /// Its roles; not empty.
        roles: BTreeSet<Role>,
        /// Failure domain it declares, if any.
        zone: Option<String>,
    },
    /// Replace a member's roles.
    SetRoles {
        /// The member.
        node: NodeId,
        /// Its new roles; not empty.
        roles: BTreeSet<Role>,
    },
    /// Remove a member from the mesh.
    RemoveMember {
        /// The member removed.
        node: NodeId,
    },
    /// Revoke a certificate: the CA-signed revocation itself, so that every
    /// node can check the CA's signature before it acts on the committed entry.
    RevokeCertificate {
        /// The revocation as the CA signed it (the serial is its entry's).
        revocation: SignedRevocation,
        /// Why it was revoked.
        reason: RevocationReason,
    },
    /// Create a job (`JobCreated`).
    CreateJob {
        /// The new job's id; must not exist yet.
        job: JobId,
        /// What it runs.
        spec: JobSpec,
    },
    /// Start the job's next round (`RoundStarted`).
    StartRound {
        /// The job.
        job: JobId,
        /// Round number, counted from 0; must be the next one.
        round: u32,
        /// Hash of the global model the round starts from.
        model_hash: ModelHash,
        /// Members selected to train.
        participants: BTreeSet<NodeId>,
        /// Deadline, in milliseconds since the Unix epoch (as the leader proposed it).
        deadline_unix_ms: u64,
        /// Groups and aggregators.
        plan: RoundPlan,
    },
    /// Complete the running round (`RoundCompleted`).
    CompleteRound {
        /// The job.
        job: JobId,
        /// The running round.
        round: u32,
        /// Hash of the aggregated model.
        model_hash: ModelHash,
        /// What the aggregators measured.
        metrics: RoundMetrics,
        /// Epsilon this round spent, in millionths.
        privacy_spent_epsilon_micros: u64,
        /// The group results combined into the model.
        inputs: Vec<GroupInput>,
        /// What the final aggregators found while combining (participants
        /// whose updates were outliers, aggregators that disagreed), applied
        /// to reputations with the round: exactly once, whoever leads.
        #[serde(default)]
        evidence: Vec<(NodeId, EvidenceKind)>,
    },
    /// Replace one aggregator of the running round (it failed).
    ReassignAggregator {
        /// The job.
        job: JobId,
        /// The running round.
        round: u32,
        /// Which aggregator.
        slot: AggregatorSlot,
        /// Its replacement.
        node: NodeId,
    },
    /// Give up the running round (nothing arrived by its deadline); the same
    /// round number starts again.
    AbortRound {
        /// The job.
        job: JobId,
        /// The running round.
        round: u32,
    },
    /// Stop a job for good.
    StopJob {
        /// The job.
        job: JobId,
        /// Why.
        reason: StopReason,
    },
    /// A node declines a job it cannot take part in (its data does not
    /// match the job's schema); it is not selected for the job again.
    DeclineJob {
        /// The job.
        job: JobId,
        /// The node that declines.
        node: NodeId,
        /// Why, in words (at most [`DECLINE_REASON_BYTES_MAX`] bytes).
        reason: String,
    },
    /// Commit evidence against a node; lowers its reputation.
    RecordEvidence {
        /// The accused node.
        node: NodeId,
        /// What it did.
        kind: EvidenceKind,
    },
    /// Restore a node's reputation and lift its quarantine (admin decision).
    ResetReputation {
        /// The node.
        node: NodeId,
    },
    /// Set a key (benchmarks).
    Put {
        /// Key, at most [`KV_KEY_BYTES_MAX`].
        key: Vec<u8>,
        /// Value, at most [`KV_VALUE_BYTES_MAX`].
        value: Vec<u8>,
    },
    /// Delete a key (benchmarks).
    Delete {
        /// Key, at most [`KV_KEY_BYTES_MAX`].
        key: Vec<u8>,
    },
    /// A proposal that takes effect once however often it is sent
    /// (see [`crate::state::proposals`]).
    Once {
        /// The proposer's session (unique per process start).
        session: u64,
        /// The proposal's number in its session.
        seq: u64,
        /// The command itself; never another `Once` (refused while
        /// decoding, so nesting cannot exhaust the stack).
        #[serde(deserialize_with = "once::inner")]
        command: Box<Command>,
    },
}

impl fmt::Display for Command {
    /// A short name for logs (openraft prints entries); never the payload bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddMember { node, .. } => write!(f, "AddMember({node})"),
            Self::SetRoles { node, .. } => write!(f, "SetRoles({node})"),
            Self::RemoveMember { node } => write!(f, "RemoveMember({node})"),
            Self::RevokeCertificate { .. } => f.write_str("RevokeCertificate"),
            Self::CreateJob { job, .. } => write!(f, "CreateJob({job})"),
            Self::StartRound { job, round, .. } => write!(f, "StartRound({job}, {round})"),
            Self::CompleteRound { job, round, .. } => write!(f, "CompleteRound({job}, {round})"),
            Self::ReassignAggregator {
                job, round, slot, ..
            } => write!(f, "ReassignAggregator({job}, {round}, {slot:?})"),
            Self::AbortRound { job, round } => write!(f, "AbortRound({job}, {round})"),
            Self::StopJob { job, reason } => write!(f, "StopJob({job}, {reason:?})"),
            Self::DeclineJob { job, node, .. } => write!(f, "DeclineJob({job}, {node})"),
            Self::RecordEvidence { node, kind } => write!(f, "RecordEvidence({node}, {kind:?})"),
            Self::ResetReputation { node } => write!(f, "ResetReputation({node})"),
            Self::Put { key, value } => write!(f, "Put({}B, {}B)", key.len(), value.len()),
            Self::Delete { key } => write!(f, "Delete({}B)", key.len()),
            Self::Once { seq, command, .. } => write!(f, "Once({seq}, {command})"),
        }
    }
}

impl Command {
    /// Encodes the command for the log (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Every field is plain data that postcard supports, so this cannot fail.
        #[allow(clippy::expect_used)]
        postcard::to_allocvec(self).expect("a command always serializes")
    }

    /// Decodes a command from log bytes, refusing more than [`COMMAND_BYTES_MAX`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandDecodeError> {
        if bytes.len() > COMMAND_BYTES_MAX {
            return Err(CommandDecodeError::TooLarge {
                len_bytes: bytes.len(),
                max_bytes: COMMAND_BYTES_MAX,
            });
        }
        postcard::from_bytes(bytes).map_err(|e| CommandDecodeError::Malformed(e.to_string()))
    }

    /// Checks everything that can be judged from the command alone.
    pub fn validate(&self) -> Result<(), ApplyError> {
        match self {
            Self::AddMember { node, roles, zone } => {
                check_name("node id", &node.0)?;
                check_roles(roles)?;
                zone.as_deref().map_or(Ok(()), |z| check_name("zone", z))
            }
            Self::SetRoles { node, roles } => {
                check_name("node id", &node.0)?;
                check_roles(roles)
            }
            Self::RemoveMember { node }
            | Self::RecordEvidence { node, .. }
            | Self::ResetReputation { node } => check_name("node id", &node.0),
            Self::RevokeCertificate { revocation, .. } => {
                check_serial(&revocation.entry.serial)?;
                let reason_bytes = revocation.entry.reason.len();
                check_len("revocation reason", reason_bytes, REASON_BYTES_MAX)
            }
            Self::CreateJob { job, spec } => {
                check_name("job id", &job.0)?;
                check_spec(spec)
            }
            Self::StartRound {
                job,
                participants,
                plan,
                ..
            } => {
                check_name("job id", &job.0)?;
                check_participants(participants)?;
                check_plan(plan, participants)
            }
            Self::CompleteRound {
                job,
                metrics,
                inputs,
                evidence,
                ..
            } => {
                check_name("job id", &job.0)?;
                check_metrics(metrics)?;
                check_len("group inputs", inputs.len(), PARTICIPANTS_MAX as usize)?;
                check_len("evidence", evidence.len(), PARTICIPANTS_MAX as usize)?;
                evidence
                    .iter()
                    .try_for_each(|(node, _)| check_name("node id", &node.0))
            }
            Self::ReassignAggregator { job, node, .. } => {
                check_name("job id", &job.0)?;
                check_name("node id", &node.0)
            }
            Self::AbortRound { job, .. } | Self::StopJob { job, .. } => {
                check_name("job id", &job.0)
            }
            Self::DeclineJob { job, node, reason } => {
                check_name("job id", &job.0)?;
                check_name("node id", &node.0)?;
                check_len("decline reason", reason.len(), DECLINE_REASON_BYTES_MAX)
            }
            Self::Put { key, value } => {
                check_len("key", key.len(), KV_KEY_BYTES_MAX)?;
                check_len("value", value.len(), KV_VALUE_BYTES_MAX)
            }
            Self::Delete { key } => check_len("key", key.len(), KV_KEY_BYTES_MAX),
            Self::Once { command, .. } if matches!(**command, Self::Once { .. }) => {
                Err(invalid("a Once proposal cannot wrap another"))
            }
            Self::Once { command, .. } => command.validate(),
        }
    }
}

fn invalid(reason: impl Into<String>) -> ApplyError {
    ApplyError::Invalid(reason.into())
}

fn check_len(what: &str, len_bytes: usize, max_bytes: usize) -> Result<(), ApplyError> {
    if len_bytes > max_bytes {
        return Err(invalid(format!(
            "{what} is {len_bytes} bytes, more than the limit of {max_bytes}"
        )));
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> Result<(), ApplyError> {
    if name.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    check_len(what, name.len(), NAME_BYTES_MAX)
}

fn check_roles(roles: &BTreeSet<Role>) -> Result<(), ApplyError> {
    if roles.is_empty() {
        return Err(invalid("a member needs at least one role"));
    }
    Ok(())
}

fn check_serial(serial: &[u8]) -> Result<(), ApplyError> {
    if serial.is_empty() {
        return Err(invalid("certificate serial is empty"));
    }
    check_len("certificate serial", serial.len(), SERIAL_BYTES_MAX)
}

fn check_spec(spec: &JobSpec) -> Result<(), ApplyError> {
    spec.model
        .check_bounds()
        .map_err(|e| invalid(e.to_string()))?;
    if let Some(schema) = &spec.training.schema {
        schema.validate().map_err(|e| invalid(e.to_string()))?;
    }
    check_name("rule name", &spec.rule_name)?;
    check_name("pre-aggregation", &spec.pre_aggregation)?;
    check_name("server optimizer", &spec.server_optimizer)?;
    if let Some(problem) = spec
        .initial_model
        .as_ref()
        .and_then(|m| m.holders_problem())
    {
        return Err(invalid(format!("initial model: {problem}")));
    }
    if spec.rounds == 0 || spec.rounds > ROUNDS_MAX {
        return Err(invalid(format!(
            "rounds must be in 1..={ROUNDS_MAX}, got {}",
            spec.rounds
        )));
    }
    let n = spec.participants_per_round;
    if n == 0 || n > PARTICIPANTS_MAX {
        return Err(invalid(format!(
            "participants per round must be in 1..={PARTICIPANTS_MAX}, got {n}"
        )));
    }
    if u64::from(spec.byzantine_count) * 2 >= u64::from(n) {
        return Err(invalid(format!(
            "{} Byzantine of {n} participants leaves no honest majority",
            spec.byzantine_count
        )));
    }
    check_training(&spec.training)?;
    match spec.dp_budget {
        Some(b) if !(b.delta > 0.0 && b.delta < 1.0) => Err(invalid(format!(
            "DP delta must be in (0, 1), got {}",
            b.delta
        ))),
        Some(b) if b.epsilon_micros == 0 => Err(invalid("DP epsilon budget is zero")),
        _ => Ok(()),
    }
}

fn check_training(t: &TrainingSpec) -> Result<(), ApplyError> {
    check_name("dataset", &t.dataset)?;
    if t.epochs == 0 || t.epochs > 1000 || t.batch_size == 0 {
        return Err(invalid(
            "epochs must be in 1..=1000 and batch size at least 1",
        ));
    }
    if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
        return Err(invalid("learning rate must be positive"));
    }
    if !(t.proximal_mu.is_finite() && t.proximal_mu >= 0.0) {
        return Err(invalid("proximal mu must be finite and >= 0"));
    }
    if !(t.clip_norm.is_finite() && t.clip_norm > 0.0) {
        return Err(invalid("clip norm must be positive"));
    }
    if !(t.noise_multiplier.is_finite() && t.noise_multiplier >= 0.0) {
        return Err(invalid("noise multiplier must be finite and not negative"));
    }
    if !(t.sampling_rate > 0.0 && t.sampling_rate <= 1.0) {
        return Err(invalid("sampling rate must be in (0, 1]"));
    }
    if t.group_size == 0 || t.round_deadline_ms == 0 {
        return Err(invalid(
            "group size and the round deadline must be positive",
        ));
    }
    Ok(())
}

fn check_participants(participants: &BTreeSet<NodeId>) -> Result<(), ApplyError> {
    if participants.is_empty() {
        return Err(invalid("a round needs at least one participant"));
    }
    let max = PARTICIPANTS_MAX as usize;
    if participants.len() > max {
        return Err(invalid(format!(
            "{} participants, more than the limit of {max}",
            participants.len()
        )));
    }
    participants
        .iter()
        .try_for_each(|p| check_name("participant id", &p.0))
}

/// A plan's groups partition the participants exactly; aggregators are
/// named, and the final ones are distinct.
fn check_plan(plan: &RoundPlan, participants: &BTreeSet<NodeId>) -> Result<(), ApplyError> {
    if plan.aggregators.is_empty() || plan.groups.is_empty() {
        return Err(invalid(
            "a round plan needs at least one group and one aggregator",
        ));
    }
    let finals: BTreeSet<&NodeId> = plan.aggregators.iter().collect();
    if finals.len() != plan.aggregators.len() {
        return Err(invalid("final aggregators must be distinct"));
    }
    let mut seen = BTreeSet::new();
    for group in &plan.groups {
        check_name("group aggregator id", &group.aggregator.0)?;
        for member in &group.members {
            if !participants.contains(member) || !seen.insert(member) {
                return Err(invalid(format!(
                    "group member {member} is not a participant or is in two groups"
                )));
            }
        }
    }
    if seen.len() != participants.len() {
        return Err(invalid("every participant must be in a group"));
    }
    plan.aggregators
        .iter()
        .try_for_each(|a| check_name("aggregator id", &a.0))
}

fn check_metrics(m: &RoundMetrics) -> Result<(), ApplyError> {
    if !(0.0..=1.0).contains(&m.accuracy) {
        return Err(invalid(format!(
            "accuracy must be in [0, 1], got {}",
            m.accuracy
        )));
    }
    if !(m.loss.is_finite() && m.loss >= 0.0) {
        return Err(invalid(format!(
            "loss must be finite and not negative, got {}",
            m.loss
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Cnn),
            rounds: 3,
            participants_per_round: 5,
            rule_name: "krum".into(),
            pre_aggregation: "none".into(),
            server_optimizer: "sgd".into(),
            byzantine_count: 1,
            secagg: true,
            dp_budget: Some(DpBudget {
                epsilon_micros: 1_000_000,
                delta: 1e-5,
            }),
            training: TrainingSpec::default(),
            initial_model: None,
        }
    }

    #[test]
    fn encode_decode_round_trips() {
        let cmd = Command::CreateJob {
            job: "j1".into(),
            spec: spec(),
        };
        assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
    }

    #[test]
    fn decode_refuses_oversized_input() {
        let bytes = vec![0u8; COMMAND_BYTES_MAX + 1];
        assert!(matches!(
            Command::decode(&bytes),
            Err(CommandDecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn decode_reports_garbage() {
        assert!(matches!(
            Command::decode(&[0xff, 0xff, 0xff]),
            Err(CommandDecodeError::Malformed(_))
        ));
    }

    #[test]
    fn validate_rejects_bad_specs() {
        let mut s = spec();
        s.byzantine_count = 3;
        let cmd = Command::CreateJob {
            job: "j".into(),
            spec: s,
        };
        assert!(matches!(cmd.validate(), Err(ApplyError::Invalid(_))));
        let mut s = spec();
        s.dp_budget = Some(DpBudget {
            epsilon_micros: 1,
            delta: f64::NAN,
        });
        let cmd = Command::CreateJob {
            job: "j".into(),
            spec: s,
        };
        assert!(cmd.validate().is_err());
    }

    #[test]
    fn validate_rejects_empty_roles_and_long_keys() {
        let cmd = Command::AddMember {
            node: "n".into(),
            roles: BTreeSet::new(),
            zone: None,
        };
        assert!(cmd.validate().is_err());
        let cmd = Command::Put {
            key: vec![0; KV_KEY_BYTES_MAX + 1],
            value: vec![],
        };
        assert!(cmd.validate().is_err());
    }

    #[test]
    fn validate_rejects_non_finite_metrics() {
        let cmd = Command::CompleteRound {
            job: "j".into(),
            round: 0,
            model_hash: [0; 32],
            metrics: RoundMetrics {
                accuracy: 0.5,
                loss: f64::INFINITY,
                updates_count: 3,
            },
            privacy_spent_epsilon_micros: 0,
            inputs: Vec::new(),
            evidence: Vec::new(),
        };
        assert!(cmd.validate().is_err());
    }
}
