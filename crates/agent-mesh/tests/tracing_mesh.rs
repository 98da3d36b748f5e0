//! Distributed tracing across real `agent-mesh node` processes: the test runs
//! an OTLP/HTTP receiver on loopback (POST /v1/traces, protobuf), points
//! three nodes at it with AGENT_MESH_OTLP_ENDPOINT, runs a one-round secure
//! job, and checks that the round arrives as one trace: spans from every
//! node (service.instance.id = its peer id) whose parent links form one tree
//! under the leader's `round` span. One node exports only when it stops
//! (a 10-minute batch delay), so its spans prove the flush on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mesh::{mnist_dir, start_node, submit_job, wait_for_described, Mesh};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

const NODES: usize = 3;
/// The node that exports only at shutdown.
const FLUSHED_AT_EXIT: usize = 2;
const JOB_LIMIT: Duration = Duration::from_secs(240);

/// One span as the receiver decoded it.
#[derive(Clone, Debug)]
struct Received {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    instance: String,
}

/// A minimal OTLP/HTTP receiver: HTTP/1.1 with keep-alive, Content-Length
/// bodies, protobuf `ExportTraceServiceRequest`s; answers 200 with an empty
/// (valid) `ExportTraceServiceResponse`.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<u64>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (s, r) = (spans.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, r) = (s.clone(), r.clone());
                std::thread::spawn(move || serve(stream, &s, &r));
            }
        });
        Self {
            url,
            spans,
            requests,
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, spans: &Mutex<Vec<Received>>, requests: &Mutex<u64>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert!(
            request_line.starts_with("POST /v1/traces "),
            "unexpected request {request_line:?}"
        );
        let export = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        spans.lock().unwrap().extend(flatten(&export));
        *requests.lock().unwrap() += 1;
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn flatten(export: &ExportTraceServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for resource_spans in &export.resource_spans {
        let instance = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.instance.id")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                out.push(Received {
                    trace_id: span.trace_id.clone(),
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    name: span.name.clone(),
                    instance: instance.clone(),
                });
            }
        }
    }
    out
}

/// The spans of the trace that holds a `round` root, when that trace is one
/// tree (every parent is a span of it, and every root is the round's root)
/// with spans from at least `nodes` nodes. A leader change while a round
/// starts can make two nodes each open the round's root, with the same ids
/// the round derives, so a root may show twice; it is still one tree.
fn round_tree(spans: &[Received], nodes: usize) -> Option<Vec<Received>> {
    let roots = spans
        .iter()
        .filter(|s| s.name == "round" && s.parent_span_id.is_empty());
    for root in roots {
        let trace: Vec<Received> = spans
            .iter()
            .filter(|s| s.trace_id == root.trace_id)
            .cloned()
            .collect();
        let ids: BTreeSet<&[u8]> = trace.iter().map(|s| s.span_id.as_slice()).collect();
        let linked = trace
            .iter()
            .all(|s| s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_slice()));
        let one_root = trace
            .iter()
            .filter(|s| s.parent_span_id.is_empty())
            .all(|s| s.span_id == root.span_id);
        let instances: BTreeSet<&str> = trace.iter().map(|s| s.instance.as_str()).collect();
        if linked && one_root && instances.len() >= nodes {
            return Some(trace);
        }
    }
    None
}

/// One line per span (trace, span and parent ids abbreviated, node id
/// shortened), for a failure message that can be read.
fn summary(spans: &[Received]) -> String {
    let short = |bytes: &[u8]| hex(&bytes[..bytes.len().min(4)]);
    spans
        .iter()
        .map(|s| {
            let node = s
                .instance
                .get(s.instance.len().saturating_sub(6)..)
                .unwrap_or("");
            format!(
                "{:<16} node ..{node} trace {} span {} parent {}",
                s.name,
                short(&s.trace_id),
                short(&s.span_id),
                short(&s.parent_span_id)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The span of every step of a round with secure aggregation.
const STEPS: [&str; 7] = [
    "round",
    "propose",
    "train",
    "mask",
    "send_update",
    "group_aggregate",
    "aggregate",
];

/// True when `tree` holds a span of every step and every participant's training.
fn every_step(tree: &[Received]) -> bool {
    let names: BTreeSet<&str> = tree.iter().map(|s| s.name.as_str()).collect();
    let trains = tree.iter().filter(|s| s.name == "train").count();
    STEPS.iter().all(|step| names.contains(step)) && trains >= NODES
}

fn submit(mesh: &Mesh, token: &str) {
    let spec = serde_json::json!({
        "job": "traced",
        "spec": {
            "model": "mlp", "rounds": 1, "participants_per_round": NODES,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": true, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 1, "batch_size": 32, "learning_rate": 0.1, "seed": 7,
                "round_deadline_ms": 60000, "group_size": NODES, "clip_norm": 20.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    submit_job(&mesh.nodes[0].http_url, token, &spec);
}

fn completed(mesh: &Mesh, token: &str) -> bool {
    common::mesh::job_view(&mesh.nodes[0].http_url, token, "traced")
        .is_some_and(|view| view["status"] == "Completed")
}

#[test]
fn a_round_is_one_trace_across_the_nodes_and_a_stopping_node_flushes_its_spans() {
    let started = Instant::now();
    let receiver = Receiver::start();
    let mut mesh = Mesh::new(NODES);
    let data = mnist_dir();
    let mut boot = None::<String>;
    for i in 0..NODES {
        let shard = format!("{i}/{NODES}");
        let delay_ms = if i == FLUSHED_AT_EXIT {
            "600000"
        } else {
            "200"
        };
        let env = [
            ("AGENT_MESH_DATA", data.as_str()),
            ("AGENT_MESH_DATA_SHARD", shard.as_str()),
            ("AGENT_MESH_OTLP_ENDPOINT", receiver.url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", delay_ms),
        ];
        start_node(&mut mesh.nodes[i], boot.as_deref(), &env);
        if boot.is_none() {
            boot = Some(mesh.nodes[0].listen[0].clone());
        }
    }
    mesh.wait_full_mesh();
    let token = mesh.admin_token();
    submit(&mesh, &token);
    wait_for_described(
        JOB_LIMIT,
        || completed(&mesh, &token).then_some(()),
        || {
            format!(
                "the job to complete; {} spans so far",
                receiver.spans().len()
            )
        },
    );

    // The two prompt nodes' spans of the round arrive within their delay.
    let prompt: BTreeSet<String> = (0..NODES)
        .filter(|&i| i != FLUSHED_AT_EXIT)
        .map(|i| mesh.nodes[i].peer_id.clone())
        .collect();
    wait_for_described(
        Duration::from_secs(60),
        || {
            let spans = receiver.spans();
            let names: BTreeSet<&str> = spans
                .iter()
                .filter(|s| prompt.contains(&s.instance))
                .map(|s| s.name.as_str())
                .collect();
            ["train", "send_update"]
                .iter()
                .all(|n| names.contains(n))
                .then_some(())
        },
        || format!("the prompt nodes' spans:\n{}", summary(&receiver.spans())),
    );
    let late = mesh.nodes[FLUSHED_AT_EXIT].peer_id.clone();
    assert!(
        receiver.spans().iter().all(|s| s.instance != late),
        "node {FLUSHED_AT_EXIT} exported before it stopped (10-minute batch delay)"
    );

    // SIGTERM: the node exits cleanly and sends what it had queued.
    assert!(
        mesh.nodes[FLUSHED_AT_EXIT].terminate(),
        "node {FLUSHED_AT_EXIT} did not exit cleanly on SIGTERM\n{}",
        mesh.nodes[FLUSHED_AT_EXIT].log_tail()
    );
    // Spans of one round end at different times and reach the collector in
    // each node's next batch: wait for the whole tree, not its first part.
    let tree = wait_for_described(
        Duration::from_secs(30),
        || round_tree(&receiver.spans(), NODES).filter(|tree| every_step(tree)),
        || {
            format!(
                "one round's spans from {NODES} nodes as one tree:\n{}",
                summary(&receiver.spans())
            )
        },
    );

    let by_node: BTreeMap<&str, Vec<&str>> = tree.iter().fold(BTreeMap::new(), |mut acc, s| {
        acc.entry(s.instance.as_str())
            .or_default()
            .push(s.name.as_str());
        acc
    });
    let peers: BTreeSet<&str> = mesh.nodes.iter().map(|n| n.peer_id.as_str()).collect();
    assert!(
        by_node.keys().all(|node| peers.contains(node)),
        "service.instance.id is each node's peer id: {by_node:?}"
    );
    assert!(
        by_node.contains_key(late.as_str()),
        "the stopped node's spans: {by_node:?}"
    );
    let names: BTreeSet<&str> = tree.iter().map(|s| s.name.as_str()).collect();
    for want in STEPS {
        assert!(
            names.contains(want),
            "no {want} span in the round's trace: {by_node:?}"
        );
    }
    let trains = tree.iter().filter(|s| s.name == "train").count();
    // An attempt aborted under load is trained again: at least once each.
    assert!(trains >= NODES, "every participant's training: {by_node:?}");
    eprintln!(
        "round trace: {} spans from {} nodes ({by_node:?}); {} export requests; test took {:?}",
        tree.len(),
        by_node.len(),
        receiver.requests.lock().unwrap(),
        started.elapsed()
    );
}
