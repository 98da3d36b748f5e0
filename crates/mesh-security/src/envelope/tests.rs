//! Tests of envelope sealing, verification and bounded decoding.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

const MESH: MeshId = MeshId([1; 16]);
const NOW_MS: u64 = 1_800_000_000_000;

fn identity() -> NodeIdentity {
    NodeIdentity::from_seed(&[42; 32])
}

fn sealed(seq: u64, timestamp_ms: u64, payload: Vec<u8>) -> Envelope {
    Envelope::seal(
        &identity(),
        MESH,
        MessageKind(7),
        seq,
        timestamp_ms,
        payload,
    )
    .unwrap()
}

fn verifier() -> EnvelopeVerifier {
    EnvelopeVerifier::new(
        MESH,
        EnvelopeLimits {
            envelope_size_bytes_max: 1024,
            ..Default::default()
        },
    )
}

#[test]
fn a_fresh_envelope_round_trips_and_verifies() {
    let env = sealed(1, NOW_MS, b"hello".to_vec());
    let bytes = env.encode().unwrap();
    assert!(bytes.len() <= 5 + ENVELOPE_OVERHEAD_BYTES_MAX);
    let opened = verifier().open(&bytes, NOW_MS).unwrap();
    assert_eq!(opened, env);
    assert_eq!(opened.header.sender, identity().node_id());
}

#[test]
fn a_changed_payload_is_a_bad_signature() {
    let mut env = sealed(1, NOW_MS, b"hello".to_vec());
    env.payload[0] ^= 1;
    assert!(matches!(
        verifier().verify(&env, NOW_MS),
        Err(EnvelopeError::BadSignature(_))
    ));
}

#[test]
fn a_changed_header_field_is_a_bad_signature() {
    let mut env = sealed(1, NOW_MS, b"x".to_vec());
    env.header.kind = MessageKind(8);
    assert!(matches!(
        verifier().verify(&env, NOW_MS),
        Err(EnvelopeError::BadSignature(_))
    ));
    let mut env = sealed(1, NOW_MS, b"x".to_vec());
    env.header.sender = NodeIdentity::from_seed(&[43; 32]).node_id();
    assert!(matches!(
        verifier().verify(&env, NOW_MS),
        Err(EnvelopeError::BadSignature(_))
    ));
}

#[test]
fn another_mesh_is_refused() {
    let env = Envelope::seal(
        &identity(),
        MeshId([2; 16]),
        MessageKind(7),
        1,
        NOW_MS,
        vec![],
    )
    .unwrap();
    assert!(matches!(
        verifier().verify(&env, NOW_MS),
        Err(EnvelopeError::WrongMesh { .. })
    ));
}

#[test]
fn a_version_below_the_oldest_accepted_is_refused() {
    let mut env = sealed(1, NOW_MS, vec![]);
    env.header.version = PROTOCOL_VERSION_MIN - 1;
    assert!(matches!(
        verifier().verify(&env, NOW_MS),
        Err(EnvelopeError::UnsupportedVersion { got: 0, .. })
    ));
}

#[test]
fn another_version_is_refused() {
    let mut env = sealed(1, NOW_MS, vec![]);
    env.header.version = PROTOCOL_VERSION + 1;
    let err = verifier().verify(&env, NOW_MS).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::UnsupportedVersion {
            got: 2,
            supported: 1
        }
    );
}

#[test]
fn timestamps_outside_the_skew_are_refused_on_both_sides() {
    let skew = EnvelopeLimits::default().clock_skew_ms_max;
    let mut v = verifier();
    assert!(matches!(
        v.verify(&sealed(1, NOW_MS - skew - 1, vec![]), NOW_MS),
        Err(EnvelopeError::ClockSkew { .. })
    ));
    assert!(matches!(
        v.verify(&sealed(2, NOW_MS + skew + 1, vec![]), NOW_MS),
        Err(EnvelopeError::ClockSkew { .. })
    ));
    v.verify(&sealed(3, NOW_MS - skew, vec![]), NOW_MS).unwrap();
}

#[test]
fn an_oversized_envelope_is_refused_before_decoding() {
    let env = sealed(1, NOW_MS, vec![0; 2000]);
    let bytes = env.encode().unwrap();
    assert!(matches!(
        verifier().open(&bytes, NOW_MS),
        Err(EnvelopeError::TooLarge { .. })
    ));
}

#[test]
fn replays_are_refused_and_out_of_order_within_the_window_accepted() {
    let mut v = verifier();
    v.verify(&sealed(10, NOW_MS, vec![]), NOW_MS).unwrap();
    assert!(matches!(
        v.verify(&sealed(10, NOW_MS, vec![]), NOW_MS),
        Err(EnvelopeError::Replay { seq: 10, .. })
    ));
    v.verify(&sealed(5, NOW_MS, vec![]), NOW_MS).unwrap();
    assert!(matches!(
        v.verify(&sealed(5, NOW_MS, vec![]), NOW_MS),
        Err(EnvelopeError::Replay { .. })
    ));
    v.verify(&sealed(10 + REPLAY_WINDOW + 5, NOW_MS, vec![]), NOW_MS)
        .unwrap();
    // Now 10 is more than a window behind: refused as too old.
    assert!(matches!(
        v.verify(&sealed(9, NOW_MS, vec![]), NOW_MS),
        Err(EnvelopeError::Replay { .. })
    ));
    v.verify(&sealed(10 + REPLAY_WINDOW + 4, NOW_MS, vec![]), NOW_MS)
        .unwrap();
}

#[test]
fn a_forged_message_does_not_advance_the_window() {
    let mut v = verifier();
    let mut forged = sealed(100, NOW_MS, vec![]);
    forged.payload.push(1);
    assert!(v.verify(&forged, NOW_MS).is_err());
    v.verify(&sealed(1, NOW_MS, vec![]), NOW_MS).unwrap();
}

#[test]
fn tracked_senders_stay_bounded() {
    let limits = EnvelopeLimits {
        tracked_senders_max: 3,
        ..Default::default()
    };
    let mut v = EnvelopeVerifier::new(MESH, limits);
    for i in 0..10u8 {
        let id = NodeIdentity::from_seed(&[i; 32]);
        let env = Envelope::seal(&id, MESH, MessageKind(1), 1, NOW_MS, vec![]).unwrap();
        v.verify(&env, NOW_MS + u64::from(i)).unwrap();
        assert!(v.tracked_senders() <= 3);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = verifier().open(&bytes, NOW_MS);
    }

    #[test]
    fn decoding_mutated_envelopes_never_panics_nor_accepts_changes(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        flip_at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let bytes = sealed(1, NOW_MS, payload).encode().unwrap();
        let mut mutated = bytes.clone();
        let i = flip_at.index(mutated.len());
        mutated[i] ^= flip;
        // A changed byte may still decode, but must never verify.
        prop_assert!(verifier().open(&mutated, NOW_MS).is_err());
    }

    #[test]
    fn huge_declared_lengths_are_refused_without_allocating(len in 1_000_000u32..u32::MAX) {
        // A valid header followed by a payload length far beyond the input.
        let mut bytes = sealed(1, NOW_MS, vec![]).encode().unwrap();
        let header_len = postcard::to_allocvec(&sealed(1, NOW_MS, vec![]).header).unwrap().len();
        bytes.truncate(header_len);
        let mut varint = [0u8; 5];
        let encoded = postcard::to_slice(&len, &mut varint).unwrap();
        bytes.extend_from_slice(encoded);
        prop_assert!(matches!(verifier().open(&bytes, NOW_MS), Err(EnvelopeError::Malformed(_))));
    }
}
