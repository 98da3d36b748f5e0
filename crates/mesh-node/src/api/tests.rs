//! Router tests: every route, every refusal, through the real axum stack.

use super::*;
use axum::body::Body;
use axum::http::Request;
use mesh_security::ca::{ca_pin, CertVerifier, MeshCa};
use mesh_security::rbac::{Role, RoleSet};
use mesh_security::token::AdminToken;
use mesh_security::NodeIdentity;
use prometheus_client::metrics::counter::Counter;
use tower::ServiceExt;

struct Fixture {
    router: Router,
    publish: watch::Sender<Arc<NodeSnapshot>>,
    commands: mpsc::Receiver<ApiCommand>,
    ca: MeshCa,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn fixture() -> Fixture {
    let ca = MeshCa::init(
        NodeIdentity::from_seed(&[9; 32]),
        "api test CA",
        now() - 100,
        now() + 100_000,
        [1; 16],
    )
    .expect("ca");
    let verifier = CertVerifier::new(ca.cert_der().to_vec(), &ca_pin(ca.cert_der())).expect("pin");
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    counter.inc();
    registry.register("test_events", "Events seen by the test", counter);
    let (publish, snapshot) = watch::channel(Arc::new(NodeSnapshot::default()));
    let (sender, commands) = mpsc::channel(4);
    let state = ApiState {
        snapshot,
        registry: Arc::new(registry),
        auth: Arc::new(AdminAuth::new(verifier, "m".into())),
        commands: sender,
        proposer: None,
    };
    let limits = ApiLimits {
        max_body_bytes: 16 * 1024,
        timeout_ms: 10_000,
        max_concurrent_requests: 8,
    };
    Fixture {
        router: router(state, limits),
        publish,
        commands,
        ca,
    }
}

fn token(ca: &MeshCa, roles: &[Role], seed: u8) -> String {
    let identity = NodeIdentity::from_seed(&[seed; 32]);
    let cert = ca
        .issue(
            &identity.verifying_key(),
            RoleSet::of(roles),
            now() - 10,
            now() + 1_000,
            [seed; 16],
        )
        .expect("issue");
    AdminToken::sign(&identity, cert.der, "m", now(), 600)
        .and_then(|t| t.encode())
        .expect("token")
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

fn put(body: &str, bearer: Option<&str>) -> Request<Body> {
    post("/v1/kv", body, bearer)
}

fn post(path: &str, body: &str, bearer: Option<&str>) -> Request<Body> {
    let mut builder = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body.to_owned())).expect("request")
}

#[tokio::test]
async fn health_readiness_and_views_follow_the_snapshot() {
    let f = fixture();
    assert_eq!(call(&f.router, get("/healthz")).await.0, StatusCode::OK);
    let (code, body) = call(&f.router, get("/readyz")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("not ready"));
    let snapshot = NodeSnapshot {
        ready: true,
        status: StatusView {
            node_id: "12D3Koo".into(),
            ..StatusView::default()
        },
        peers: vec![PeerView {
            peer_id: "p1".into(),
            state: "admitted".into(),
            ..PeerView::default()
        }],
        ..NodeSnapshot::default()
    };
    f.publish.send_replace(Arc::new(snapshot));
    assert_eq!(call(&f.router, get("/readyz")).await.0, StatusCode::OK);
    let (_, body) = call(&f.router, get("/v1/status")).await;
    assert!(body.contains("12D3Koo"), "{body}");
    let (_, body) = call(&f.router, get("/v1/peers")).await;
    assert!(body.contains("\"admitted\""), "{body}");
    let (code, _) = call(&f.router, get("/v1/consensus")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let (code, body) = call(&f.router, get("/metrics")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("test_events_total 1"), "{body}");
}

#[tokio::test]
async fn kv_write_needs_an_admin_token() {
    let mut f = fixture();
    let body = r#"{"key":"a","value":"b"}"#;
    let (code, text) = call(&f.router, put(body, None)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(text.contains("Bearer"), "{text}");
    let (code, _) = call(&f.router, put(body, Some("nonsense"))).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let observer = token(&f.ca, &[Role::Observer], 3);
    let (code, text) = call(&f.router, put(body, Some(&observer))).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{text}");
    assert!(
        f.commands.try_recv().is_err(),
        "refused writes never reach the runtime"
    );
}

#[tokio::test]
async fn admin_write_goes_to_the_runtime_and_returns_its_commit() {
    let mut f = fixture();
    let admin = token(&f.ca, &[Role::Admin], 4);
    let runtime = tokio::spawn(async move {
        for _ in 0..2 {
            if let Some(ApiCommand::Propose {
                command,
                token,
                reply,
            }) = f.commands.recv().await
            {
                let mesh_consensus::Command::Put { key, .. } = *command else {
                    continue;
                };
                assert!(!token.is_empty(), "the caller's token goes with the write");
                let commit = CommitView {
                    index: key.len() as u64,
                    state_hash: "ab".into(),
                };
                let _ = reply.send(Ok(commit));
            }
        }
    });
    for _ in 0..2 {
        let (code, text) = call(&f.router, put(r#"{"key":"abc","value":"v"}"#, Some(&admin))).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        assert!(text.contains("\"index\":3"), "{text}");
    }
    runtime.await.expect("runtime task");
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused() {
    let f = fixture();
    let admin = token(&f.ca, &[Role::Admin], 5);
    let (code, _) = call(&f.router, put("{not json", Some(&admin))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let long = "x".repeat(KV_FIELD_BYTES_MAX + 1);
    let body = format!(r#"{{"key":"{long}","value":"v"}}"#);
    let (code, _) = call(&f.router, put(&body, Some(&admin))).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    let huge = format!(r#"{{"key":"k","value":"{}"}}"#, "y".repeat(64 * 1024));
    let (code, _) = call(&f.router, put(&huge, Some(&admin))).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
}

fn revocation_body(signer: &NodeIdentity, serial: u8) -> String {
    let entry = mesh_security::ca::RevocationEntry {
        serial: vec![serial],
        node_id: NodeIdentity::from_seed(&[serial; 32]).node_id(),
        revoked_at_unix_s: now(),
        reason: "Key compromise".into(),
    };
    let signed = mesh_security::ca::SignedRevocation::sign(signer, entry).expect("sign");
    let hex = hex::encode(signed.to_bytes().expect("encode"));
    format!(r#"{{"signed":"{hex}"}}"#)
}

#[tokio::test]
async fn revocations_need_an_admin_and_the_cas_signature() {
    let mut f = fixture();
    let good = revocation_body(f.ca.identity(), 7);
    let forged = revocation_body(&NodeIdentity::from_seed(&[8; 32]), 7);
    let (code, _) = call(&f.router, post("/v1/revocations", &good, None)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let trainer = token(&f.ca, &[Role::Trainer], 3);
    let (code, _) = call(&f.router, post("/v1/revocations", &good, Some(&trainer))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let admin = token(&f.ca, &[Role::Admin], 4);
    let (code, text) = call(&f.router, post("/v1/revocations", &forged, Some(&admin))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("not signed by this mesh's CA"), "{text}");
    let garbage = r#"{"signed":"not hex"}"#;
    let (code, _) = call(&f.router, post("/v1/revocations", garbage, Some(&admin))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        f.commands.try_recv().is_err(),
        "refused revocations never reach the runtime"
    );
    let runtime = tokio::spawn(async move {
        let Some(ApiCommand::Propose { command, reply, .. }) = f.commands.recv().await else {
            panic!("the revocation is proposed");
        };
        let mesh_consensus::Command::RevokeCertificate { revocation, reason } = *command else {
            panic!("a revocation command, not {command:?}");
        };
        assert_eq!(revocation.entry.serial, vec![7]);
        assert_eq!(reason, mesh_consensus::RevocationReason::KeyCompromise);
        let commit = CommitView {
            index: 9,
            state_hash: "cd".into(),
        };
        let _ = reply.send(Ok(commit));
    });
    let (code, text) = call(&f.router, post("/v1/revocations", &good, Some(&admin))).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert!(text.contains("\"index\":9"), "{text}");
    runtime.await.expect("runtime task");
}

/// A misspelled rule is a 400 that names `rule` and the accepted values, and
/// nothing reaches the runtime (so nothing is proposed or committed).
#[tokio::test]
async fn a_job_with_a_misspelled_rule_is_refused_before_it_is_proposed() {
    let mut f = fixture();
    let admin = token(&f.ca, &[Role::Admin], 6);
    let mut spec = serde_json::json!({
        "model_name": "cnn", "rounds": 2, "participants_per_round": 5,
        "rule_name": "krumm", "byzantine_count": 0, "secagg": false, "dp_budget": null,
        "training": {
            "dataset": "mnist", "epochs": 1, "batch_size": 32, "learning_rate": 0.05,
            "seed": 1, "round_deadline_ms": 60000, "group_size": 1, "clip_norm": 5.0,
            "noise_multiplier": 0.0, "sampling_rate": 1.0
        }
    });
    let body = serde_json::json!({ "job": "j1", "spec": spec }).to_string();
    let (code, text) = call(&f.router, post("/v1/jobs", &body, Some(&admin))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["field"], "rule");
    assert!(answer["accepted"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "krum")));
    assert!(f.commands.try_recv().is_err(), "nothing was proposed");
    spec["rule_name"] = "median".into();
    spec["pre_aggregation"] = "nmm".into();
    let body = serde_json::json!({ "job": "j2", "spec": spec }).to_string();
    let (code, text) = call(&f.router, post("/v1/jobs", &body, Some(&admin))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("\"field\":\"pre_aggregation\""), "{text}");
}
