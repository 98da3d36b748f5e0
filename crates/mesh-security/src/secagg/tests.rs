//! SecAgg+ end-to-end tests through the in-memory driver: exact sums with and
//! without dropouts, a clear error past the threshold, and rejection of
//! tampered or unsigned messages.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::messages::{decode, encode, Signed, WireBytes};
use super::quantize::{clip, encode_update, rounding_rng, to_signed};
use super::sim::{client_seed, run_round, DropoutPlan};
use super::*;
use crate::identity::NodeIdentity;

fn setup(n: usize, d: usize, modulus: ModulusBits) -> (SecAggParams, Vec<NodeIdentity>) {
    let ids: Vec<NodeIdentity> = (0..n)
        .map(|i| NodeIdentity::from_seed(&[i as u8 + 1; 32]))
        .collect();
    let keys = ids.iter().map(NodeIdentity::verifying_key).collect();
    (
        SecAggParams::new([7; 32], keys, d, 1.0, modulus, [9; 32]).unwrap(),
        ids,
    )
}

fn updates(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..d).map(|_| rng.random_range(-0.8f32..0.8)).collect())
        .collect()
}

/// The exact sum of what the contributors quantized, and the float sum of their clipped inputs.
fn expected(
    params: &SecAggParams,
    updates: &[Vec<f32>],
    contributors: &[u32],
    seed: u64,
) -> (Vec<i64>, Vec<f64>) {
    let mut exact = vec![0i64; params.dimension];
    let mut float = vec![0f64; params.dimension];
    for &u in contributors {
        let mut rng = rounding_rng(&client_seed(seed, u));
        let q = encode_update(&updates[u as usize], params, &mut rng);
        for (i, v) in q.iter().enumerate() {
            exact[i] += to_signed(*v, params);
        }
        for (i, v) in clip(&updates[u as usize], params.clip_norm)
            .iter()
            .enumerate()
        {
            float[i] += v;
        }
    }
    (exact, float)
}

fn check_round(n: usize, d: usize, modulus: ModulusBits, plan: &DropoutPlan, seed: u64) {
    let (params, ids) = setup(n, d, modulus);
    let ups = updates(n, d, seed);
    let report = run_round(&params, &ids, &ups, plan, seed).unwrap();
    let out = report.output.unwrap();
    let gone: BTreeSet<u32> = plan
        .before_advertising
        .iter()
        .chain(&plan.before_sharing)
        .chain(&plan.before_masking)
        .copied()
        .collect();
    let contributors: Vec<u32> = (0..n as u32).filter(|u| !gone.contains(u)).collect();
    assert_eq!(out.contributors, contributors);
    let (exact, float) = expected(&params, &ups, &contributors, seed);
    assert_eq!(out.sum_quantized, exact, "exact quantized sum");
    let bound = params.sum_error_bound(contributors.len());
    for (got, want) in out.sum.iter().zip(&float) {
        assert!(
            (got - want).abs() <= bound,
            "float sum off by {} > {bound}",
            (got - want).abs()
        );
    }
}

fn pick(n: usize, count: usize, seed: u64) -> BTreeSet<u32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut set = BTreeSet::new();
    while set.len() < count {
        set.insert(rng.random_range(0..n as u32));
    }
    set
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sums_are_exact_without_dropouts(n in 3usize..12, d in 1usize..40, seed in any::<u64>(), wide in any::<bool>()) {
        let modulus = if wide { ModulusBits::B64 } else { ModulusBits::B32 };
        check_round(n, d, modulus, &DropoutPlan::default(), seed);
    }

    #[test]
    fn sums_are_exact_with_up_to_k_minus_t_dropouts_after_masking(n in 4usize..12, d in 1usize..20, seed in any::<u64>(), frac in 0.0f64..=1.0) {
        let (params, _) = setup(n, d, ModulusBits::B32);
        let allowed = params.graph.min_degree() - params.threshold;
        let count = (allowed as f64 * frac).round() as usize;
        let plan = DropoutPlan { after_masking: pick(n, count, seed), ..DropoutPlan::default() };
        check_round(n, d, ModulusBits::B32, &plan, seed);
    }

    #[test]
    fn sums_are_exact_when_clients_drop_before_masking(n in 5usize..12, d in 1usize..20, seed in any::<u64>()) {
        let (params, _) = setup(n, d, ModulusBits::B32);
        let allowed = params.graph.min_degree() - params.threshold;
        let both = pick(n, allowed.max(1), seed);
        let mut plan = DropoutPlan::default();
        for (i, u) in both.into_iter().enumerate() {
            if i % 2 == 0 { plan.before_masking.insert(u); } else { plan.after_masking.insert(u); }
        }
        check_round(n, d, ModulusBits::B32, &plan, seed);
    }
}

#[test]
fn a_random_regular_group_survives_k_minus_t_dropouts() {
    let n = 40;
    let (params, _) = setup(n, 8, ModulusBits::B32);
    assert!(
        params.graph.min_degree() < n - 1,
        "large groups use a sparse graph"
    );
    let allowed = params.graph.min_degree() - params.threshold;
    let plan = DropoutPlan {
        before_sharing: pick(n, 1, 1),
        after_masking: pick(n, allowed, 2)
            .into_iter()
            .filter(|u| !pick(n, 1, 1).contains(u))
            .collect(),
        ..DropoutPlan::default()
    };
    check_round(n, 8, ModulusBits::B32, &plan, 3);
}

#[test]
fn too_many_dropouts_is_a_clear_error_never_a_wrong_sum() {
    let n = 8;
    let (params, ids) = setup(n, 5, ModulusBits::B32);
    let allowed = params.graph.min_degree() - params.threshold;
    let plan = DropoutPlan {
        after_masking: pick(n, allowed + 1, 4),
        ..DropoutPlan::default()
    };
    let report = run_round(&params, &ids, &updates(n, 5, 4), &plan, 4).unwrap();
    let err = report.output.unwrap_err();
    assert!(matches!(err, SecAggError::NotEnoughShares { .. }), "{err}");
}

/// `err` says that no client could go on at `step`.
fn assert_no_client_left(err: &SecAggError, step: &str) {
    assert!(
        matches!(err, SecAggError::TooFewClients { stage, alive: 0, .. } if *stage == step),
        "{err}"
    );
}

#[test]
fn clients_left_without_enough_neighbours_fail_the_round_at_advertising() {
    // Three clients: each has two neighbours and needs both, so one silent
    // client leaves the other two unable to share their secrets.
    let n = 3;
    let (params, ids) = setup(n, 4, ModulusBits::B32);
    let mut agg = SecAggAggregator::new(params.clone()).unwrap();
    for i in 0..2 {
        let mut client =
            SecAggClient::new(params.clone(), i, ids[i as usize].clone(), [i as u8; 32]).unwrap();
        agg.receive_advert(client.advertise().unwrap()).unwrap();
    }
    let err = agg.finish_advertising().unwrap_err();
    assert_no_client_left(&err, "advertise");
}

#[test]
fn clients_left_without_enough_shares_fail_the_round_when_sharing_closes() {
    // Three clients all advertise, one never shares: each of the other two
    // would hold one share but needs two, so neither can mask its input.
    let n = 3;
    let (params, ids) = setup(n, 4, ModulusBits::B32);
    let mut clients: Vec<SecAggClient> = (0..n as u32)
        .map(|i| {
            SecAggClient::new(params.clone(), i, ids[i as usize].clone(), [i as u8; 32]).unwrap()
        })
        .collect();
    let mut agg = SecAggAggregator::new(params.clone()).unwrap();
    for c in &mut clients {
        agg.receive_advert(c.advertise().unwrap()).unwrap();
    }
    for (u, keys) in agg.finish_advertising().unwrap() {
        if u != 2 {
            agg.receive_shares(clients[u as usize].share_keys(&keys).unwrap())
                .unwrap();
        }
    }
    let err = agg.finish_sharing().unwrap_err();
    assert_no_client_left(&err, "masked input");
}

/// A round after key sharing: params, identities, clients, aggregator, inboxes.
type Shared = (
    SecAggParams,
    Vec<NodeIdentity>,
    Vec<SecAggClient>,
    SecAggAggregator,
    Vec<(u32, messages::SharesForClient)>,
);

/// Runs rounds 0 and 1 by hand and returns everything needed to go on.
fn through_sharing(n: usize) -> Shared {
    let (params, ids) = setup(n, 4, ModulusBits::B32);
    let mut clients: Vec<SecAggClient> = (0..n)
        .map(|i| {
            SecAggClient::new(
                params.clone(),
                i as u32,
                ids[i].clone(),
                client_seed(5, i as u32),
            )
            .unwrap()
        })
        .collect();
    let mut agg = SecAggAggregator::new(params.clone()).unwrap();
    for c in &mut clients {
        agg.receive_advert(c.advertise().unwrap()).unwrap();
    }
    for (u, keys) in agg.finish_advertising().unwrap() {
        agg.receive_shares(clients[u as usize].share_keys(&keys).unwrap())
            .unwrap();
    }
    let inbox = agg.finish_sharing().unwrap();
    (params, ids, clients, agg, inbox)
}

#[test]
fn a_tampered_share_is_rejected_by_its_recipient() {
    let (_, _, mut clients, _, mut inbox) = through_sharing(5);
    inbox[0].1.shares[1].ciphertext[3] ^= 0x40;
    let err = clients[0].masked_input(&inbox[0].1, &[0.0; 4]).unwrap_err();
    assert!(matches!(err, SecAggError::ShareRejected { .. }), "{err}");
}

#[test]
fn a_share_redirected_to_another_client_is_rejected() {
    let (_, _, mut clients, _, mut inbox) = through_sharing(5);
    let stolen = inbox[1].1.shares[0].clone();
    inbox[0].1.shares[0] = stolen;
    assert!(clients[0].masked_input(&inbox[0].1, &[0.0; 4]).is_err());
}

#[test]
fn unsigned_or_forged_messages_are_rejected() {
    let (params, ids) = setup(4, 4, ModulusBits::B32);
    let mut agg = SecAggAggregator::new(params.clone()).unwrap();
    let mut client = SecAggClient::new(params.clone(), 0, ids[0].clone(), [1; 32]).unwrap();
    let mut advert = client.advertise().unwrap();
    // Unsigned: an all-zero signature.
    let unsigned = Signed {
        body: advert.body.clone(),
        signature: ed25519_dalek::Signature::from_bytes(&[0; 64]),
    };
    assert!(matches!(
        agg.receive_advert(unsigned),
        Err(SecAggError::BadSignature { client: 0 })
    ));
    // Signed by someone else.
    let forged = Signed::sign(&ids[1], &params.session, advert.body.clone()).unwrap();
    assert!(matches!(
        agg.receive_advert(forged),
        Err(SecAggError::BadSignature { client: 0 })
    ));
    // Tampered body.
    advert.body.mask_public[0] ^= 1;
    assert!(matches!(
        agg.receive_advert(advert),
        Err(SecAggError::BadSignature { client: 0 })
    ));
}

#[test]
fn forged_share_messages_and_masked_inputs_are_rejected() {
    let (params, ids, mut clients, mut agg, inbox) = through_sharing(5);
    let msg = clients[0].masked_input(&inbox[0].1, &[0.1; 4]).unwrap();
    let mut tampered = msg.clone();
    tampered.body.values = WireBytes(vec![0; params.masked_bytes()]);
    assert!(matches!(
        agg.receive_masked_input(tampered),
        Err(SecAggError::BadSignature { .. })
    ));
    let forged = Signed::sign(&ids[1], &params.session, msg.body.clone()).unwrap();
    assert!(agg.receive_masked_input(forged).is_err());
    agg.receive_masked_input(msg.clone()).unwrap();
    assert!(matches!(
        agg.receive_masked_input(msg),
        Err(SecAggError::Duplicate(0))
    ));
}

#[test]
fn a_tampered_revealed_share_fails_the_round_instead_of_corrupting_it() {
    let (_, _, mut clients, mut agg, inbox) = through_sharing(5);
    for (u, shares) in &inbox {
        let update = [0.25f32; 4];
        agg.receive_masked_input(clients[*u as usize].masked_input(shares, &update).unwrap())
            .unwrap();
    }
    let request = agg.finish_masking().unwrap();
    for c in &mut clients {
        let mut msg = c.unmask(&request).unwrap();
        if c.index() == 0 {
            // A malicious client alters a revealed share and re-signs it.
            msg.body.self_seed_shares[0].1 .0[0] =
                (msg.body.self_seed_shares[0].1 .0[0] + 1) % shamir::P;
            msg = Signed::sign(&NodeIdentity::from_seed(&[1; 32]), &[7; 32], msg.body).unwrap();
        }
        agg.receive_unmask(msg).unwrap();
    }
    let err = agg.finish().unwrap_err();
    assert!(
        matches!(err, SecAggError::ReconstructionMismatch { .. }),
        "{err}"
    );
}

#[test]
fn messages_survive_the_wire_and_garbage_does_not_decode() {
    let (_, _, mut clients, _, inbox) = through_sharing(4);
    let msg = clients[0].masked_input(&inbox[0].1, &[0.0; 4]).unwrap();
    let bytes = encode(&msg).unwrap();
    let back: Signed<messages::MaskedInput> = decode(&bytes, 1 << 20).unwrap();
    assert_eq!(back, msg);
    assert!(decode::<Signed<messages::MaskedInput>>(&bytes, 10).is_err());
    assert!(decode::<Signed<messages::MaskedInput>>(&bytes[..bytes.len() - 1], 1 << 20).is_err());
}

#[test]
fn steps_out_of_order_are_refused() {
    let (params, ids) = setup(4, 4, ModulusBits::B32);
    let mut client = SecAggClient::new(params.clone(), 0, ids[0].clone(), [1; 32]).unwrap();
    let request = messages::UnmaskRequest {
        survivors: vec![0, 1, 2],
        dropped: vec![],
    };
    assert!(matches!(
        client.unmask(&request),
        Err(SecAggError::UnexpectedMessage(_))
    ));
    let mut agg = SecAggAggregator::new(params).unwrap();
    assert!(matches!(
        agg.finish(),
        Err(SecAggError::UnexpectedMessage(_))
    ));
    assert!(matches!(
        agg.finish_advertising(),
        Err(SecAggError::TooFewClients { .. })
    ));
}

#[test]
fn a_client_refuses_an_identity_that_is_not_its_slot() {
    let (params, ids) = setup(4, 4, ModulusBits::B32);
    assert!(SecAggClient::new(params, 0, ids[1].clone(), [1; 32]).is_err());
}

#[test]
fn an_unmask_answer_revealing_both_shares_or_repeats_is_rejected() {
    let (params, ids, mut clients, mut agg, inbox) = through_sharing(5);
    // Client 4 drops before masking; the others send inputs.
    for (u, shares) in inbox.iter().filter(|(u, _)| *u != 4) {
        agg.receive_masked_input(
            clients[*u as usize]
                .masked_input(shares, &[0.5; 4])
                .unwrap(),
        )
        .unwrap();
    }
    let request = agg.finish_masking().unwrap();
    assert_eq!(request.dropped, vec![4]);
    let honest = clients[0].unmask(&request).unwrap();
    // Asking for the self seed of dropped client 4 as well: refused.
    let mut both = honest.body.clone();
    both.self_seed_shares.push((4, both.mask_key_shares[0].1));
    let both = Signed::sign(&ids[0], &params.session, both).unwrap();
    assert!(matches!(
        agg.receive_unmask(both),
        Err(SecAggError::ShareRejected { .. })
    ));
    let mut repeated = honest.body.clone();
    repeated.self_seed_shares.push(repeated.self_seed_shares[0]);
    let repeated = Signed::sign(&ids[0], &params.session, repeated).unwrap();
    assert!(matches!(
        agg.receive_unmask(repeated),
        Err(SecAggError::ShareRejected { .. })
    ));
    agg.receive_unmask(honest).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoders of any SecAgg+ message.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let limit = 1 << 16;
        let _ = decode::<Signed<messages::AdvertiseKeys>>(&bytes, limit);
        let _ = decode::<messages::NeighbourKeys>(&bytes, limit);
        let _ = decode::<Signed<messages::ShareKeys>>(&bytes, limit);
        let _ = decode::<messages::SharesForClient>(&bytes, limit);
        let _ = decode::<Signed<messages::MaskedInput>>(&bytes, limit);
        let _ = decode::<messages::UnmaskRequest>(&bytes, limit);
        let _ = decode::<Signed<messages::UnmaskShares>>(&bytes, limit);
    }
}

#[test]
fn a_secagg_message_travels_inside_a_signed_envelope() {
    use crate::envelope::{Envelope, EnvelopeLimits, EnvelopeVerifier, MeshId};
    let (params, ids) = setup(4, 4, ModulusBits::B32);
    let mut client = SecAggClient::new(params, 2, ids[2].clone(), [3; 32]).unwrap();
    let advert = client.advertise().unwrap();
    let payload = encode(&advert).unwrap();
    let env = Envelope::seal(
        &ids[2],
        MeshId([5; 16]),
        messages::kinds::ADVERTISE_KEYS,
        1,
        1_000,
        payload,
    )
    .unwrap();
    let mut verifier = EnvelopeVerifier::new(MeshId([5; 16]), EnvelopeLimits::default());
    let opened = verifier.open(&env.encode().unwrap(), 1_000).unwrap();
    assert_eq!(opened.header.kind, messages::kinds::ADVERTISE_KEYS);
    let back: Signed<messages::AdvertiseKeys> = decode(&opened.payload, 1 << 16).unwrap();
    assert_eq!(back, advert);
}
