//! Whom a node asks for a round's start model: a fetch tree instead of a
//! star. Every node of a round (participants and aggregators) lays the same
//! tree out from the committed round record: the nodes that made the model
//! (the previous round's final aggregators) are its roots, every other node
//! is placed in an order rotated per round, and the node at place `j` is a
//! child of place `(j - roots) / FETCH_FANOUT`. A node asks its parent
//! first, then the parent's ancestors, then the roots, then everyone else;
//! a parent still fetching sends each part on as it arrives
//! ([`Shared::on_part_request`](super::shared::Shared::on_part_request)).
//! So no node uploads more than [`FETCH_FANOUT`] copies while every node is
//! alive, and a dead parent costs one fetch retry.
//!
//! Pure functions: no I/O, no clocks.

use mesh_consensus::command::NodeId;

use super::messages::RoundKey;

/// Children per node in a round's fetch tree: how many copies of the start
/// model one node serves while everyone is alive.
pub const FETCH_FANOUT: usize = 3;

/// The order in which `me` asks for a round's start model.
///
/// `roots` made the model (tried first by nodes with no parent), in plan
/// order; `fetchers` are the round's other nodes in any order, roots and
/// `me` allowed (they are skipped). The result never holds `me` and holds
/// every other node once.
pub fn fetch_order(
    me: &NodeId,
    roots: &[NodeId],
    fetchers: &[NodeId],
    key: &RoundKey,
) -> Vec<NodeId> {
    let roots = dedup(roots.iter(), |_| true);
    let mut others = dedup(fetchers.iter(), |n| !roots.contains(n));
    others.sort();
    if !others.is_empty() {
        let turn = rotation(key) % others.len();
        others.rotate_left(turn);
    }
    let tree: Vec<&NodeId> = roots.iter().chain(others.iter()).collect();
    let mut order: Vec<NodeId> = Vec::with_capacity(tree.len());
    if let Some(mut place) = tree.iter().position(|n| *n == me) {
        while let Some(parent) = parent_of(place, roots.len()) {
            order.push(tree[parent].clone());
            place = parent;
        }
    }
    order.extend(tree.iter().map(|n| (*n).clone()));
    dedup(order.iter(), |n| n != me)
}

/// The place of a node's parent in the tree, `None` for a root (without
/// roots, the first placed node is the root).
fn parent_of(place: usize, roots: usize) -> Option<usize> {
    let roots = roots.max(1);
    place.checked_sub(roots).map(|below| below / FETCH_FANOUT)
}

/// How far the non-root nodes are rotated in a round: a node that served
/// many copies in one round is a leaf in most others.
fn rotation(key: &RoundKey) -> usize {
    let mut h = blake3::Hasher::new();
    h.update(b"agent-mesh/round/fetch-tree/1\0");
    h.update(key.job.0.as_bytes());
    h.update(&key.round.to_le_bytes());
    h.update(&key.attempt.to_le_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out) as usize
}

/// The nodes of `nodes` that pass `keep`, each once, in their first order.
fn dedup<'a>(
    nodes: impl Iterator<Item = &'a NodeId>,
    keep: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    let mut seen = std::collections::BTreeSet::new();
    nodes
        .filter(|n| keep(n) && seen.insert(*n))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mesh_consensus::command::JobId;

    use super::*;

    fn node(i: usize) -> NodeId {
        NodeId(format!("node-{i:04}"))
    }

    fn key(round: u32) -> RoundKey {
        RoundKey {
            job: JobId("job".into()),
            round,
            attempt: 0,
        }
    }

    /// Who asks whom first, over every node of a round.
    fn first_asks(roots: &[NodeId], fetchers: &[NodeId], round: u32) -> BTreeMap<NodeId, usize> {
        let mut served: BTreeMap<NodeId, usize> = BTreeMap::new();
        for me in fetchers.iter().filter(|n| !roots.contains(n)) {
            let order = fetch_order(me, roots, fetchers, &key(round));
            *served.entry(order[0].clone()).or_default() += 1;
        }
        served
    }

    #[test]
    fn no_node_serves_more_than_the_fanout_when_all_are_alive() {
        let roots = vec![node(0), node(1)];
        let fetchers: Vec<NodeId> = (0..1000).map(node).collect();
        let served = first_asks(&roots, &fetchers, 7);
        assert!(served.values().all(|n| *n <= FETCH_FANOUT), "{served:?}");
        assert_eq!(served.values().sum::<usize>(), 998);
        assert_eq!(served.get(&node(0)), Some(&FETCH_FANOUT));
        assert_eq!(served.get(&node(1)), Some(&FETCH_FANOUT));
    }

    #[test]
    fn every_order_reaches_a_root_and_lists_everyone_else_once() {
        let roots = vec![node(0)];
        let fetchers: Vec<NodeId> = (0..100).map(node).collect();
        for me in &fetchers[1..] {
            let order = fetch_order(me, &roots, &fetchers, &key(3));
            assert_eq!(order.len(), 99, "{me:?}");
            assert!(!order.contains(me));
            let unique: std::collections::BTreeSet<_> = order.iter().collect();
            assert_eq!(unique.len(), 99);
            // Ancestors come first and end at the root; a tree of 100 with
            // fanout 3 is at most 5 levels deep.
            let root_at = order
                .iter()
                .position(|n| *n == node(0))
                .unwrap_or(usize::MAX);
            assert!(root_at < 5, "{me:?} reaches the root at {root_at}");
        }
    }

    #[test]
    fn all_nodes_lay_out_the_same_tree_and_rounds_rotate_it() {
        let roots = vec![node(0)];
        let fetchers: Vec<NodeId> = (0..40).map(node).collect();
        let mut shuffled = fetchers.clone();
        shuffled.reverse();
        for me in &fetchers {
            assert_eq!(
                fetch_order(me, &roots, &fetchers, &key(1)),
                fetch_order(me, &roots, &shuffled, &key(1))
            );
        }
        let parents = |round| -> Vec<NodeId> {
            fetchers[1..]
                .iter()
                .map(|me| fetch_order(me, &roots, &fetchers, &key(round))[0].clone())
                .collect()
        };
        assert_ne!(parents(1), parents(2));
    }

    #[test]
    fn a_node_outside_the_tree_asks_the_roots_first() {
        let roots = vec![node(0), node(1)];
        let fetchers: Vec<NodeId> = (0..10).map(node).collect();
        let order = fetch_order(&node(99), &roots, &fetchers, &key(0));
        assert_eq!(&order[..2], &roots[..]);
        assert_eq!(order.len(), 10);
    }

    #[test]
    fn without_roots_the_first_placed_node_is_the_root() {
        let fetchers: Vec<NodeId> = (0..10).map(node).collect();
        let orders: Vec<Vec<NodeId>> = fetchers
            .iter()
            .map(|me| fetch_order(me, &[], &fetchers, &key(0)))
            .collect();
        assert!(orders.iter().all(|o| o.len() == 9));
        // The root's parents are no one: it asks the others in tree order.
        let served = first_asks(&[], &fetchers, 0);
        assert!(
            served.values().all(|n| *n <= FETCH_FANOUT + 1),
            "{served:?}"
        );
    }
}
