//! Property tests: apply is deterministic, snapshots round-trip, and decoding
//! arbitrary bytes never panics.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use mesh_consensus::{
    snapshot, Command, DpBudget, EvidenceKind, JobSpec, MeshState, NodeId, RevocationReason, Role,
    RoundMetrics,
};
use proptest::prelude::*;

fn node() -> impl Strategy<Value = NodeId> {
    (0u8..6).prop_map(|i| NodeId(format!("n{i}")))
}

fn roles() -> impl Strategy<Value = BTreeSet<Role>> {
    prop::collection::btree_set(
        prop::sample::select(vec![
            Role::Admin,
            Role::Committee,
            Role::Aggregator,
            Role::Trainer,
            Role::Observer,
        ]),
        0..3,
    )
}

fn spec() -> impl Strategy<Value = JobSpec> {
    (1u32..4, 1u32..4, prop::option::of(1u64..2_000)).prop_map(|(rounds, n, eps)| JobSpec {
        model: mesh_spec::ModelSpec::default(),
        rounds,
        participants_per_round: n,
        rule_name: "fedavg".into(),
        pre_aggregation: "none".into(),
        server_optimizer: "sgd".into(),
        byzantine_count: 0,
        secagg: false,
        dp_budget: eps.map(|epsilon_micros| DpBudget {
            epsilon_micros,
            delta: 1e-5,
        }),
        training: mesh_consensus::command::TrainingSpec::default(),
        initial_model: None,
    })
}

/// A revocation of serial `[serial]` signed by a fixed CA key.
fn revocation(serial: u8) -> mesh_security::ca::SignedRevocation {
    let ca = mesh_security::identity::NodeIdentity::from_seed(&[3; 32]);
    let entry = mesh_security::ca::RevocationEntry {
        serial: vec![serial],
        node_id: ca.node_id(),
        revoked_at_unix_s: 1,
        reason: "test".into(),
    };
    mesh_security::ca::SignedRevocation::sign(&ca, entry).expect("a small entry encodes")
}

fn command() -> impl Strategy<Value = Command> {
    let job = (0u8..2).prop_map(|i| mesh_consensus::JobId(format!("j{i}")));
    let metrics = (0.0f64..=1.0, 0.0f64..5.0).prop_map(|(accuracy, loss)| RoundMetrics {
        accuracy,
        loss,
        updates_count: 1,
    });
    prop_oneof![
        (node(), roles()).prop_map(|(node, roles)| Command::AddMember {
            node,
            roles,
            zone: None
        }),
        (node(), roles()).prop_map(|(node, roles)| Command::SetRoles { node, roles }),
        node().prop_map(|node| Command::RemoveMember { node }),
        (0u8..4).prop_map(|s| Command::RevokeCertificate {
            revocation: revocation(s),
            reason: RevocationReason::Unspecified
        }),
        (job.clone(), spec()).prop_map(|(job, spec)| Command::CreateJob { job, spec }),
        (
            job.clone(),
            0u32..3,
            prop::collection::btree_set(node(), 1..3)
        )
            .prop_map(|(job, round, participants)| {
                let first = participants.iter().next().cloned();
                let plan = mesh_consensus::command::RoundPlan {
                    groups: vec![mesh_consensus::command::GroupPlan {
                        aggregator: first.clone().unwrap_or_else(|| "a".into()),
                        members: participants.iter().cloned().collect(),
                    }],
                    aggregators: first.into_iter().collect(),
                };
                Command::StartRound {
                    job,
                    round,
                    model_hash: [round as u8; 32],
                    participants,
                    deadline_unix_ms: 5,
                    plan,
                }
            }),
        (job.clone(), 0u32..3).prop_map(|(job, round)| Command::AbortRound { job, round }),
        job.clone().prop_map(|job| Command::StopJob {
            job,
            reason: mesh_consensus::command::StopReason::Cancelled
        }),
        (job, 0u32..3, metrics, 0u64..800).prop_map(|(job, round, metrics, spent)| {
            Command::CompleteRound {
                job,
                round,
                model_hash: [9; 32],
                metrics,
                privacy_spent_epsilon_micros: spent,
                inputs: Vec::new(),
                evidence: Vec::new(),
            }
        }),
        (
            node(),
            prop::sample::select(vec![
                EvidenceKind::Equivocation,
                EvidenceKind::AnomalousUpdate
            ])
        )
            .prop_map(|(node, kind)| Command::RecordEvidence { node, kind }),
        node().prop_map(|node| Command::ResetReputation { node }),
        (
            prop::collection::vec(any::<u8>(), 0..4),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(key, value)| Command::Put { key, value }),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(|key| Command::Delete { key }),
    ]
}

/// Applies every command at indices 1, 2, ...; rejections are expected.
fn run(cmds: &[Command]) -> (MeshState, Vec<bool>) {
    let mut state = MeshState::new();
    let outcomes = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| state.apply(i as u64 + 1, c).is_ok())
        .collect();
    (state, outcomes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn same_commands_give_same_state_hash(cmds in prop::collection::vec(command(), 0..60)) {
        let (a, outcomes_a) = run(&cmds);
        let (b, outcomes_b) = run(&cmds);
        prop_assert_eq!(a.state_hash(), b.state_hash());
        prop_assert_eq!(outcomes_a, outcomes_b);
        prop_assert_eq!(snapshot::encode(&a), snapshot::encode(&b));
    }

    #[test]
    fn snapshot_round_trip_preserves_state_and_hash(cmds in prop::collection::vec(command(), 0..60)) {
        let (state, _) = run(&cmds);
        let restored = snapshot::decode(&snapshot::encode(&state)).unwrap();
        prop_assert_eq!(restored.state_hash(), state.state_hash());
        prop_assert_eq!(&restored, &state);
        // The restored copy keeps evolving exactly like the original.
        let (mut a, mut b) = (state, restored);
        let next = a.last_applied().map_or(0, |i| i + 1);
        let put = Command::Put { key: vec![1], value: vec![2] };
        prop_assert_eq!(a.apply(next, &put), b.apply(next, &put));
        prop_assert_eq!(a.state_hash(), b.state_hash());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = snapshot::decode(&bytes);
        let _ = Command::decode(&bytes);
        let mut framed = snapshot::MAGIC.to_vec();
        framed.extend_from_slice(&snapshot::FORMAT_VERSION.to_le_bytes());
        framed.extend_from_slice(&bytes);
        // A valid checksum, so the garbage reaches the postcard decoder.
        framed.extend_from_slice(&snapshot::digest(&bytes));
        let _ = snapshot::decode(&framed);
    }

    #[test]
    fn rejected_commands_leave_state_unchanged(cmds in prop::collection::vec(command(), 0..60)) {
        let mut state = MeshState::new();
        for (i, c) in cmds.iter().enumerate() {
            let before = state.clone();
            if state.apply(i as u64 + 1, c).is_err() {
                prop_assert_eq!(&state, &before);
            }
        }
    }
}
