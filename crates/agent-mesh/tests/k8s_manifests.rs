//! The Kubernetes deployment in `k8s/`, checked offline.
//!
//! Python reads the YAML (PyYAML) and, for the schema test, checks every
//! object with the PyPI package `kubernetes-validate` against the Kubernetes
//! 1.30 OpenAPI schemas in strict mode (a misspelt field is an error). The
//! other tests assert what no schema knows: the committee's disruption budget
//! keeps a majority, probes ask the node's own health endpoints on the port it
//! serves, every `AGENT_MESH_*` variable is one the node reads (the list is
//! taken from `crates/mesh-node/src/config.rs` at test time), the ConfigMap's
//! `node.toml` with each pod's environment passes `agent-mesh node --check`,
//! and the issuing Job issues an identity for every pod.
//!
//! Without python3 + kubernetes-validate the tests print `skipped:` and pass,
//! unless `CI` is set: then they fail (`pip install kubernetes-validate`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::mesh::{bin, make_member, repo_root, run_ok, skip_unless_ci};
use serde_json::Value;

/// The Kubernetes version whose schemas the manifests must satisfy.
const KUBERNETES_VERSION: &str = "1.30";
/// The namespace of every object.
const NAMESPACE: &str = "agent-mesh";
/// The committee StatefulSet.
const COMMITTEE: &str = "agent-mesh-committee";
/// The participant StatefulSet.
const PARTICIPANT: &str = "agent-mesh-participant";
/// The ConfigMap holding `node.toml`.
const CONFIG_MAP: &str = "agent-mesh-config";
/// The container running `agent-mesh node` in each pod.
const NODE_CONTAINER: &str = "node";
/// The identity issuing Job.
const ISSUER: &str = "agent-mesh-identity-issuer";

/// Reads every `*.yaml` under the folder `argv[1]` (sorted by path); with
/// `argv[2]` = `validate`, checks each document with kubernetes-validate
/// against Kubernetes `argv[3]`. Prints one JSON object; a missing module is
/// reported as `{"missing": ...}` rather than a traceback.
const PYTHON: &str = r#"
import json, pathlib, sys
root, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
try:
    import yaml
    if mode == "validate":
        import kubernetes_validate
        from kubernetes_validate import utils
except ImportError as e:
    print(json.dumps({"missing": str(e)}))
    sys.exit(0)
out = {"documents": []}
if mode == "validate":
    out["kubernetes_validate"] = kubernetes_validate.__version__
for path in sorted(root.rglob("*.y*ml")):
    rel = path.relative_to(root).as_posix()
    text = path.read_text()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        out["documents"].append({"file": rel, "text": text, "error": "YAML: %s" % e})
        continue
    for doc in docs:
        entry = {"file": rel, "text": text, "doc": doc}
        if mode == "validate":
            try:
                entry["schema"] = kubernetes_validate.validate(doc, sys.argv[3], strict=True)
            except utils.SchemaNotFoundError as e:
                entry["schema"] = None
                entry["no_schema"] = e.message
            except utils.ValidationError as e:
                path = ".".join(str(p) for p in e.absolute_path)
                entry["error"] = "%s: %s" % (path or "(document)", e.message)
            except Exception as e:
                entry["error"] = repr(e)
        out["documents"].append(entry)
print(json.dumps(out, default=str))
"#;

/// One YAML document of a manifest file.
#[derive(Debug)]
struct Doc {
    /// The file, relative to `k8s/`.
    file: String,
    /// The whole file's text (for comments).
    text: String,
    /// The document.
    value: Value,
    /// The schema version it was validated against; `None` if there is no
    /// schema for its kind (a custom resource). Only in validate mode.
    schema: Option<String>,
    /// Why there was no schema.
    no_schema: Option<String>,
    /// Parse or validation error.
    error: Option<String>,
}

/// Every document of every manifest.
struct Manifests {
    docs: Vec<Doc>,
    /// The kubernetes-validate version (validate mode).
    validator: Option<String>,
}

fn k8s_dir() -> PathBuf {
    repo_root().join("k8s")
}

/// Prints `skipped:` (or panics under CI) and returns `None` when the tool is missing.
fn missing(why: &str) -> Option<Manifests> {
    let why = format!("{why}; install with `pip install kubernetes-validate` (it brings PyYAML)");
    skip_unless_ci(&why);
    None
}

/// Runs the Python reader over `k8s/`; `validate` also checks the schemas.
fn load(validate: bool) -> Option<Manifests> {
    let mode = if validate { "validate" } else { "parse" };
    let out = match Command::new("python3")
        .args(["-c", PYTHON])
        .arg(k8s_dir())
        .args([mode, KUBERNETES_VERSION])
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(out) => out,
        Err(e) => return missing(&format!("python3 cannot run ({e})")),
    };
    assert!(out.status.success(), "the manifest reader failed");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    if let Some(module) = report.get("missing") {
        return missing(&format!("python3 lacks a module: {module}"));
    }
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(String::from);
    let docs: Vec<Doc> = report["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Doc {
            file: text(d, "file").unwrap(),
            text: text(d, "text").unwrap(),
            value: d.get("doc").cloned().unwrap_or(Value::Null),
            schema: text(d, "schema"),
            no_schema: text(d, "no_schema"),
            error: text(d, "error"),
        })
        .collect();
    if !validate {
        for doc in &docs {
            assert!(doc.error.is_none(), "{}: {:?}", doc.file, doc.error);
        }
    }
    assert!(
        !docs.is_empty(),
        "no manifests under {}",
        k8s_dir().display()
    );
    Some(Manifests {
        docs,
        validator: text(&report, "kubernetes_validate"),
    })
}

impl Manifests {
    /// The one object of `kind` named `name`.
    fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .docs
            .iter()
            .map(|d| &d.value)
            .filter(|v| v["kind"] == kind && v["metadata"]["name"] == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {kind} {name}, found {}",
            found.len()
        );
        found[0]
    }

    /// Every object of `kind`.
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .map(|d| &d.value)
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    /// The ConfigMap's `node.toml`, parsed.
    fn node_toml(&self) -> (String, toml::Table) {
        let text = self.get("ConfigMap", CONFIG_MAP)["data"]["node.toml"]
            .as_str()
            .expect("the ConfigMap has a node.toml")
            .to_string();
        let table = text.parse::<toml::Table>().expect("node.toml is TOML");
        (text, table)
    }

    /// The pod templates of every workload, with the workload's name.
    fn pod_specs(&self) -> Vec<(String, &Value)> {
        ["StatefulSet", "Deployment", "DaemonSet", "Job"]
            .iter()
            .flat_map(|kind| self.all(kind))
            .map(|w| {
                (
                    w["metadata"]["name"].as_str().unwrap().to_string(),
                    &w["spec"]["template"]["spec"],
                )
            })
            .collect()
    }
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn replicas(set: &Value) -> u64 {
    set["spec"]["replicas"].as_u64().expect("replicas is set")
}

/// Whether every label of `selector` (a map) is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(selector) = selector.as_object() else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The container `name` of a pod spec.
fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    items(&pod["containers"])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Every container of a pod spec, init containers first.
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    items(&pod["initContainers"])
        .iter()
        .chain(items(&pod["containers"]))
}

/// The container port a probe or Service names (a number or a port name).
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = str_of(port, "port");
    items(&container["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The port of the node's HTTP API, from `http.addr` in node.toml.
fn api_port(node: &toml::Table) -> u64 {
    let addr = node["http"]["addr"].as_str().expect("http.addr is set");
    let (host, port) = addr.rsplit_once(':').expect("http.addr is HOST:PORT");
    assert_eq!(
        host, "0.0.0.0",
        "http.addr {addr}: the kubelet's probes and the Services reach the pod IP, not loopback"
    );
    port.parse().unwrap()
}

/// The `AGENT_MESH_*` variables the node reads: the `ENV_OVERRIDES` table.
fn env_overrides() -> BTreeSet<String> {
    let path = repo_root().join("crates/mesh-node/src/config.rs");
    let source = std::fs::read_to_string(&path).unwrap();
    let start = source
        .find("pub const ENV_OVERRIDES")
        .expect("config.rs defines ENV_OVERRIDES");
    let end = start + source[start..].find("\n];").expect("ENV_OVERRIDES ends");
    let names: BTreeSet<String> = source[start..end]
        .split("name: \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(String::from)
        .collect();
    assert!(
        names.len() >= 10 && names.iter().all(|n| n.starts_with("AGENT_MESH_")),
        "could not read the variable names from {}: {names:?}",
        path.display()
    );
    names
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas() {
    let Some(manifests) = load(true) else { return };
    let mut custom = 0;
    for doc in &manifests.docs {
        let what = format!(
            "{} ({} {})",
            doc.file, doc.value["kind"], doc.value["metadata"]["name"]
        );
        assert!(
            doc.error.is_none(),
            "{what}: {}",
            doc.error.as_deref().unwrap_or("")
        );
        let top_level = !doc.file.contains('/');
        if let Some(version) = &doc.schema {
            assert_eq!(version, KUBERNETES_VERSION, "{what}");
            continue;
        }
        // `kubectl apply -f k8s/` must work on a cluster without extra CRDs.
        assert!(
            !top_level,
            "{what}: no Kubernetes {KUBERNETES_VERSION} schema ({}); custom resources \
             belong in a sub-folder that says which operator they need",
            doc.no_schema.as_deref().unwrap_or("")
        );
        check_service_monitor(&manifests, doc);
        custom += 1;
    }
    assert_eq!(custom, 1, "only the ServiceMonitor lacks a schema");
    eprintln!(
        "kubernetes-validate {} against Kubernetes {KUBERNETES_VERSION}: {} objects",
        manifests.validator.as_deref().unwrap_or("?"),
        manifests.docs.len()
    );
}

/// The ServiceMonitor has no schema here: check its structure by hand.
fn check_service_monitor(manifests: &Manifests, doc: &Doc) {
    let monitor = &doc.value;
    assert_eq!(
        monitor["apiVersion"], "monitoring.coreos.com/v1",
        "{}",
        doc.file
    );
    assert_eq!(monitor["kind"], "ServiceMonitor", "{}", doc.file);
    assert!(
        doc.text.contains("Prometheus Operator"),
        "{} must say that it needs the Prometheus Operator",
        doc.file
    );
    assert_eq!(monitor["metadata"]["namespace"], NAMESPACE);
    let names = items(&monitor["spec"]["namespaceSelector"]["matchNames"]);
    assert!(
        names.contains(&Value::from(NAMESPACE)),
        "namespaceSelector: {names:?}"
    );
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    let services: Vec<&Value> = manifests
        .all("Service")
        .into_iter()
        .filter(|s| selects(selector, &s["metadata"]["labels"]))
        .collect();
    for set in [COMMITTEE, PARTICIPANT] {
        let labels = &manifests.get("StatefulSet", set)["spec"]["template"]["metadata"]["labels"];
        assert!(
            services
                .iter()
                .any(|s| selects(&s["spec"]["selector"], labels)),
            "the ServiceMonitor scrapes no Service in front of {set}"
        );
    }
    let endpoints = items(&monitor["spec"]["endpoints"]);
    assert!(!endpoints.is_empty(), "ServiceMonitor without endpoints");
    for endpoint in endpoints {
        assert_eq!(endpoint["path"], "/metrics");
        for service in &services {
            assert!(
                items(&service["spec"]["ports"])
                    .iter()
                    .any(|p| p["name"] == endpoint["port"]),
                "Service {} has no port {}",
                service["metadata"]["name"],
                endpoint["port"]
            );
        }
    }
}

#[test]
fn kubectl_apply_creates_the_namespace_first_and_everything_in_it() {
    let Some(manifests) = load(false) else { return };
    let first = &manifests.docs[0];
    assert!(
        !first.file.contains('/') && first.value["kind"] == "Namespace",
        "`kubectl apply -f k8s/` applies files in name order: the first object must be \
         the Namespace, not {} {} in {}",
        first.value["kind"],
        first.value["metadata"]["name"],
        first.file
    );
    assert_eq!(first.value["metadata"]["name"], NAMESPACE);
    for doc in &manifests.docs[1..] {
        assert_ne!(
            doc.value["kind"], "Namespace",
            "{}: a second Namespace",
            doc.file
        );
        assert_eq!(
            doc.value["metadata"]["namespace"], NAMESPACE,
            "{}: {} {} must name its namespace, or it lands in the current context's",
            doc.file, doc.value["kind"], doc.value["metadata"]["name"]
        );
    }
}

#[test]
fn the_committee_disruption_budget_keeps_a_majority() {
    let Some(manifests) = load(false) else { return };
    for (set, majority_needed) in [(COMMITTEE, true), (PARTICIPANT, false)] {
        let set = manifests.get("StatefulSet", set);
        let name = set["metadata"]["name"].as_str().unwrap();
        let labels = &set["spec"]["template"]["metadata"]["labels"];
        let n = replicas(set);
        let budgets: Vec<&Value> = manifests
            .all("PodDisruptionBudget")
            .into_iter()
            .filter(|b| selects(&b["spec"]["selector"]["matchLabels"], labels))
            .collect();
        assert_eq!(
            budgets.len(),
            1,
            "one PodDisruptionBudget must cover {name}"
        );
        let spec = &budgets[0]["spec"];
        let allowed = match (
            spec["minAvailable"].as_u64(),
            spec["maxUnavailable"].as_u64(),
        ) {
            (Some(min), None) => n.saturating_sub(min),
            (None, Some(max)) => max,
            other => panic!("{name}: give minAvailable or maxUnavailable as a number: {other:?}"),
        };
        assert!(
            allowed >= 1,
            "{name}: the budget blocks every drain and rolling node upgrade"
        );
        if majority_needed {
            let majority = n / 2 + 1;
            assert!(
                n - allowed >= majority,
                "{name}: {n} members, the budget lets {allowed} go at once, leaving fewer \
                 than the majority of {majority}"
            );
        }
    }
}

#[test]
fn probes_hit_health_and_readiness_on_the_api_port() {
    let Some(manifests) = load(false) else { return };
    let (_, node) = manifests.node_toml();
    let port = api_port(&node);
    for set in [COMMITTEE, PARTICIPANT] {
        let template = &manifests.get("StatefulSet", set)["spec"]["template"];
        let node_container = container(&template["spec"], NODE_CONTAINER);
        for (probe, path, required) in [
            ("readinessProbe", "/readyz", true),
            ("livenessProbe", "/healthz", true),
            ("startupProbe", "/healthz", false),
        ] {
            let get = &node_container[probe]["httpGet"];
            if get.is_null() {
                assert!(!required, "{set}: no {probe} with httpGet");
                continue;
            }
            assert_eq!(get["path"], path, "{set} {probe}");
            assert_eq!(
                resolve_port(node_container, &get["port"]),
                port,
                "{set} {probe}"
            );
            let failures = node_container[probe]["failureThreshold"]
                .as_u64()
                .unwrap_or(3);
            let period_s = node_container[probe]["periodSeconds"]
                .as_u64()
                .unwrap_or(10);
            assert!(
                failures >= 2,
                "{set} {probe}: one slow answer must not fail the pod"
            );
            assert!(
                period_s * failures >= 10,
                "{set} {probe}: gives up within {}s",
                period_s * failures
            );
        }
        let annotations = &template["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{set}");
        assert_eq!(annotations["prometheus.io/port"], port.to_string(), "{set}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{set}");
    }
    // The API Service reaches that port on every node.
    let api = manifests
        .all("Service")
        .into_iter()
        .find(|s| s["spec"]["clusterIP"] != "None")
        .expect("a ClusterIP Service for the HTTP API");
    for set in [COMMITTEE, PARTICIPANT] {
        let pod = &manifests.get("StatefulSet", set)["spec"]["template"];
        assert!(
            selects(&api["spec"]["selector"], &pod["metadata"]["labels"]),
            "API Service misses {set}"
        );
        let node_container = container(&pod["spec"], NODE_CONTAINER);
        assert!(
            items(&api["spec"]["ports"])
                .iter()
                .any(|p| resolve_port(node_container, &p["targetPort"]) == port),
            "the API Service does not target port {port}"
        );
    }
}

#[test]
fn every_agent_mesh_variable_is_one_the_node_reads() {
    let Some(manifests) = load(false) else { return };
    let known = env_overrides();
    let mut used = 0;
    for (workload, pod) in manifests.pod_specs() {
        for c in containers(pod) {
            for var in items(&c["env"]) {
                let name = str_of(&var["name"], "env name");
                if name.starts_with("AGENT_MESH_") {
                    assert!(
                        known.contains(name),
                        "{workload}/{}: the node does not read {name} (it reads {known:?})",
                        c["name"]
                    );
                    used += 1;
                }
            }
        }
    }
    assert!(
        used > 0,
        "no AGENT_MESH_* variable in the manifests: this test checks nothing"
    );
}

/// One pod's environment, as the kubelet builds it for the node container:
/// downward-API values filled in for pod `ordinal` of `set`, then `$(VAR)`
/// references to earlier variables expanded.
fn pod_env(set: &Value, ordinal: u64) -> Vec<(String, String)> {
    let pod_name = format!("{}-{ordinal}", set["metadata"]["name"].as_str().unwrap());
    let node = container(&set["spec"]["template"]["spec"], NODE_CONTAINER);
    let mut env: Vec<(String, String)> = Vec::new();
    for var in items(&node["env"]) {
        let name = str_of(&var["name"], "env name").to_string();
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.name" => pod_name.clone(),
                "metadata.namespace" => NAMESPACE.to_string(),
                "metadata.labels['apps.kubernetes.io/pod-index']" => ordinal.to_string(),
                other => panic!("{name}: this test does not know fieldPath {other}"),
            }
        } else if let Some(resource) = var["valueFrom"]["resourceFieldRef"].as_object() {
            let of = resource["containerName"].as_str().unwrap_or(NODE_CONTAINER);
            assert_eq!(of, NODE_CONTAINER, "{name}");
            assert_eq!(
                resource["resource"], "limits.cpu",
                "{name}: only limits.cpu is known here"
            );
            assert_eq!(resource["divisor"], "1", "{name}: whole CPUs");
            let limit = node["resources"]["limits"]["cpu"]
                .as_str()
                .expect("a CPU limit");
            cpus_ceil(limit).to_string()
        } else {
            panic!("{name}: this test does not know that value source: {var}")
        };
        env.push((name, value));
    }
    env
}

/// `$(NAME)` of an earlier variable becomes its value; others stay, as in Kubernetes.
fn expand(value: &str, earlier: &[(String, String)]) -> String {
    let mut out = value.to_string();
    for (name, v) in earlier {
        out = out.replace(&format!("$({name})"), v);
    }
    out
}

/// A CPU quantity ("2", "1.5", "500m") rounded up to whole CPUs, as the
/// downward API does with divisor 1.
fn cpus_ceil(quantity: &str) -> u64 {
    let millis = match quantity.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap(),
        None => quantity.parse::<f64>().unwrap() * 1000.0,
    };
    (millis / 1000.0).ceil() as u64
}

/// The CA and one member identity in a temporary folder, for `node --check`.
struct TestIdentity {
    dir: tempfile::TempDir,
}

impl TestIdentity {
    fn new(roles: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        run_ok(&["ca", "init", "--out", ca.to_str().unwrap()]);
        make_member(dir.path(), &ca, "member", roles);
        Self { dir }
    }

    /// The variables that move the in-cluster paths into the temporary folder.
    fn env(&self) -> Vec<(&'static str, PathBuf)> {
        let d = self.dir.path();
        vec![
            ("AGENT_MESH_KEY", d.join("member/node.key.pem")),
            ("AGENT_MESH_CERT", d.join("member/node.cert.pem")),
            ("AGENT_MESH_CA_CERT", d.join("ca/ca.cert.pem")),
            ("AGENT_MESH_CA_PIN", d.join("ca/ca.pin")),
            ("AGENT_MESH_DATA_DIR", d.join("data")),
        ]
    }
}

/// The mount of `container` that holds `path`, if any.
fn mount_of<'a>(container: &'a Value, path: &str) -> Option<&'a Value> {
    items(&container["volumeMounts"])
        .iter()
        .filter(|m| {
            let at = m["mountPath"].as_str().unwrap().trim_end_matches('/');
            path.starts_with(&format!("{at}/")) || path == at
        })
        .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
}

#[test]
fn the_config_map_passes_node_check_with_each_pods_environment() {
    let Some(manifests) = load(false) else { return };
    let (text, node) = manifests.node_toml();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("node.toml");
    std::fs::write(&config, &text).unwrap();
    let committee = manifests.get("StatefulSet", COMMITTEE);
    let participant = manifests.get("StatefulSet", PARTICIPANT);
    for (set, roles) in [
        (committee, "committee,observer"),
        (participant, "aggregator,trainer,observer"),
    ] {
        let name = set["metadata"]["name"].as_str().unwrap();
        let pod = &set["spec"]["template"]["spec"];
        let node_container = container(pod, NODE_CONTAINER);
        // The pod runs exactly this config file.
        let args: Vec<&str> = items(&node_container["args"])
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let at = args
            .windows(2)
            .find(|w| w[0] == "--config")
            .map(|w| w[1])
            .expect("the node container passes --config");
        let mount = mount_of(node_container, at)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {at}"));
        let volume = items(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(
            volume["configMap"]["name"], CONFIG_MAP,
            "{name}: {at} is not from the ConfigMap"
        );
        assert!(at.ends_with("/node.toml"), "{name}: --config {at}");
        // Every path the config names is on a volume; data_dir on a writable one.
        for field in [
            &node["identity"]["key"],
            &node["identity"]["cert"],
            &node["identity"]["ca_cert"],
            &node["identity"]["ca_pin"],
        ] {
            let path = field.as_str().unwrap();
            assert!(
                mount_of(node_container, path).is_some(),
                "{name}: {path} is on no volume"
            );
        }
        let data_dir = node["data_dir"].as_str().unwrap();
        let data = mount_of(node_container, data_dir)
            .unwrap_or_else(|| panic!("{name}: data_dir {data_dir} is on no volume"));
        assert_ne!(data["readOnly"], true, "{name}: data_dir must be writable");
        // Run `node --check` with the environment of the last pod.
        let ordinal = replicas(set) - 1;
        let identity = TestIdentity::new(roles);
        let mut check = Command::new(bin());
        check.args(["node", "--config", config.to_str().unwrap(), "--check"]);
        for (var, _) in std::env::vars() {
            if var.starts_with("AGENT_MESH_") {
                check.env_remove(var);
            }
        }
        let env = pod_env(set, ordinal);
        for (var, value) in &env {
            assert!(
                !value.contains("$("),
                "{name}: {var}={value} refers to an unknown or later variable"
            );
            check.env(var, value);
        }
        for (var, path) in identity.env() {
            check.env(var, path);
        }
        let out = check.output().unwrap();
        assert!(
            out.status.success(),
            "{name}: `agent-mesh node --check` refuses the ConfigMap's node.toml with the pod's environment:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let resolved: toml::Table = String::from_utf8(out.stdout).unwrap().parse().unwrap();
        check_resolved(&manifests, set, &resolved, &env);
    }
}

/// What `node --check` printed for a pod of `set` fits the rest of the manifests.
fn check_resolved(
    manifests: &Manifests,
    set: &Value,
    resolved: &toml::Table,
    env: &[(String, String)],
) {
    let name = set["metadata"]["name"].as_str().unwrap();
    let committee = manifests.get("StatefulSet", COMMITTEE);
    assert_eq!(
        resolved["log"]["format"].as_str(),
        Some("json"),
        "{name}: logs for collectors"
    );
    assert_eq!(
        resolved["network"]["mdns"].as_bool(),
        Some(false),
        "{name}: no multicast on pod networks"
    );
    let expect = resolved["consensus"]["bootstrap_expect"]
        .as_integer()
        .unwrap() as u64;
    assert_eq!(
        expect,
        replicas(committee),
        "bootstrap_expect must be the committee's replicas"
    );
    // Bootstrap: every committee pod by its stable name through the headless Service.
    let service = str_of(&committee["spec"]["serviceName"], "serviceName");
    let headless = manifests.get("Service", service);
    assert_eq!(
        headless["spec"]["clusterIP"], "None",
        "{service} must be headless"
    );
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"], true,
        "{service}: members must find each other before any of them is ready"
    );
    let p2p_port = items(&headless["spec"]["ports"])
        .iter()
        .find(|p| p["protocol"] == "TCP" && p["name"] == "p2p-tcp")
        .and_then(|p| p["port"].as_u64())
        .expect("the headless Service has the P2P TCP port");
    let listen: Vec<&str> = resolved["network"]["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        listen.contains(&format!("/ip4/0.0.0.0/tcp/{p2p_port}").as_str()),
        "{name}: listen {listen:?}"
    );
    let bootstrap: BTreeSet<&str> = resolved["network"]["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let wanted: BTreeSet<String> = (0..replicas(committee))
        .map(|i| {
            format!("/dns4/{COMMITTEE}-{i}.{service}.{NAMESPACE}.svc.cluster.local/tcp/{p2p_port}")
        })
        .collect();
    assert_eq!(
        bootstrap,
        wanted.iter().map(String::as_str).collect(),
        "{name}: bootstrap list"
    );
    // Variables the pod sets took effect.
    let threads = env
        .iter()
        .find(|(k, _)| k == "AGENT_MESH_WORKER_THREADS")
        .map(|(_, v)| v.parse::<i64>().unwrap());
    if let Some(threads) = threads {
        assert_eq!(
            resolved["runtime"]["worker_threads"].as_integer(),
            Some(threads),
            "{name}"
        );
    }
    if let Some((_, shard)) = env.iter().find(|(k, _)| k == "AGENT_MESH_DATA_SHARD") {
        let shards = resolved["data"]["shards"].as_integer().unwrap() as u64;
        assert_eq!(
            shards,
            replicas(set),
            "{name}: AGENT_MESH_DATA_SHARD={shard}: one shard per replica"
        );
        assert_eq!(
            resolved["data"]["shard"].as_integer().unwrap() as u64,
            replicas(set) - 1,
            "{name}"
        );
    }
}

#[test]
fn identities_are_issued_for_every_pod_and_mounted_from_the_issuers_secrets() {
    let Some(manifests) = load(false) else { return };
    let (_, node) = manifests.node_toml();
    let job = manifests.get("Job", ISSUER);
    let pod = &job["spec"]["template"]["spec"];
    // node name -> roles, over every `ca provision` the Job runs.
    let mut issued: BTreeMap<String, String> = BTreeMap::new();
    for c in containers(pod) {
        let args: Vec<&str> = items(&c["args"])
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        if args.first() != Some(&"ca") || args.get(1) != Some(&"provision") {
            continue;
        }
        let flag = |name: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|w| w[0] == name)
                .map(|w| w[1])
                .collect()
        };
        assert_eq!(
            flag("--mesh-id").first().copied(),
            node["mesh_id"].as_str(),
            "{}: --mesh-id differs from node.toml's mesh_id",
            c["name"]
        );
        let roles = flag("--roles")
            .first()
            .copied()
            .unwrap_or("committee,aggregator,trainer,observer");
        for name in flag("--node") {
            assert!(
                issued.insert(name.to_string(), roles.to_string()).is_none(),
                "{name} issued twice"
            );
        }
    }
    for set in [COMMITTEE, PARTICIPANT] {
        let s = manifests.get("StatefulSet", set);
        for i in 0..replicas(s) {
            let pod_name = format!("{set}-{i}");
            let roles = issued
                .get(&pod_name)
                .unwrap_or_else(|| panic!("the issuer Job issues no identity for pod {pod_name}"));
            let committee = roles.split(',').any(|r| r.trim() == "committee");
            assert_eq!(committee, set == COMMITTEE, "{pod_name}: roles {roles}");
        }
    }
    // The Secrets the nodes mount are ones the Job publishes and may update.
    let role = manifests.get("Role", ISSUER);
    let mut writable: BTreeSet<&str> = BTreeSet::new();
    for rule in items(&role["rules"]) {
        let verbs: Vec<&Value> = items(&rule["verbs"]).iter().collect();
        if verbs.contains(&&Value::from("patch")) {
            writable.extend(
                items(&rule["resourceNames"])
                    .iter()
                    .map(|n| n.as_str().unwrap()),
            );
        }
        assert!(
            !verbs.contains(&&Value::from("*")),
            "the issuer's Role grants every verb"
        );
        assert!(
            !items(&rule["resources"]).contains(&Value::from("*")),
            "the issuer's Role grants every resource"
        );
    }
    let script: String = containers(pod)
        .flat_map(|c| items(&c["args"]))
        .filter_map(Value::as_str)
        .collect();
    for set in [COMMITTEE, PARTICIPANT] {
        let spec = &manifests.get("StatefulSet", set)["spec"]["template"]["spec"];
        for volume in items(&spec["volumes"]) {
            let Some(secret) = volume["secret"]["secretName"].as_str() else {
                continue;
            };
            assert!(
                writable.contains(secret),
                "{set} mounts Secret {secret}, which the issuer may not write"
            );
            assert!(
                script.contains(&format!("publish {secret}")),
                "{set} mounts Secret {secret}, which the issuer does not publish"
            );
            assert_ne!(
                secret, "agent-mesh-ca-private",
                "{set} mounts the CA's private key"
            );
        }
        // The key reaches the node as a 0600 file: copied, since fsGroup makes
        // Secret files group-readable and the node refuses those.
        let key = node["identity"]["key"].as_str().unwrap();
        let node_container = container(spec, NODE_CONTAINER);
        let key_mount = mount_of(node_container, key).unwrap();
        let key_volume = items(&spec["volumes"])
            .iter()
            .find(|v| v["name"] == key_mount["name"])
            .unwrap();
        if !spec["securityContext"]["fsGroup"].is_null() {
            assert!(
                key_volume["secret"].is_null(),
                "{set}: with fsGroup set, the kubelet makes a Secret's key file 0440 and the node refuses it"
            );
        }
        let installer = items(&spec["initContainers"])
            .iter()
            .find(|c| {
                items(&c["volumeMounts"])
                    .iter()
                    .any(|m| m["name"] == key_mount["name"] && m["readOnly"] != true)
            })
            .unwrap_or_else(|| panic!("{set}: no init container writes the key volume"));
        for mount in items(&installer["volumeMounts"]) {
            let volume = items(&spec["volumes"])
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            if let Some(mode) = volume["secret"]["defaultMode"].as_u64() {
                assert_eq!(
                    mode & 0o007,
                    0,
                    "{set}: the keys' Secret is readable by others ({mode:o})"
                );
            } else {
                assert!(
                    volume["secret"].is_null(),
                    "{set}: give the keys' Secret a defaultMode"
                );
            }
        }
        let install: String = items(&installer["args"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            install.contains("chmod 0600"),
            "{set}: the installed key is not made 0600"
        );
        let key_file = Path::new(key).file_name().unwrap().to_str().unwrap();
        assert!(
            install.contains(key_file),
            "{set}: the init container does not write {key_file}"
        );
    }
}

#[test]
fn committee_members_start_together_and_never_share_a_machine() {
    let Some(manifests) = load(false) else { return };
    let (_, node) = manifests.node_toml();
    let committee = manifests.get("StatefulSet", COMMITTEE);
    let expect = node["consensus"]["bootstrap_expect"].as_integer().unwrap();
    if expect > 1 {
        assert_eq!(
            committee["spec"]["podManagementPolicy"], "Parallel",
            "with OrderedReady, member 0 waits to be ready before member 1 starts, and no \
             member is ready before {expect} have met: the committee would never form"
        );
    }
    assert!(
        expect as u64 <= replicas(committee),
        "bootstrap_expect above the committee's replicas"
    );
    assert!(
        replicas(committee) % 2 == 1,
        "an even committee tolerates no more failures than one member less"
    );
    let labels = &committee["spec"]["template"]["metadata"]["labels"];
    let required = items(
        &committee["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"],
    );
    assert!(
        required
            .iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname"
                && selects(&t["labelSelector"]["matchLabels"], labels)),
        "committee members must be kept apart per machine"
    );
    let claims = items(&committee["spec"]["volumeClaimTemplates"]);
    let data_dir = node["data_dir"].as_str().unwrap();
    let mount = mount_of(
        container(&committee["spec"]["template"]["spec"], NODE_CONTAINER),
        data_dir,
    )
    .unwrap();
    assert!(
        claims
            .iter()
            .any(|c| c["metadata"]["name"] == mount["name"]),
        "the committee's data_dir must be on a per-pod PersistentVolumeClaim"
    );
    // Every selector selects its own pods.
    for set in [COMMITTEE, PARTICIPANT] {
        let s = manifests.get("StatefulSet", set);
        let labels = &s["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&s["spec"]["selector"]["matchLabels"], labels),
            "{set}: selector misses its pods"
        );
        let service = manifests.get("Service", str_of(&s["spec"]["serviceName"], "serviceName"));
        assert!(
            selects(&service["spec"]["selector"], labels),
            "{set}: its Service selects other pods"
        );
        assert_eq!(service["spec"]["publishNotReadyAddresses"], true, "{set}");
    }
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    let Some(manifests) = load(false) else { return };
    let namespace = manifests.get("Namespace", NAMESPACE);
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    for (workload, pod) in manifests.pod_specs() {
        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{workload}");
        assert_eq!(
            security["seccompProfile"]["type"], "RuntimeDefault",
            "{workload}"
        );
        assert_eq!(
            pod["enableServiceLinks"], false,
            "{workload}: Service links inject variables such as AGENT_MESH_DIRECT_LINK_PORT \
             for a Service named agent-mesh-direct-link"
        );
        for c in containers(pod) {
            let what = format!("{workload}/{}", c["name"]);
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(
                items(&sc["capabilities"]["drop"]),
                [Value::from("ALL")],
                "{what}"
            );
            assert!(items(&sc["capabilities"]["add"]).is_empty(), "{what}");
            assert!(
                !c["resources"]["limits"]["memory"].is_null(),
                "{what}: no memory limit"
            );
            assert!(
                !c["resources"]["requests"]["cpu"].is_null(),
                "{what}: no CPU request"
            );
            let image = str_of(&c["image"], "image");
            assert!(
                !image.ends_with(":latest") && image.contains(':'),
                "{what}: pin the image ({image})"
            );
        }
    }
}

#[test]
fn the_network_policy_opens_the_mesh_ports_to_nodes_and_the_api_to_the_namespace() {
    let Some(manifests) = load(false) else { return };
    let (_, node) = manifests.node_toml();
    let port = api_port(&node);
    let policies = manifests.all("NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let policy = policies[0];
    let committee =
        &manifests.get("StatefulSet", COMMITTEE)["spec"]["template"]["metadata"]["labels"];
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        committee
    ));
    let open = |port: u64, protocol: &str| -> Vec<&Value> {
        items(&policy["spec"]["ingress"])
            .iter()
            .filter(|rule| {
                items(&rule["ports"])
                    .iter()
                    .any(|p| p["port"].as_u64() == Some(port) && p["protocol"] == protocol)
            })
            .flat_map(|rule| items(&rule["from"]))
            .collect()
    };
    let direct_link = node["consensus"]["direct_link_port"].as_integer().unwrap() as u64;
    for (p, protocol) in [(7000, "TCP"), (7000, "UDP"), (direct_link, "TCP")] {
        let from = open(p, protocol);
        assert!(
            from.iter()
                .any(|f| selects(&f["podSelector"]["matchLabels"], committee)),
            "{p}/{protocol} is closed between mesh nodes"
        );
        assert!(
            from.iter().all(|f| f["namespaceSelector"].is_null()),
            "{p}/{protocol} open to other namespaces"
        );
    }
    let api = open(port, "TCP");
    assert!(
        api.iter()
            .any(|f| f["podSelector"] == serde_json::json!({})),
        "the API is closed to the namespace"
    );
    assert!(
        api.iter().any(
            |f| f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                == "monitoring"
        ),
        "the API is closed to the monitoring namespace"
    );
}

#[test]
fn every_shell_script_in_the_manifests_parses() {
    let Some(manifests) = load(false) else { return };
    let mut scripts = 0;
    for (workload, pod) in manifests.pod_specs() {
        for c in containers(pod) {
            let command: Vec<&str> = items(&c["command"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if command != ["/bin/sh", "-c"] {
                continue;
            }
            let script = str_of(&items(&c["args"])[0], "script");
            let out = Command::new("sh")
                .args(["-n", "-c", script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{workload}/{}: sh -n: {}",
                c["name"],
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                script.trim_start().starts_with("set -eu"),
                "{workload}/{}: start with set -eu",
                c["name"]
            );
            scripts += 1;
        }
    }
    assert!(scripts >= 3, "found {scripts} scripts");
}

/// Stands in for kubectl in the issuer Job's scripts: Secrets are folders
/// under `$FAKE_KUBE`, one file per key. It knows exactly the calls the
/// scripts make and fails on anything else; `FAKE_KUBE_FAIL_GET=1` makes
/// reads fail as a missing RBAC grant would.
const FAKE_KUBECTL: &str = r#"#!/usr/bin/env python3
import base64, json, os, pathlib, sys
store = pathlib.Path(os.environ["FAKE_KUBE"])
args = sys.argv[1:]
namespace = None
if args[:1] == ["-n"]:
    namespace, args = args[1], args[2:]
def fail(why):
    sys.stderr.write("kubectl stand-in: %s: %s\n" % (why, sys.argv[1:]))
    sys.exit(1)
if args[:2] == ["get", "secret"]:
    if os.environ.get("FAKE_KUBE_FAIL_GET"):
        fail("forbidden")
    if namespace != "agent-mesh" or "--ignore-not-found" not in args:
        fail("unexpected get")
    folder = store / args[2]
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            print(f.name, base64.b64encode(f.read_bytes()).decode())
elif args[:3] == ["create", "secret", "generic"]:
    if "--dry-run=client" not in args or namespace != "agent-mesh":
        fail("create must be a client-side dry run")
    data = {}
    for a in args[4:]:
        if a.startswith("--from-file="):
            key, path = a[len("--from-file="):].split("=", 1)
            try:
                data[key] = base64.b64encode(pathlib.Path(path).read_bytes()).decode()
            except OSError as e:
                fail("error reading %s: %s" % (path, e))
    print(json.dumps({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": args[3], "namespace": namespace}, "data": data}))
elif args[:1] == ["label"]:
    if "--local" not in args:
        fail("label must be local")
    doc = json.load(sys.stdin)
    for a in args[1:]:
        if "=" in a and not a.startswith("-"):
            k, v = a.split("=", 1)
            doc["metadata"].setdefault("labels", {})[k] = v
    print(json.dumps(doc))
elif args[:1] == ["apply"]:
    if "--server-side" not in args:
        fail("apply must be server-side")
    doc = json.load(sys.stdin)
    folder = store / doc["metadata"]["name"]
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    for key, value in doc["data"].items():
        (folder / key).write_bytes(base64.b64decode(value))
else:
    fail("unexpected command")
"#;

/// Runs the issuer Job's containers in order, as the kubelet would, against
/// the stand-in kubectl; `extra_args` are appended to the last `ca provision`.
fn run_issuer(
    job: &Value,
    store: &Path,
    fake_bin: &Path,
    extra_args: &[&str],
    fail_get: bool,
) -> bool {
    let work = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work_path = work.path().to_str().unwrap();
    let pod = &job["spec"]["template"]["spec"];
    let all: Vec<&Value> = containers(pod).collect();
    let last_provision = all.iter().rposition(|c| c["args"][1] == "provision");
    for (i, c) in all.iter().enumerate() {
        let args: Vec<String> = items(&c["args"])
            .iter()
            .map(|a| str_of(a, "arg").replace("/work", work_path))
            .collect();
        let mut command = if items(&c["command"]) == [Value::from("/bin/sh"), Value::from("-c")] {
            let mut sh = Command::new("sh");
            sh.arg("-c").args(&args);
            sh
        } else {
            assert!(
                str_of(&c["image"], "image").starts_with("agent-mesh:"),
                "{}",
                c["name"]
            );
            let mut node = Command::new(bin());
            node.args(&args);
            if Some(i) == last_provision {
                node.args(extra_args);
            }
            node
        };
        let path = format!(
            "{}:{}",
            fake_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command
            .env("PATH", path)
            .env("FAKE_KUBE", store)
            .env("NAMESPACE", NAMESPACE)
            .env("HOME", home.path());
        if fail_get {
            command.env("FAKE_KUBE_FAIL_GET", "1");
        }
        let out = command.output().unwrap();
        if !out.status.success() {
            eprintln!(
                "{} failed: {}",
                c["name"],
                String::from_utf8_lossy(&out.stderr)
            );
            return false;
        }
    }
    true
}

/// The Secret `name` in the stand-in's store: key -> bytes.
fn secret(store: &Path, name: &str) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(store.join(name)) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Installs pod `pod`'s identity from the published Secrets as the pod's init
/// container does, and runs `node --check` and `ca verify` on it.
fn check_published_identity(store: &Path, config: &Path, pod: &str) -> String {
    let identities = secret(store, "agent-mesh-identities");
    let dir = tempfile::tempdir().unwrap();
    for (file, key) in [
        ("node.key.pem", "key.pem"),
        ("node.pub.pem", "pub.pem"),
        ("node.cert.pem", "cert.pem"),
    ] {
        let bytes = identities
            .get(&format!("{pod}.{key}"))
            .unwrap_or_else(|| panic!("agent-mesh-identities lacks {pod}.{key}"));
        std::fs::write(dir.path().join(file), bytes).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("node.key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let ca = store.join("agent-mesh-ca");
    let mut check = Command::new(bin());
    check.args(["node", "--config", config.to_str().unwrap(), "--check"]);
    for (var, _) in std::env::vars() {
        if var.starts_with("AGENT_MESH_") {
            check.env_remove(var);
        }
    }
    let out = check
        .env("AGENT_MESH_KEY", dir.path().join("node.key.pem"))
        .env("AGENT_MESH_CERT", dir.path().join("node.cert.pem"))
        .env("AGENT_MESH_CA_CERT", ca.join("ca.cert.pem"))
        .env("AGENT_MESH_CA_PIN", ca.join("ca.pin"))
        .env("AGENT_MESH_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(&[
        "ca",
        "verify",
        "--ca",
        ca.to_str().unwrap(),
        "--cert",
        dir.path().join("node.cert.pem").to_str().unwrap(),
        "--node",
        dir.path().to_str().unwrap(),
    ])
}

#[test]
fn the_issuer_job_issues_once_and_keeps_every_key_on_reruns() {
    let Some(manifests) = load(false) else { return };
    let job = manifests.get("Job", ISSUER);
    let scratch = tempfile::tempdir().unwrap();
    let fake_bin = scratch.path().join("bin");
    std::fs::create_dir(&fake_bin).unwrap();
    let kubectl = fake_bin.join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (text, _) = manifests.node_toml();
    let config = scratch.path().join("node.toml");
    std::fs::write(&config, text).unwrap();
    let store = scratch.path().join("secrets");
    std::fs::create_dir(&store).unwrap();
    let pods: Vec<String> = [COMMITTEE, PARTICIPANT]
        .iter()
        .flat_map(|set| {
            (0..replicas(manifests.get("StatefulSet", set))).map(move |i| format!("{set}-{i}"))
        })
        .collect();

    // A read the issuer may not do stops it before it could make a new CA.
    assert!(
        !run_issuer(job, &store, &fake_bin, &[], true),
        "the Job ignored a failed read"
    );
    assert!(secret(&store, "agent-mesh-ca-private").is_empty());

    // First run: a CA, the admin, and every pod's identity, each working.
    assert!(
        run_issuer(job, &store, &fake_bin, &[], false),
        "first run failed"
    );
    let private = secret(&store, "agent-mesh-ca-private");
    assert_eq!(
        private.keys().collect::<Vec<_>>(),
        ["ca.cert.pem", "ca.key.pem", "ca.pin"]
    );
    let public = secret(&store, "agent-mesh-ca");
    assert!(
        !public.contains_key("ca.key.pem"),
        "the CA key is in the Secret every node mounts"
    );
    assert_eq!(public["ca.cert.pem"], private["ca.cert.pem"]);
    assert!(secret(&store, "agent-mesh-admin").contains_key("node.key.pem"));
    let first = secret(&store, "agent-mesh-identities");
    assert_eq!(
        first.len(),
        pods.len() * 4,
        "{:?}",
        first.keys().collect::<Vec<_>>()
    );
    for pod in &pods {
        let verified = check_published_identity(&store, &config, pod);
        let committee = verified.contains("committee");
        assert_eq!(committee, pod.starts_with(COMMITTEE), "{pod}: {verified}");
    }

    // A rerun in a fresh pod changes nothing; one more node changes only that.
    assert!(
        run_issuer(job, &store, &fake_bin, &[], false),
        "rerun failed"
    );
    assert_eq!(
        secret(&store, "agent-mesh-identities"),
        first,
        "a rerun changed identities"
    );
    assert_eq!(
        secret(&store, "agent-mesh-ca-private"),
        private,
        "a rerun changed the CA"
    );
    let extra = format!("{PARTICIPANT}-{}", pods.len());
    assert!(
        run_issuer(job, &store, &fake_bin, &["--node", &extra], false),
        "adding a node failed"
    );
    let grown = secret(&store, "agent-mesh-identities");
    assert_eq!(grown.len(), first.len() + 4);
    assert!(
        first.iter().all(|(k, v)| grown.get(k) == Some(v)),
        "adding a node changed others"
    );
    check_published_identity(&store, &config, &extra);

    // Renewal: without its certificate, a pod gets a new one for the same key.
    let cert = format!("{COMMITTEE}-0.cert.pem");
    std::fs::remove_file(store.join("agent-mesh-identities").join(&cert)).unwrap();
    assert!(
        run_issuer(job, &store, &fake_bin, &[], false),
        "renewal failed"
    );
    let renewed = secret(&store, "agent-mesh-identities");
    assert_ne!(renewed[&cert], first[&cert], "no new certificate");
    assert_eq!(
        renewed[&format!("{COMMITTEE}-0.key.pem")],
        first[&format!("{COMMITTEE}-0.key.pem")]
    );
    check_published_identity(&store, &config, &format!("{COMMITTEE}-0"));

    // Identities issued elsewhere (no CA key in the cluster) are left alone.
    std::fs::remove_dir_all(store.join("agent-mesh-ca-private")).unwrap();
    let before = secret(&store, "agent-mesh-identities");
    assert!(
        run_issuer(job, &store, &fake_bin, &[], false),
        "run beside external identities failed"
    );
    assert_eq!(secret(&store, "agent-mesh-identities"), before);
    assert!(
        secret(&store, "agent-mesh-ca-private").is_empty(),
        "a CA key appeared"
    );
}
