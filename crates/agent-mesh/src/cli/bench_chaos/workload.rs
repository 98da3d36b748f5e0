//! The load of a chaos run and what it records: key-value clients whose
//! every operation goes into the history for the linearizability checker,
//! and a watcher that records every committed round of a training job and
//! checks the round records as it sees them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::linearizability::{OpKind, Operation};

/// Longest a client waits for one answer before it counts the outcome as unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between a client's operations.
const THINK_TIME: Duration = Duration::from_millis(20);

/// What one client needs to reach the mesh.
#[derive(Clone)]
pub struct Target {
    /// HTTP client (no pooling across clients is needed).
    pub http: reqwest::Client,
    /// Every node's API URL.
    pub urls: Vec<String>,
    /// An admin token.
    pub token: String,
    /// When the run began (history times are measured from it).
    pub started: Instant,
}

impl Target {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        let response = request
            .bearer_auth(&self.token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Some((status, body))
    }

    /// `POST path` (with a JSON `body`) on node `i`: the status and JSON
    /// answer, `None` when the node did not answer in time.
    pub async fn post(&self, i: usize, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let request = self.http.post(format!("{}{path}", self.urls[i]));
        self.send(match body {
            Some(body) => request.json(body),
            None => request,
        })
        .await
    }

    /// `GET path` on node `i`, the JSON body of a 200.
    pub async fn get(&self, i: usize, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.urls[i]);
        match self.send(self.http.get(url)).await? {
            (200, body) => Some(body),
            _ => None,
        }
    }
}

/// One closed-loop client: half writes of unique values, half reads, over
/// `keys` keys, until `deadline`. Writes go to any node (followers forward
/// them); reads go to the node that answered the last one, else the next.
pub async fn kv_client(
    target: Target,
    id: usize,
    keys: usize,
    seed: u64,
    deadline: Instant,
) -> Vec<Operation> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37));
    let (mut history, mut seq, mut reader) = (Vec::new(), 0u64, id % target.urls.len());
    while Instant::now() < deadline {
        let key = format!("k{}", rng.random_range(0..keys));
        if rng.random_bool(0.5) {
            seq += 1;
            let value = format!("c{id}-{seq}");
            let node = rng.random_range(0..target.urls.len());
            history.push(write(&target, node, &key, value).await);
        } else if let Some(op) = read(&target, &mut reader, &key).await {
            history.push(op);
        }
        tokio::time::sleep(THINK_TIME).await;
    }
    history
}

async fn write(target: &Target, node: usize, key: &str, value: String) -> Operation {
    let url = format!("{}/v1/kv", target.urls[node]);
    let body = serde_json::json!({ "key": key, "value": value });
    let invoked_ns = target.now_ns();
    let answer = target.send(target.http.post(url).json(&body)).await;
    // Anything but a 200 may still have committed: the outcome is unknown.
    let completed_ns = matches!(answer, Some((200, _))).then(|| target.now_ns());
    Operation {
        key: key.to_string(),
        kind: OpKind::Write(value),
        invoked_ns,
        completed_ns,
    }
}

/// Reads `key` from the leader, trying each node once from `reader` on.
async fn read(target: &Target, reader: &mut usize, key: &str) -> Option<Operation> {
    for _ in 0..target.urls.len() {
        let url = format!("{}/v1/kv/{key}", target.urls[*reader]);
        let invoked_ns = target.now_ns();
        match target.send(target.http.get(url)).await {
            Some((200, body)) => {
                let value = body["value"].as_str().map(String::from);
                return Some(Operation {
                    key: key.to_string(),
                    kind: OpKind::Read(value),
                    invoked_ns,
                    completed_ns: Some(target.now_ns()),
                });
            }
            // 421: not the leader; anything else: unreachable or no quorum now.
            _ => *reader = (*reader + 1) % target.urls.len(),
        }
    }
    None
}

/// Committed rounds of one job as the watcher saw them, and the anomalies found.
#[derive(Debug, Default)]
pub struct RoundLedger {
    /// Round number to the model hash committed for it (first seen).
    pub committed: BTreeMap<usize, Value>,
    /// What was wrong, in words.
    pub anomalies: Vec<String>,
}

impl RoundLedger {
    /// Checks one node's copy of the job record and learns its rounds:
    /// completed rounds come first, each round starts from the model the
    /// one before committed, and a round never changes its committed model.
    pub fn observe(&mut self, node: usize, job: &Value) {
        let Some(rounds) = job["detail"]["rounds"].as_array() else {
            return;
        };
        let mut open_seen = false;
        for (r, record) in rounds.iter().enumerate() {
            let completion = &record["completion"];
            if completion.is_null() {
                open_seen = true;
                continue;
            }
            if open_seen {
                self.flag(format!(
                    "node {node}: round {r} completed after an open round"
                ));
            }
            let hash = &completion["model_hash"];
            if let Some(next) = rounds.get(r + 1) {
                if next["start_model_hash"] != *hash {
                    self.flag(format!(
                        "node {node}: round {} does not start from round {r}'s model",
                        r + 1
                    ));
                }
            }
            match self.committed.get(&r) {
                Some(known) if known != hash => self.flag(format!(
                    "node {node}: round {r} committed two different models"
                )),
                Some(_) => {}
                None => {
                    self.committed.insert(r, hash.clone());
                }
            }
        }
    }

    /// The final check on a node that caught up: every round ever seen
    /// committed is there with the same model.
    pub fn check_final(&mut self, node: usize, job: &Value) {
        let rounds = job["detail"]["rounds"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let missing: Vec<usize> = self
            .committed
            .iter()
            .filter(|(r, hash)| {
                rounds
                    .get(**r)
                    .is_none_or(|rec| rec["completion"]["model_hash"] != **hash)
            })
            .map(|(r, _)| *r)
            .collect();
        if !missing.is_empty() {
            self.flag(format!("node {node}: committed rounds lost: {missing:?}"));
        }
        self.observe(node, job);
    }

    fn flag(&mut self, anomaly: String) {
        if !self.anomalies.contains(&anomaly) {
            self.anomalies.push(anomaly);
        }
    }
}

/// Polls the job on every node in turn until `deadline`, feeding `ledger`.
pub async fn watch_job(target: Target, job: String, deadline: Instant) -> RoundLedger {
    let mut ledger = RoundLedger::default();
    let mut node = 0;
    while Instant::now() < deadline {
        if let Some(view) = target.get(node, &format!("/v1/jobs/{job}")).await {
            ledger.observe(node, &view);
        }
        node = (node + 1) % target.urls.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ledger
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(rounds: &[(u8, Option<u8>)]) -> Value {
        let rounds: Vec<Value> = rounds
            .iter()
            .map(|(start, done)| {
                serde_json::json!({
                    "start_model_hash": [start],
                    "completion": done.map(|h| serde_json::json!({ "model_hash": [h] })),
                })
            })
            .collect();
        serde_json::json!({ "detail": { "rounds": rounds } })
    }

    #[test]
    fn a_clean_chain_of_rounds_has_no_anomaly() {
        let mut ledger = RoundLedger::default();
        ledger.observe(0, &job(&[(0, Some(1)), (1, Some(2)), (2, None)]));
        ledger.observe(1, &job(&[(0, Some(1))]));
        ledger.check_final(2, &job(&[(0, Some(1)), (1, Some(2)), (2, Some(3))]));
        assert!(ledger.anomalies.is_empty(), "{:?}", ledger.anomalies);
        assert_eq!(ledger.committed.len(), 3);
    }

    #[test]
    fn changed_lost_and_unchained_rounds_are_anomalies() {
        let mut ledger = RoundLedger::default();
        ledger.observe(0, &job(&[(0, Some(1)), (1, Some(2))]));
        ledger.observe(1, &job(&[(0, Some(1)), (1, Some(9))]));
        assert!(ledger.anomalies[0].contains("two different models"));
        ledger.observe(2, &job(&[(0, Some(1)), (7, Some(2))]));
        assert!(ledger.anomalies[1].contains("does not start from"));
        ledger.check_final(3, &job(&[(0, Some(1))]));
        assert!(
            ledger.anomalies[2].contains("lost: [1]"),
            "{:?}",
            ledger.anomalies
        );
    }
}
