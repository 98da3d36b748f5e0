//! Prometheus metrics of the node as a whole, under `mesh_node`: whether it
//! is ready (the same answer `/readyz` gives, so an alert can say "not
//! ready" without probing every node) and which build it runs.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::NodeSnapshot;

/// The handles (cheap to clone: clones share values).
#[derive(Clone, Debug, Default)]
pub struct NodeMetrics {
    ready: Gauge,
}

impl NodeMetrics {
    /// Registers `mesh_node_ready` (0 until the first snapshot says ready) and
    /// `mesh_node_build_info` (1, with the crate version as its label).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let build = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        let r = registry.sub_registry_with_prefix("mesh_node");
        r.register(
            "ready",
            "1 while the node is ready (admitted and, on a committee member, in step with the leader), as /readyz says",
            m.ready.clone(),
        );
        r.register("build_info", "1, labelled with the node's version", build);
        m
    }

    /// Exports what the snapshot the API is about to serve says.
    pub fn observe(&self, snapshot: &NodeSnapshot) {
        self.ready.set(i64::from(snapshot.ready));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).expect("encode");
        text
    }

    #[test]
    fn ready_follows_the_snapshot() {
        let mut registry = Registry::default();
        let metrics = NodeMetrics::new(&mut registry);
        assert!(text(&registry).contains("mesh_node_ready 0\n"));
        let ready = NodeSnapshot {
            ready: true,
            ..NodeSnapshot::default()
        };
        metrics.observe(&ready);
        let after = text(&registry);
        assert!(after.contains("mesh_node_ready 1\n"), "{after}");
        let version = format!(
            "mesh_node_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(after.contains(&version), "{after}");
        metrics.observe(&NodeSnapshot::default());
        assert!(text(&registry).contains("mesh_node_ready 0\n"));
    }
}
