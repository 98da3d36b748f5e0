//! Unit tests for [`MeshState::apply`]: each concept, the cross-checks between
//! them, and that a rejection leaves the state untouched.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use super::*;
use crate::command::{DpBudget, JobSpec, RevocationReason, RoundMetrics};

fn add(node: &str, roles: &[Role]) -> Command {
    Command::AddMember {
        node: node.into(),
        roles: roles.iter().copied().collect(),
        zone: None,
    }
}

fn spec(rounds: u32, budget_epsilon_micros: Option<u64>) -> JobSpec {
    JobSpec {
        model: mesh_spec::ModelSpec::Preset(mesh_spec::Preset::Cnn),
        rounds,
        participants_per_round: 3,
        rule_name: "fedavg".into(),
        pre_aggregation: "none".into(),
        server_optimizer: "sgd".into(),
        byzantine_count: 0,
        secagg: false,
        dp_budget: budget_epsilon_micros.map(|e| DpBudget {
            epsilon_micros: e,
            delta: 1e-5,
        }),
        training: crate::command::TrainingSpec::default(),
        initial_model: None,
    }
}

fn start(round: u32, participants: &[&str]) -> Command {
    Command::StartRound {
        job: "j".into(),
        round,
        model_hash: [round as u8; 32],
        participants: participants.iter().map(|p| NodeId::from(*p)).collect(),
        deadline_unix_ms: 1_000,
        plan: crate::command::RoundPlan {
            groups: vec![crate::command::GroupPlan {
                aggregator: NodeId::from(participants[0]),
                members: participants.iter().map(|p| NodeId::from(*p)).collect(),
            }],
            aggregators: vec![NodeId::from(participants[0])],
        },
    }
}

fn complete(round: u32, spent_epsilon_micros: u64) -> Command {
    Command::CompleteRound {
        job: "j".into(),
        round,
        model_hash: [100 + round as u8; 32],
        metrics: RoundMetrics {
            accuracy: 0.9,
            loss: 0.3,
            updates_count: 2,
        },
        privacy_spent_epsilon_micros: spent_epsilon_micros,
        inputs: Vec::new(),
        evidence: Vec::new(),
    }
}

/// Applies `cmds` at indices 1, 2, ...; panics on any rejection.
fn applied(cmds: &[Command]) -> MeshState {
    let mut s = MeshState::new();
    for (i, c) in cmds.iter().enumerate() {
        s.apply(i as u64 + 1, c).unwrap();
    }
    s
}

/// Asserts that `cmd` is rejected at the next index and nothing changes.
fn assert_rejected(s: &mut MeshState, cmd: &Command) -> ApplyError {
    let before = s.clone();
    let next = s.last_applied().map_or(0, |i| i + 1);
    let err = s.apply(next, cmd).unwrap_err();
    assert_eq!(*s, before, "rejected {cmd:?} changed the state");
    err
}

#[test]
fn index_must_increase() {
    let mut s = applied(&[add("a", &[Role::Trainer])]);
    let err = s.apply(1, &add("b", &[Role::Trainer])).unwrap_err();
    assert!(matches!(err, ApplyError::IndexNotIncreasing { .. }));
    assert!(err.is_permanent());
    s.apply(7, &add("b", &[Role::Trainer])).unwrap();
    assert_eq!(s.last_applied(), Some(7));
}

#[test]
fn hash_changes_with_each_entry_and_not_on_rejection() {
    let mut s = MeshState::new();
    assert_eq!(s.state_hash(), StateHash::default());
    s.apply(0, &add("a", &[Role::Admin])).unwrap();
    let h1 = s.state_hash();
    assert_ne!(h1, StateHash::default());
    assert_rejected(&mut s, &add("a", &[Role::Admin]));
    assert_eq!(s.state_hash(), h1);
}

#[test]
fn membership_and_revocation() {
    let mut s = applied(&[
        add("a", &[Role::Trainer, Role::Aggregator]),
        Command::SetRoles {
            node: "a".into(),
            roles: BTreeSet::from([Role::Aggregator, Role::Observer]),
        },
        Command::RevokeCertificate {
            revocation: super::test_revocation(&[7]),
            reason: RevocationReason::Superseded,
        },
    ]);
    assert!(s
        .members()
        .get(&"a".into())
        .unwrap()
        .roles
        .contains(&Role::Aggregator));
    let again = Command::RevokeCertificate {
        revocation: super::test_revocation(&[7]),
        reason: RevocationReason::KeyCompromise,
    };
    assert!(matches!(
        assert_rejected(&mut s, &again),
        ApplyError::AlreadyRevoked { .. }
    ));
    let remove_b = Command::RemoveMember { node: "b".into() };
    assert!(matches!(
        assert_rejected(&mut s, &remove_b),
        ApplyError::UnknownMember(_)
    ));
}

#[test]
fn job_runs_rounds_in_order_to_completion() {
    let mut s = applied(&[
        add("a", &[Role::Trainer, Role::Aggregator]),
        add("b", &[Role::Trainer, Role::Aggregator]),
        Command::CreateJob {
            job: "j".into(),
            spec: spec(2, None),
        },
        start(0, &["a", "b"]),
    ]);
    assert!(matches!(
        assert_rejected(&mut s, &start(1, &["a"])),
        ApplyError::RoundOutOfOrder { .. }
    ));
    assert!(matches!(
        assert_rejected(&mut s, &complete(1, 0)),
        ApplyError::RoundOutOfOrder { .. }
    ));
    s.apply(5, &complete(0, 0)).unwrap();
    s.apply(6, &start(1, &["a"])).unwrap();
    let r = s.apply(7, &complete(1, 0)).unwrap();
    assert_eq!(
        r,
        Response::RoundCompleted {
            status: JobStatus::Completed,
            remaining_epsilon_micros: None
        }
    );
    let job = s.jobs().get(&"j".into()).unwrap();
    assert_eq!(job.rounds.len(), 2);
    assert!(s.jobs().model(&[101; 32]).unwrap().aggregated);
    assert!(!s.jobs().model(&[0; 32]).unwrap().aggregated);
    assert_rejected(&mut s, &start(2, &["a"]));
}

#[test]
fn duplicate_and_unknown_jobs_are_rejected() {
    let create = Command::CreateJob {
        job: "j".into(),
        spec: spec(1, None),
    };
    let mut s = applied(std::slice::from_ref(&create));
    assert!(matches!(
        assert_rejected(&mut s, &create),
        ApplyError::JobExists(_)
    ));
    let other = Command::CompleteRound {
        job: "x".into(),
        round: 0,
        model_hash: [0; 32],
        metrics: RoundMetrics {
            accuracy: 0.1,
            loss: 1.0,
            updates_count: 0,
        },
        privacy_spent_epsilon_micros: 0,
        inputs: Vec::new(),
        evidence: Vec::new(),
    };
    assert!(matches!(
        assert_rejected(&mut s, &other),
        ApplyError::UnknownJob(_)
    ));
}

#[test]
fn participants_must_be_eligible_trainers() {
    let mut s = applied(&[
        add("a", &[Role::Trainer, Role::Aggregator]),
        add("o", &[Role::Observer]),
        Command::CreateJob {
            job: "j".into(),
            spec: spec(1, None),
        },
    ]);
    for (who, reason) in [("o", "no trainer role"), ("zz", "not a member")] {
        let err = assert_rejected(&mut s, &start(0, &["a", who]));
        assert_eq!(
            err,
            ApplyError::IneligibleParticipant {
                node: who.into(),
                reason
            }
        );
    }
    assert!(matches!(
        assert_rejected(&mut s, &start(0, &["a", "b", "c", "d"])),
        ApplyError::Invalid(_)
    ));
}

#[test]
fn evidence_quarantines_and_quarantine_blocks_selection() {
    let mut s = applied(&[
        add("a", &[Role::Trainer, Role::Aggregator]),
        Command::CreateJob {
            job: "j".into(),
            spec: spec(1, None),
        },
    ]);
    let evidence = Command::RecordEvidence {
        node: "a".into(),
        kind: EvidenceKind::Equivocation,
    };
    let r = s.apply(3, &evidence).unwrap();
    assert_eq!(
        r,
        Response::Reputation {
            score: 400,
            quarantined: true
        }
    );
    let err = assert_rejected(&mut s, &start(0, &["a"]));
    assert!(matches!(
        err,
        ApplyError::IneligibleParticipant {
            reason: "quarantined",
            ..
        }
    ));
    s.apply(4, &Command::ResetReputation { node: "a".into() })
        .unwrap();
    s.apply(5, &start(0, &["a"])).unwrap();
    let ghost = Command::RecordEvidence {
        node: "ghost".into(),
        kind: EvidenceKind::MissedDeadline,
    };
    assert_rejected(&mut s, &ghost);
}

#[test]
fn privacy_budget_is_enforced_and_exhaustion_stops_the_job() {
    let mut s = applied(&[
        add("a", &[Role::Trainer, Role::Aggregator]),
        Command::CreateJob {
            job: "j".into(),
            spec: spec(5, Some(1_000)),
        },
        start(0, &["a"]),
    ]);
    let err = assert_rejected(&mut s, &complete(0, 1_001));
    assert!(matches!(err, ApplyError::PrivacyBudgetExceeded { .. }));
    assert!(err.is_permanent());
    s.apply(4, &complete(0, 600)).unwrap();
    s.apply(5, &start(1, &["a"])).unwrap();
    let r = s.apply(6, &complete(1, 400)).unwrap();
    assert_eq!(
        r,
        Response::RoundCompleted {
            status: JobStatus::BudgetExhausted,
            remaining_epsilon_micros: Some(0)
        }
    );
    assert_rejected(&mut s, &start(2, &["a"]));
    let account = s.privacy().account(&"j".into()).unwrap();
    assert_eq!(account.spent_epsilon_micros, 1_000);
}

#[test]
fn kv_put_delete() {
    let mut s = MeshState::new();
    let put = |v: &[u8]| Command::Put {
        key: b"k".to_vec(),
        value: v.to_vec(),
    };
    assert_eq!(
        s.apply(1, &put(b"1")).unwrap(),
        Response::Kv { previous: None }
    );
    assert_eq!(
        s.apply(2, &put(b"2")).unwrap(),
        Response::Kv {
            previous: Some(b"1".to_vec())
        }
    );
    let del = Command::Delete { key: b"k".to_vec() };
    assert_eq!(
        s.apply(3, &del).unwrap(),
        Response::Kv {
            previous: Some(b"2".to_vec())
        }
    );
    assert!(s.kv().is_empty());
}

#[test]
fn invalid_commands_are_rejected_before_state_checks() {
    let mut s = MeshState::new();
    let err = assert_rejected(&mut s, &add("", &[Role::Trainer]));
    assert!(matches!(err, ApplyError::Invalid(_)));
    assert!(err.to_string().contains("cannot succeed"));
}

fn once(seq: u64, command: Command) -> Command {
    Command::Once {
        session: 42,
        seq,
        command: Box::new(command),
    }
}

#[test]
fn a_retried_proposal_takes_effect_once() {
    let mut state = MeshState::new();
    state
        .apply(1, &once(0, add("a", &[Role::Trainer])))
        .unwrap();
    // The same proposal again: a no-op that points at the first copy,
    // although AddMember on its own would now be refused as a duplicate.
    let again = state
        .apply(2, &once(0, add("a", &[Role::Trainer])))
        .unwrap();
    assert_eq!(again, Response::AlreadyCommitted { index: 1 });
    assert_eq!(state.members().len(), 1);
    assert_eq!(state.last_applied(), Some(2));
    // A new number is a new proposal.
    assert!(state
        .apply(3, &once(1, add("a", &[Role::Trainer])))
        .is_err());
    state
        .apply(4, &once(2, add("b", &[Role::Trainer])))
        .unwrap();
    assert_eq!(state.members().len(), 2);
    // A rejected proposal is not remembered: the state is unchanged.
    let before = state.clone();
    assert!(state
        .apply(5, &once(1, add("a", &[Role::Trainer])))
        .is_err());
    assert_eq!(state, before);
    // Nesting is refused.
    let nested = once(9, once(8, add("c", &[Role::Trainer])));
    assert!(state.apply(6, &nested).is_err());
}
