//! Peer table tests: every transition, backoff bounds, dialling choices.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

const BACKOFF: Backoff = Backoff {
    base_ms: 100,
    max_ms: 10_000,
};

fn table(peers_max: usize, connections_target: usize) -> PeerTable<u32> {
    PeerTable::new(PeerTableConfig {
        peers_max,
        connections_target,
        backoff: BACKOFF,
        silence_timeout_ms: 1_000,
        seed: 7,
    })
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let ceilings: Vec<u64> = (0..10).map(|n| BACKOFF.ceiling_ms(n)).collect();
    assert_eq!(
        ceilings,
        [0, 100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000]
    );
    assert_eq!(BACKOFF.ceiling_ms(u32::MAX), 10_000);
}

#[test]
fn jitter_is_seeded() {
    let mut a = ChaCha8Rng::seed_from_u64(1);
    let mut b = ChaCha8Rng::seed_from_u64(1);
    let xs: Vec<u64> = (1..20).map(|n| BACKOFF.delay_ms(n, &mut a)).collect();
    let ys: Vec<u64> = (1..20).map(|n| BACKOFF.delay_ms(n, &mut b)).collect();
    assert_eq!(xs, ys);
    assert!(xs.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn a_new_peer_is_known_and_dialable_now() {
    let mut peers = table(4, 2);
    assert!(peers.insert(1, 50).unwrap());
    assert!(!peers.insert(1, 60).unwrap());
    let info = peers.get(&1).unwrap();
    assert_eq!(info.state, PeerState::Known);
    assert_eq!(info.next_attempt_ms, 50);
    assert_eq!(peers.peers_to_dial(50), vec![1]);
    assert_eq!(peers.peers_to_dial(49), Vec::<u32>::new());
}

#[test]
fn dial_admit_disconnect_and_redial_after_backoff() {
    let mut peers = table(4, 1);
    peers.insert(1, 0).unwrap();
    peers.on_dialing(&1, 0).unwrap();
    assert_eq!(peers.get(&1).unwrap().state, PeerState::Connecting);
    assert!(peers.peers_to_dial(0).is_empty(), "a dial is under way");
    peers.on_admitted(1, 10).unwrap();
    let info = *peers.get(&1).unwrap();
    assert_eq!(
        (info.state, info.last_seen_ms),
        (PeerState::Admitted, Some(10))
    );
    let next_ms = peers.on_disconnected(&1, 100).unwrap();
    assert!((150..=200).contains(&next_ms), "{next_ms}");
    assert_eq!(peers.next_attempt_ms(&1), Some(next_ms));
    assert_eq!(peers.get(&1).unwrap().state, PeerState::Down);
    assert!(peers.peers_to_dial(next_ms - 1).is_empty());
    assert_eq!(peers.peers_to_dial(next_ms), vec![1]);
}

#[test]
fn repeated_dial_failures_back_off_further_and_admission_resets() {
    let mut peers = table(4, 1);
    peers.insert(1, 0).unwrap();
    let mut now_ms = 0;
    for failures in 1..=6u32 {
        peers.on_dialing(&1, now_ms).unwrap();
        let next_ms = peers.on_disconnected(&1, now_ms).unwrap();
        let ceiling_ms = BACKOFF.ceiling_ms(failures);
        assert!(next_ms - now_ms >= ceiling_ms / 2 && next_ms - now_ms <= ceiling_ms);
        assert_eq!(peers.get(&1).unwrap().failures, failures);
        now_ms = next_ms;
    }
    peers.on_dialing(&1, now_ms).unwrap();
    peers.on_admitted(1, now_ms).unwrap();
    assert_eq!(peers.get(&1).unwrap().failures, 0);
}

#[test]
fn dialling_a_connecting_or_admitted_peer_is_refused() {
    let mut peers = table(4, 1);
    peers.insert(1, 0).unwrap();
    peers.on_dialing(&1, 0).unwrap();
    let err = peers.on_dialing(&1, 1).unwrap_err();
    assert!(
        matches!(
            err,
            PeerError::NotDialable {
                state: "connecting",
                ..
            }
        ),
        "{err}"
    );
    peers.on_admitted(1, 2).unwrap();
    assert!(peers.on_dialing(&1, 3).is_err());
}

#[test]
fn unknown_peers_are_errors_and_inbound_admission_inserts() {
    let mut peers = table(4, 1);
    assert!(matches!(
        peers.on_dialing(&9, 0),
        Err(PeerError::UnknownPeer { .. })
    ));
    assert!(peers.on_seen(&9, 0).is_err());
    assert!(peers.on_rtt(&9, 5, 0).is_err());
    assert!(peers.on_disconnected(&9, 0).is_err());
    peers.on_admitted(9, 0).unwrap();
    assert_eq!(peers.count(PeerState::Admitted), 1);
    assert!(peers.remove(&9).is_some());
    assert!(peers.is_empty());
}

#[test]
fn disconnecting_a_down_peer_changes_nothing() {
    let mut peers = table(4, 1);
    peers.insert(1, 0).unwrap();
    assert_eq!(peers.on_disconnected(&1, 10).unwrap(), 0);
    assert_eq!(peers.get(&1).unwrap().state, PeerState::Known);
}

#[test]
fn silent_peers_are_marked_down_and_rtt_counts_as_heard() {
    let mut peers = table(4, 2);
    for peer in [1, 2, 3] {
        peers.insert(peer, 0).unwrap();
    }
    peers.on_admitted(1, 0).unwrap();
    peers.on_admitted(2, 0).unwrap();
    peers.on_rtt(&2, 12, 600).unwrap();
    peers.on_dialing(&3, 500).unwrap();
    assert!(peers.mark_silent_down(999).is_empty());
    assert_eq!(peers.mark_silent_down(1_000), vec![1]);
    assert_eq!(peers.get(&2).unwrap().rtt_ms, Some(12));
    peers.on_seen(&2, 1_400).unwrap();
    assert_eq!(
        peers.mark_silent_down(1_500),
        vec![3],
        "a stuck dial is down too"
    );
    assert_eq!(peers.mark_silent_down(2_400), vec![2]);
    assert_eq!(peers.count(PeerState::Down), 3);
}

#[test]
fn dials_only_enough_to_reach_the_target_preferring_due_and_reliable_peers() {
    let mut peers = table(8, 3);
    for peer in 1..=6 {
        peers.insert(peer, 0).unwrap();
    }
    peers.on_admitted(1, 0).unwrap();
    peers.on_dialing(&2, 0).unwrap();
    peers.on_disconnected(&2, 0).unwrap();
    let dial = peers.peers_to_dial(0);
    assert_eq!(
        dial,
        vec![3, 4],
        "target 3, one admitted; the failed peer waits"
    );
    peers.on_admitted(3, 1).unwrap();
    peers.on_admitted(4, 1).unwrap();
    assert!(peers.peers_to_dial(100_000).is_empty());
}

#[test]
fn a_full_table_evicts_the_worst_down_peer_or_refuses() {
    let mut peers = table(2, 1);
    peers.insert(1, 0).unwrap();
    peers.insert(2, 0).unwrap();
    peers.on_dialing(&1, 0).unwrap();
    peers.on_disconnected(&1, 0).unwrap();
    assert!(peers.insert(3, 1).unwrap());
    assert!(peers.get(&1).is_none(), "the failing peer was evicted");
    peers.on_admitted(2, 2).unwrap();
    peers.on_admitted(3, 2).unwrap();
    assert_eq!(
        peers.insert(4, 3).unwrap_err(),
        PeerError::Full { peers_max: 2 }
    );
    assert_eq!(peers.len(), 2);
}

#[test]
fn state_labels_are_stable() {
    let labels = [
        PeerState::Known,
        PeerState::Connecting,
        PeerState::Admitted,
        PeerState::Down,
    ]
    .map(PeerState::as_str);
    assert_eq!(labels, ["known", "connecting", "admitted", "down"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn backoff_never_exceeds_the_cap(
        base_ms in 1u64..10_000,
        max_ms in 1u64..1_000_000,
        failures in 0u32..200,
        seed in any::<u64>(),
    ) {
        let backoff = Backoff { base_ms, max_ms };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let delay_ms = backoff.delay_ms(failures, &mut rng);
        prop_assert!(delay_ms <= max_ms);
        prop_assert!(delay_ms <= backoff.ceiling_ms(failures));
        prop_assert!(backoff.ceiling_ms(failures) <= backoff.ceiling_ms(failures.saturating_add(1)));
    }

    #[test]
    fn the_table_never_exceeds_its_bounds(
        peers_max in 1usize..6,
        connections_target in 0usize..4,
        ops in prop::collection::vec((0u8..5, 0u32..10, 0u64..500), 1..80),
    ) {
        let mut peers = table(peers_max, connections_target);
        let mut now_ms = 0;
        for (op, peer, step_ms) in ops {
            now_ms += step_ms;
            let _ = match op {
                0 => peers.insert(peer, now_ms).map(|_| ()),
                1 => peers.on_dialing(&peer, now_ms),
                2 => peers.on_admitted(peer, now_ms),
                3 => peers.on_disconnected(&peer, now_ms).map(|_| ()),
                _ => {
                    let down = peers.mark_silent_down(now_ms);
                    prop_assert!(down.len() <= peers_max);
                    Ok(())
                }
            };
            prop_assert!(peers.len() <= peers_max);
            prop_assert!(peers.peers_to_dial(now_ms).len() <= connections_target);
        }
    }
}
