//! Decentralized training with real `agent-mesh node` processes on loopback:
//! each node holds one shard of MNIST; a job submitted through the API runs
//! its rounds with secure aggregation through the committee, reaches 90%
//! test accuracy, and completes even when the committee leader is killed
//! with SIGKILL mid-job; a group aggregator killed mid-round has its group
//! (its shard of the participants) reassigned to another node, and the
//! round completes with that group's updates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::mesh::{start_mnist_mesh, submit_job, wait_for, wait_for_described, Mesh};

const NODES: usize = 5;
/// Well inside the test runner's 10-minute limit, so a stuck job fails
/// with its own message (a job takes about 30 s).
const JOB_LIMIT: Duration = Duration::from_secs(240);

fn submit(mesh: &Mesh, node: usize, token: &str, job: &str, group_size: u32, secagg: bool) {
    let spec = serde_json::json!({
        "job": job,
        "spec": {
            "model": "mlp", "rounds": 5, "participants_per_round": NODES,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": secagg, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 2, "batch_size": 32, "learning_rate": 0.1, "seed": 7,
                "round_deadline_ms": 120000, "group_size": group_size, "clip_norm": 20.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    submit_job(&mesh.nodes[node].http_url, token, &spec);
}

fn job_view(mesh: &Mesh, node: usize, token: &str, job: &str) -> Option<serde_json::Value> {
    common::mesh::job_view(&mesh.nodes[node].http_url, token, job)
}

fn wait_completed(mesh: &Mesh, alive: &[usize], token: &str, job: &str) -> serde_json::Value {
    let check = || {
        alive.iter().find_map(|&i| {
            let view = job_view(mesh, i, token, job)?;
            (view["status"] == "Completed").then_some(view)
        })
    };
    wait_for_described(JOB_LIMIT, check, || {
        let view = job_view(mesh, alive[0], token, job).unwrap_or_default();
        let logs: Vec<String> = alive
            .iter()
            .map(|&i| format!("node {i}:\n{}", mesh.nodes[i].log_tail()))
            .collect();
        format!("job {job} to complete: {view}\n{}", logs.join("\n"))
    })
}

fn leader_index(mesh: &Mesh) -> usize {
    wait_for("a committee leader", Duration::from_secs(90), || {
        (0..NODES).find(|&i| {
            mesh.nodes[i]
                .get("/v1/consensus")
                .is_some_and(|c| c["role"] == "leader")
        })
    })
}

#[test]
fn secure_job_reaches_90_percent_and_survives_the_leader_being_killed() {
    let mut mesh = start_mnist_mesh(NODES);
    let token = mesh.admin_token();
    leader_index(&mesh);

    submit(&mesh, 1, &token, "first", 5, true);
    let done = wait_completed(&mesh, &[0, 1, 2, 3, 4], &token, "first");
    let accuracy = done["accuracy"].as_f64().unwrap();
    assert!(
        accuracy >= 0.9,
        "accuracy {accuracy} after 5 secure rounds: {done}"
    );
    assert_eq!(done["rounds_completed"], 5);
    let updates = done["detail"]["rounds"][4]["completion"]["metrics"]["updates_count"]
        .as_u64()
        .unwrap();
    assert!(updates >= 4, "only {updates} updates in the last round");
    let metrics = wait_for("round metrics", Duration::from_secs(30), || {
        let text = mesh.nodes[0].metrics();
        text.lines()
            .find(|l| l.starts_with("mesh_round_completed_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n >= 5.0)
            .map(|_| text)
    });
    assert!(
        metrics.contains("mesh_round_messages_sent_total{kind=\"secagg\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mesh_round_jobs{status=\"Completed\"} 1"),
        "{metrics}"
    );

    // Again, and kill -9 the committee leader once the first round is in.
    submit(&mesh, 2, &token, "second", 5, true);
    wait_for("the second job's first round", JOB_LIMIT, || {
        job_view(&mesh, 2, &token, "second").filter(|v| v["rounds_completed"].as_u64() >= Some(1))
    });
    let leader = leader_index(&mesh);
    mesh.nodes[leader].kill9();
    let alive: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();
    let done = wait_completed(&mesh, &alive, &token, "second");
    assert_eq!(done["rounds_completed"], 5);
    assert!(
        done["rounds_aborted"].as_u64().unwrap() <= 1,
        "more than one round repeated: {done}"
    );
}

/// A group aggregator of the running round that can be killed without
/// taking the committee leader or its group's updates with it: not the
/// leader, and not a member of the group it aggregates.
fn victim(mesh: &Mesh, leader: usize, record: &serde_json::Value) -> Option<(usize, usize)> {
    let groups = record["plan"]["groups"].as_array()?;
    groups.iter().enumerate().find_map(|(g, group)| {
        let aggregator = group["aggregator"].as_str()?;
        let node = mesh.nodes.iter().position(|n| n.peer_id == aggregator)?;
        let is_member = group["members"]
            .as_array()?
            .iter()
            .any(|m| m.as_str() == Some(aggregator));
        (node != leader && !is_member).then_some((g, node))
    })
}

#[test]
fn a_killed_group_aggregators_shard_is_reassigned() {
    let mut mesh = start_mnist_mesh(NODES);
    let token = mesh.admin_token();
    let leader = leader_index(&mesh);
    // Plain groups of two: five participants make two groups, each with its
    // own aggregator (secure aggregation needs groups of four or more, which
    // five participants cannot split into two).
    submit(&mesh, 1, &token, "groups", 2, false);
    let (round, group, node) =
        wait_for("a round with a group aggregator to kill", JOB_LIMIT, || {
            let view = job_view(&mesh, leader, &token, "groups")?;
            assert_ne!(
                view["status"], "Completed",
                "no round had a group aggregator to kill: {view}"
            );
            let rounds = view["detail"]["rounds"].as_array()?;
            let record = rounds.last().filter(|r| r["completion"].is_null())?;
            let (group, node) = victim(&mesh, leader, record)?;
            Some((rounds.len() - 1, group, node))
        });
    let killed = mesh.nodes[node].peer_id.clone();
    let started = std::time::Instant::now();
    mesh.nodes[node].kill9();
    eprintln!("killed node {node}, aggregator of group {group} in round {round}");

    let reassigned = wait_for(
        "the group to be reassigned",
        Duration::from_secs(120),
        || {
            let view = job_view(&mesh, leader, &token, "groups")?;
            let aggregator = view["detail"]["rounds"][round]["plan"]["groups"][group]["aggregator"]
                .as_str()?
                .to_string();
            (aggregator != killed).then_some(aggregator)
        },
    );
    assert!(
        mesh.nodes.iter().any(|n| n.peer_id == reassigned),
        "group {group} of round {round} went to an unknown node {reassigned}"
    );
    eprintln!("reassigned to {reassigned} after {:?}", started.elapsed());
    let alive: Vec<usize> = (0..NODES).filter(|&i| i != node).collect();
    let done = wait_completed(&mesh, &alive, &token, "groups");
    eprintln!("completed after {:?}", started.elapsed());
    assert_eq!(done["rounds_completed"], 5);
    assert_eq!(done["rounds_aborted"], 0, "a round was repeated: {done}");
    let record = &done["detail"]["rounds"][round];
    assert_eq!(
        record["plan"]["groups"][group]["aggregator"],
        reassigned.as_str()
    );
    let inputs = record["completion"]["inputs"].as_array().unwrap();
    let contributors = inputs
        .iter()
        .find(|i| i["group"] == group)
        .and_then(|i| i["contributors"].as_u64())
        .unwrap_or(0);
    assert!(
        contributors >= 1,
        "group {group} of round {round} contributed nothing after reassignment: {record}"
    );
}

/// A node without the committee role holds no copy of the committed state
/// and cannot take part in rounds, so the planner leaves it out: a job that
/// asks for more participants runs with the nodes that can train.
#[test]
fn a_trainer_without_the_committee_role_follows_the_state_and_trains() {
    let mut mesh = start_mnist_mesh(3);
    let token = mesh.admin_token();
    let outsider = mesh.add_member("aggregator,trainer,observer");
    let data = common::mesh::mnist_dir();
    let boot = mesh.nodes[0].listen[0].clone();
    let env = [
        ("AGENT_MESH_DATA", data.as_str()),
        ("AGENT_MESH_DATA_SHARD", "3/4"),
    ];
    common::mesh::start_node(&mut mesh.nodes[outsider], Some(&boot), &env);
    wait_for(
        "the trainer to be admitted",
        Duration::from_secs(60),
        || (mesh.nodes[0].admitted() >= 3).then_some(()),
    );
    // It follows the committed state from its peers, without the Raft log.
    wait_for(
        "the trainer to follow the committed state",
        Duration::from_secs(60),
        || mesh.nodes[outsider].get("/v1/status")?["followed_index"].as_u64(),
    );
    let spec = serde_json::json!({
        "job": "with-follower",
        "spec": {
            "model": "mlp", "rounds": 2, "participants_per_round": 4,
            "rule_name": "fedavg", "byzantine_count": 0, "secagg": true, "dp_budget": null,
            "training": {
                "dataset": "mnist", "epochs": 1, "batch_size": 32, "learning_rate": 0.1, "seed": 7,
                "round_deadline_ms": 120000, "group_size": 5, "clip_norm": 20.0,
                "noise_multiplier": 0.0, "sampling_rate": 1.0
            }
        }
    });
    submit_job(&mesh.nodes[0].http_url, &token, &spec);
    let done = wait_completed(&mesh, &[0, 1, 2], &token, "with-follower");
    let outsider_id = mesh.nodes[outsider].peer_id.clone();
    for round in done["detail"]["rounds"].as_array().unwrap() {
        let participants = round["participants"].as_array().unwrap();
        assert_eq!(participants.len(), 4, "{round}");
        assert!(
            participants
                .iter()
                .any(|p| p.as_str() == Some(&outsider_id)),
            "the node without the committee role was not selected: {round}"
        );
        assert_eq!(
            round["completion"]["metrics"]["updates_count"], 4,
            "{round}"
        );
    }
    // Its own API shows the job from the followed state.
    wait_for_described(
        Duration::from_secs(30),
        || {
            let view = job_view(&mesh, outsider, &token, "with-follower")?;
            (view["status"] == "Completed").then_some(())
        },
        || mesh.nodes[outsider].log_tail(),
    );
    // After its first whole state, it follows by the commands since its index.
    let metrics = mesh.nodes[outsider].metrics();
    let deltas = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mesh_state_follow_deltas_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(deltas >= 1.0, "no state followed by delta:\n{metrics}");
    let consensus = mesh.nodes[outsider].get("/v1/consensus");
    assert!(
        consensus.as_ref().is_none_or(|c| c.is_null()),
        "the trainer runs no Raft: {consensus:?}"
    );
}
