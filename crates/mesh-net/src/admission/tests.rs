//! Admission tests: every transition, with real certificates from a test CA.
#![allow(clippy::unwrap_used)]

use mesh_security::ca::{ca_pin, MeshCa, RevocationEntry};
use mesh_security::rbac::{Role, RoleSet};
use mesh_security::NodeIdentity;

use super::*;

const T0_S: i64 = 1_800_000_000;
const DAY_S: i64 = 86_400;
const T0_MS: u64 = 1_800_000_000_000;
const TIMEOUT_MS: u64 = 5_000;
const ATTEMPTS: u32 = 3;

fn ca_with(seed: u8, name: &str) -> MeshCa {
    MeshCa::init(
        NodeIdentity::from_seed(&[seed; 32]),
        name,
        T0_S - DAY_S,
        T0_S + 365 * DAY_S,
        [seed; 16],
    )
    .unwrap()
}

fn ca() -> MeshCa {
    ca_with(100, "test mesh CA")
}

fn node(seed: u8) -> NodeIdentity {
    NodeIdentity::from_seed(&[seed; 32])
}

fn issue(ca: &MeshCa, who: &NodeIdentity, serial: u8) -> Vec<u8> {
    ca.issue(
        &who.verifying_key(),
        RoleSet::of(&[Role::Trainer]),
        T0_S,
        T0_S + 30 * DAY_S,
        [serial; 16],
    )
    .unwrap()
    .der
}

fn admission(ca: &MeshCa, peers_max: usize) -> Admission {
    let verifier = CertVerifier::new(ca.cert_der().to_vec(), &ca_pin(ca.cert_der())).unwrap();
    Admission::new(
        verifier,
        AdmissionConfig {
            cert_timeout_ms: TIMEOUT_MS,
            cert_attempts_max: ATTEMPTS,
            peers_max,
        },
    )
}

fn rejected_with(verdict: Verdict) -> RejectReason {
    match verdict {
        Verdict::Rejected { reason, .. } => reason,
        Verdict::Admitted => panic!("expected a rejection"),
    }
}

fn revoke(ca: &MeshCa, who: &NodeIdentity, serial: u8) -> SignedRevocation {
    let serial = mesh_security::ca::CertInfo::parse(&issue(ca, who, serial))
        .unwrap()
        .serial;
    let entry = RevocationEntry {
        serial,
        node_id: who.node_id(),
        revoked_at_unix_s: T0_S + 10,
        reason: "key compromised".into(),
    };
    SignedRevocation::sign(ca.identity(), entry).unwrap()
}

#[test]
fn connect_waits_for_a_certificate_and_refuses_messages_meanwhile() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let peer = node(1).node_id();
    assert!(!adm.may_process(&peer));
    adm.on_connected(peer, T0_MS).unwrap();
    assert_eq!(
        adm.state(&peer),
        Some(&AdmissionState::AwaitingCertificate {
            deadline_ms: T0_MS + TIMEOUT_MS,
            attempt: 1,
        })
    );
    assert!(!adm.may_process(&peer));
    assert_eq!(adm.next_deadline_ms(), Some(T0_MS + TIMEOUT_MS));
}

#[test]
fn a_valid_certificate_admits() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let who = node(1);
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    let verdict = adm
        .on_certificate(who.node_id(), &issue(&ca, &who, 1), T0_MS + 10)
        .unwrap();
    assert_eq!(verdict, Verdict::Admitted);
    assert!(adm.may_process(&who.node_id()));
    assert_eq!(adm.admitted().count(), 1);
}

#[test]
fn a_certificate_from_another_ca_is_the_wrong_mesh() {
    let ca = ca();
    let other = ca_with(101, "test mesh CA");
    let mut adm = admission(&ca, 8);
    let who = node(1);
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    let verdict = adm
        .on_certificate(who.node_id(), &issue(&other, &who, 1), T0_MS)
        .unwrap();
    assert_eq!(rejected_with(verdict), RejectReason::WrongMesh);
    assert!(!adm.may_process(&who.node_id()));
}

#[test]
fn a_self_signed_certificate_is_the_wrong_mesh() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let who = node(1);
    let own = MeshCa::init(who.clone(), "my own", T0_S - 1, T0_S + DAY_S, [3; 16]).unwrap();
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    let verdict = adm
        .on_certificate(who.node_id(), own.cert_der(), T0_MS)
        .unwrap();
    assert_eq!(rejected_with(verdict), RejectReason::WrongMesh);
}

#[test]
fn a_certificate_for_another_key_is_a_key_mismatch() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let (peer, owner) = (node(1), node(2));
    adm.on_connected(peer.node_id(), T0_MS).unwrap();
    let verdict = adm
        .on_certificate(peer.node_id(), &issue(&ca, &owner, 1), T0_MS)
        .unwrap();
    assert_eq!(rejected_with(verdict), RejectReason::KeyMismatch);
}

#[test]
fn a_revoked_certificate_is_refused() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let who = node(1);
    assert!(adm.on_revocation(&revoke(&ca, &who, 1)).unwrap().is_empty());
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    let verdict = adm
        .on_certificate(who.node_id(), &issue(&ca, &who, 1), T0_MS)
        .unwrap();
    assert_eq!(rejected_with(verdict), RejectReason::Revoked);
}

#[test]
fn garbage_and_oversized_certificates_are_invalid() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let (a, b) = (node(1).node_id(), node(2).node_id());
    adm.on_connected(a, T0_MS).unwrap();
    adm.on_connected(b, T0_MS).unwrap();
    let garbage = adm.on_certificate(a, b"not a certificate", T0_MS).unwrap();
    assert_eq!(rejected_with(garbage), RejectReason::Invalid);
    let huge = vec![0x30; CERT_BYTES_MAX + 1];
    let oversized = adm.on_certificate(b, &huge, T0_MS).unwrap();
    assert_eq!(rejected_with(oversized), RejectReason::Invalid);
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let (a, b) = (node(1), node(2));
    let late_ms = T0_MS + 31 * 86_400_000;
    adm.on_connected(a.node_id(), late_ms).unwrap();
    let verdict = adm
        .on_certificate(a.node_id(), &issue(&ca, &a, 1), late_ms)
        .unwrap();
    assert_eq!(rejected_with(verdict), RejectReason::Expired);
    let early_ms = T0_MS - 1_000;
    adm.on_connected(b.node_id(), early_ms).unwrap();
    let verdict = adm
        .on_certificate(b.node_id(), &issue(&ca, &b, 2), early_ms)
        .unwrap();
    assert_eq!(rejected_with(verdict), RejectReason::NotYetValid);
}

#[test]
fn no_certificate_is_missing() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let peer = node(1).node_id();
    adm.on_connected(peer, T0_MS).unwrap();
    let verdict = adm.on_no_certificate(peer).unwrap();
    assert_eq!(rejected_with(verdict), RejectReason::Missing);
}

/// Polls at every deadline of `peer`'s exchange until it is refused; returns
/// the retries seen on the way.
fn poll_until_refused(adm: &mut Admission, peer: NodeId) -> (Vec<Retry>, Rejection) {
    let mut retries = Vec::new();
    for _ in 0..=ATTEMPTS {
        let Some(deadline_ms) = adm.next_deadline_ms() else {
            break;
        };
        assert!(
            adm.poll(deadline_ms - 1) == Due::default(),
            "the deadline is exclusive"
        );
        let mut due = adm.poll(deadline_ms);
        retries.append(&mut due.retries);
        if let Some(rejection) = due.rejections.pop() {
            return (retries, rejection);
        }
    }
    panic!("{peer} was never refused");
}

/// Regression: a certificate exchange that missed its deadline
/// while five nodes started on two cores got a legitimate peer banned for a
/// minute. It is now tried again with a doubled deadline, and a timeout on
/// the last attempt disconnects without a ban.
#[test]
fn a_slow_exchange_is_retried_with_backoff_before_a_timeout_that_does_not_ban() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let peer = node(1).node_id();
    adm.on_connected(peer, T0_MS).unwrap();
    let (retries, rejection) = poll_until_refused(&mut adm, peer);
    let second_ms = T0_MS + TIMEOUT_MS;
    let third_ms = second_ms + 2 * TIMEOUT_MS;
    assert_eq!(
        retries,
        vec![
            Retry {
                peer,
                attempt: 2,
                deadline_ms: third_ms,
            },
            Retry {
                peer,
                attempt: 3,
                deadline_ms: third_ms + 4 * TIMEOUT_MS,
            },
        ]
    );
    assert_eq!(
        rejection,
        Rejection {
            peer,
            reason: RejectReason::Timeout
        }
    );
    assert!(!rejection.reason.bans(), "slow is not hostile");
    assert_eq!(adm.poll(u64::MAX), Due::default(), "reported once");
    assert_eq!(adm.next_deadline_ms(), None);
}

#[test]
fn a_certificate_after_the_first_deadline_still_admits() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let who = node(1);
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    let due = adm.poll(T0_MS + TIMEOUT_MS);
    assert_eq!(due.retries.len(), 1);
    let late_ms = T0_MS + 2 * TIMEOUT_MS;
    let verdict = adm
        .on_certificate(who.node_id(), &issue(&ca, &who, 1), late_ms)
        .unwrap();
    assert_eq!(verdict, Verdict::Admitted);
    assert!(adm.may_process(&who.node_id()));
}

#[test]
fn only_a_certificate_that_failed_verification_bans() {
    let banning: Vec<RejectReason> = RejectReason::ALL
        .into_iter()
        .filter(|reason| reason.bans())
        .collect();
    assert_eq!(
        banning,
        [
            RejectReason::Invalid,
            RejectReason::WrongMesh,
            RejectReason::KeyMismatch,
            RejectReason::Expired,
            RejectReason::NotYetValid,
            RejectReason::Revoked,
        ]
    );
}

#[test]
fn attempt_timeouts_double_and_saturate() {
    let config = AdmissionConfig {
        cert_timeout_ms: 1_000,
        cert_attempts_max: 3,
        peers_max: 1,
    };
    assert_eq!(config.attempt_timeout_ms(1), 1_000);
    assert_eq!(config.attempt_timeout_ms(3), 4_000);
    assert_eq!(config.wait_total_ms(), 7_000);
    let huge = AdmissionConfig {
        cert_timeout_ms: u64::MAX / 2,
        cert_attempts_max: u32::MAX,
        peers_max: 1,
    };
    assert_eq!(huge.attempt_timeout_ms(u32::MAX), u64::MAX);
}

#[test]
fn a_revocation_learned_later_rejects_the_admitted_peer() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let (a, b) = (node(1), node(2));
    for (who, serial) in [(&a, 1), (&b, 2)] {
        adm.on_connected(who.node_id(), T0_MS).unwrap();
        let cert = issue(&ca, who, serial);
        assert_eq!(
            adm.on_certificate(who.node_id(), &cert, T0_MS).unwrap(),
            Verdict::Admitted
        );
    }
    let rejected = adm.on_revocation(&revoke(&ca, &a, 1)).unwrap();
    assert_eq!(
        rejected,
        vec![Rejection {
            peer: a.node_id(),
            reason: RejectReason::Revoked
        }]
    );
    assert!(!adm.may_process(&a.node_id()));
    assert!(adm.may_process(&b.node_id()));
    assert_eq!(adm.revocations().len(), 1);
}

#[test]
fn a_revocation_not_signed_by_the_ca_is_refused() {
    let ca = ca();
    let other = ca_with(101, "other");
    let mut adm = admission(&ca, 8);
    let err = adm.on_revocation(&revoke(&other, &node(1), 1)).unwrap_err();
    assert!(matches!(err, AdmissionError::BadRevocation(_)), "{err}");
    assert!(adm.revocations().is_empty());
}

#[test]
fn an_admitted_peer_is_rejected_when_its_certificate_expires() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let who = node(1);
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    adm.on_certificate(who.node_id(), &issue(&ca, &who, 1), T0_MS)
        .unwrap();
    let expiry_ms = adm.next_deadline_ms().unwrap();
    assert_eq!(adm.poll(expiry_ms - 1), Due::default());
    let rejected = adm.poll(expiry_ms).rejections;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, RejectReason::Expired);
    assert!(rejected[0].reason.bans());
}

#[test]
fn an_admitted_peer_renewing_with_a_bad_certificate_is_rejected() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let who = node(1);
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    adm.on_certificate(who.node_id(), &issue(&ca, &who, 1), T0_MS)
        .unwrap();
    let renewed = adm
        .on_certificate(who.node_id(), &issue(&ca, &who, 2), T0_MS + 1)
        .unwrap();
    assert_eq!(renewed, Verdict::Admitted);
    let bad = adm
        .on_certificate(who.node_id(), &issue(&ca, &node(2), 3), T0_MS + 2)
        .unwrap();
    assert_eq!(rejected_with(bad), RejectReason::KeyMismatch);
    let again = adm
        .on_certificate(who.node_id(), &issue(&ca, &who, 4), T0_MS + 3)
        .unwrap();
    assert_eq!(
        rejected_with(again),
        RejectReason::KeyMismatch,
        "stays rejected"
    );
}

#[test]
fn reconnecting_after_rejection_starts_over_and_a_second_connection_keeps_state() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let who = node(1);
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    adm.on_no_certificate(who.node_id()).unwrap();
    adm.on_connected(who.node_id(), T0_MS + 100).unwrap();
    assert!(matches!(
        adm.state(&who.node_id()),
        Some(AdmissionState::AwaitingCertificate { .. })
    ));
    adm.on_certificate(who.node_id(), &issue(&ca, &who, 1), T0_MS + 200)
        .unwrap();
    adm.on_connected(who.node_id(), T0_MS + 300).unwrap();
    assert!(adm.may_process(&who.node_id()));
}

#[test]
fn disconnecting_forgets_and_unknown_peers_are_errors() {
    let ca = ca();
    let mut adm = admission(&ca, 8);
    let who = node(1);
    adm.on_connected(who.node_id(), T0_MS).unwrap();
    adm.on_disconnected(&who.node_id());
    assert!(adm.is_empty());
    let err = adm
        .on_certificate(who.node_id(), &issue(&ca, &who, 1), T0_MS)
        .unwrap_err();
    assert_eq!(
        err,
        AdmissionError::UnknownPeer {
            peer: who.node_id()
        }
    );
    assert!(adm.on_no_certificate(who.node_id()).is_err());
}

#[test]
fn the_table_is_bounded() {
    let ca = ca();
    let mut adm = admission(&ca, 2);
    adm.on_connected(node(1).node_id(), T0_MS).unwrap();
    adm.on_connected(node(2).node_id(), T0_MS).unwrap();
    let err = adm.on_connected(node(3).node_id(), T0_MS).unwrap_err();
    assert_eq!(err, AdmissionError::Full { peers_max: 2 });
    adm.on_connected(node(2).node_id(), T0_MS).unwrap();
    assert_eq!(adm.len(), 2);
}

#[test]
fn labels_are_stable_and_distinct() {
    let labels: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "missing",
            "timeout",
            "invalid",
            "wrong_mesh",
            "key_mismatch",
            "expired",
            "not_yet_valid",
            "revoked"
        ]
    );
    assert_eq!(RejectReason::WrongMesh.to_string(), "wrong_mesh");
}

mod garbage {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn arbitrary_bytes_never_admit(bytes in prop::collection::vec(any::<u8>(), 0..2_048)) {
            let ca = ca();
            let mut adm = admission(&ca, 4);
            let peer = node(1).node_id();
            adm.on_connected(peer, T0_MS).unwrap();
            let verdict = adm.on_certificate(peer, &bytes, T0_MS).unwrap();
            prop_assert_ne!(verdict, Verdict::Admitted);
            prop_assert!(!adm.may_process(&peer));
        }
    }
}
