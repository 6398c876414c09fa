//! The shipped Kubernetes manifests (`deploy/kubernetes/`), checked the way a schema validator
//! and a careful reviewer would: every document parses, has the fields its kind requires, and
//! hangs together: selectors match the pods they select, probes and Services name ports the
//! containers declare, mounts name volumes, the configurations in ConfigMaps load with the
//! binaries' own loaders, and the paths in them lie under the mounts that provide them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fleetshift_agent::config::AgentConfig;
use fleetshift_coordinator::config::CoordinatorConfig;
use yaml_rust2::{Yaml, YamlLoader};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every document of every manifest, with the file it came from.
pub(super) fn documents() -> Vec<(String, Yaml)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests");
    files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("manifest");
            let name = file
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            YamlLoader::load_from_str(&text)
                .unwrap_or_else(|error| panic!("{name}: {error}"))
                .into_iter()
                .map(move |document| (name.clone(), document))
        })
        .collect()
}

fn text<'y>(yaml: &'y Yaml, what: &str) -> &'y str {
    yaml.as_str()
        .unwrap_or_else(|| panic!("{what} is missing or not a string"))
}

pub(super) fn list(yaml: &Yaml) -> &[Yaml] {
    yaml.as_vec().map_or(&[], Vec::as_slice)
}

fn labels(yaml: &Yaml) -> BTreeMap<String, String> {
    yaml.as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.as_str()?.to_owned(), value.as_str()?.to_owned())))
        .collect()
}

/// Whether every pair of `selector` is in `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

/// A workload's pod template, as the checks need it.
struct Pods {
    name: String,
    labels: BTreeMap<String, String>,
    /// Container port names and numbers.
    ports: BTreeMap<String, i64>,
}

fn check_pod_spec(workload: &str, template: &Yaml, claims: &[Yaml]) -> BTreeMap<String, i64> {
    let spec = &template["spec"];
    let mut volumes: BTreeSet<String> = list(&spec["volumes"])
        .iter()
        .map(|volume| text(&volume["name"], "volume name").to_owned())
        .collect();
    volumes.extend(
        claims
            .iter()
            .map(|claim| text(&claim["metadata"]["name"], "claim name").to_owned()),
    );
    let mut ports = BTreeMap::new();
    let containers: Vec<&Yaml> = list(&spec["initContainers"])
        .iter()
        .chain(list(&spec["containers"]))
        .collect();
    assert!(
        !list(&spec["containers"]).is_empty(),
        "{workload}: no containers"
    );
    for container in containers {
        let name = text(&container["name"], "container name");
        text(&container["image"], &format!("{workload}/{name}: image"));
        for mount in list(&container["volumeMounts"]) {
            let volume = text(&mount["name"], "mount name");
            assert!(
                volumes.contains(volume),
                "{workload}/{name} mounts {volume}, which is no volume"
            );
            assert!(text(&mount["mountPath"], "mountPath").starts_with('/'));
        }
        for port in list(&container["ports"]) {
            let number = port["containerPort"]
                .as_i64()
                .unwrap_or_else(|| panic!("{workload}/{name}: containerPort"));
            if let Some(port_name) = port["name"].as_str() {
                ports.insert(port_name.to_owned(), number);
            }
        }
    }
    ports
}

#[test]
fn every_kubernetes_manifest_is_well_formed_and_hangs_together() {
    let documents = documents();
    let mut workloads: Vec<Pods> = Vec::new();
    let mut config_maps: BTreeMap<String, Yaml> = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    for (file, document) in &documents {
        let kind = text(&document["kind"], &format!("{file}: kind"));
        kinds.insert(kind.to_owned());
        text(&document["apiVersion"], &format!("{file}: apiVersion"));
        let name = text(
            &document["metadata"]["name"],
            &format!("{file}: metadata.name"),
        );
        if kind != "Namespace" {
            assert_eq!(
                document["metadata"]["namespace"].as_str(),
                Some("fleetshift"),
                "{file}: {kind} {name} belongs in the fleetshift namespace"
            );
        }
        match kind {
            "Deployment" | "StatefulSet" => {
                let spec = &document["spec"];
                let template = &spec["template"];
                let pod_labels = labels(&template["metadata"]["labels"]);
                assert!(
                    selects(&labels(&spec["selector"]["matchLabels"]), &pod_labels),
                    "{file}: {name}'s selector does not select its own pods"
                );
                assert!(
                    spec["replicas"]
                        .as_i64()
                        .is_some_and(|replicas| replicas >= 3)
                );
                let ports = check_pod_spec(name, template, list(&spec["volumeClaimTemplates"]));
                workloads.push(Pods {
                    name: name.to_owned(),
                    labels: pod_labels,
                    ports,
                });
            }
            "ConfigMap" => {
                config_maps.insert(name.to_owned(), document.clone());
            }
            _ => {}
        }
    }
    for required in [
        "Namespace",
        "ConfigMap",
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "EndpointSlice",
    ] {
        assert!(kinds.contains(required), "no {required} among {kinds:?}");
    }

    // Probes on the health endpoints, on declared ports, for every fleetshift container.
    for (file, document) in &documents {
        if !matches!(
            document["kind"].as_str(),
            Some("Deployment" | "StatefulSet")
        ) {
            continue;
        }
        let workload = text(&document["metadata"]["name"], "name");
        let pods = workloads
            .iter()
            .find(|pods| pods.name == workload)
            .expect("workload");
        for container in list(&document["spec"]["template"]["spec"]["containers"]) {
            let image = text(&container["image"], "image");
            if !image.contains("fleetshift") {
                continue;
            }
            for (probe, path) in [
                ("livenessProbe", "/health/liveness"),
                ("readinessProbe", "/health/readiness"),
            ] {
                let get = &container[probe]["httpGet"];
                assert_eq!(
                    get["path"].as_str(),
                    Some(path),
                    "{file}: {workload} {probe}"
                );
                let port = text(&get["port"], "probe port");
                assert!(pods.ports.contains_key(port), "{file}: {probe} port {port}");
            }
        }
    }

    // Services and disruption budgets select real pods and name their ports.
    let slices: BTreeSet<String> = documents
        .iter()
        .filter(|(_, document)| document["kind"].as_str() == Some("EndpointSlice"))
        .map(|(_, document)| {
            text(
                &document["metadata"]["labels"]["kubernetes.io/service-name"],
                "EndpointSlice service name",
            )
            .to_owned()
        })
        .collect();
    for (file, document) in &documents {
        let name = text(&document["metadata"]["name"], "name");
        match document["kind"].as_str() {
            Some("Service") => {
                let selector = labels(&document["spec"]["selector"]);
                if selector.is_empty() {
                    assert!(
                        slices.contains(name),
                        "{file}: {name} has neither selector nor endpoints"
                    );
                    continue;
                }
                let pods = workloads
                    .iter()
                    .find(|pods| selects(&selector, &pods.labels))
                    .unwrap_or_else(|| panic!("{file}: Service {name} selects no pods"));
                for port in list(&document["spec"]["ports"]) {
                    if let Some(target) = port["targetPort"].as_str() {
                        assert!(
                            pods.ports.contains_key(target),
                            "{file}: {name} targets {target}"
                        );
                    }
                }
            }
            Some("PodDisruptionBudget") => {
                let selector = labels(&document["spec"]["selector"]["matchLabels"]);
                assert!(
                    workloads
                        .iter()
                        .any(|pods| selects(&selector, &pods.labels)),
                    "{file}: PodDisruptionBudget {name} selects no pods"
                );
            }
            _ => {}
        }
    }

    // The configurations load with the binaries' own loaders and match the pods around them.
    let scratch = tempfile::tempdir().expect("scratch");
    let coordinator_toml = text(
        &config_maps["fleetshift-coordinator"]["data"]["coordinator.toml"],
        "coordinator.toml",
    );
    let path = scratch.path().join("coordinator.toml");
    std::fs::write(&path, coordinator_toml).expect("write");
    let coordinator = CoordinatorConfig::load(&path).expect("the coordinator's ConfigMap loads");
    let coordinator_pods = workloads
        .iter()
        .find(|pods| pods.name == "fleetshift-coordinator")
        .expect("coordinator Deployment");
    assert_eq!(
        Some(i64::from(coordinator.listen.port())),
        coordinator_pods.ports.get("grpc").copied()
    );
    assert_eq!(
        coordinator
            .telemetry_listen
            .map(|address| i64::from(address.port())),
        coordinator_pods.ports.get("telemetry").copied()
    );
    assert!(
        coordinator
            .tls
            .certificate
            .starts_with("/etc/fleetshift/tls")
    );

    let template = text(
        &config_maps["fleetshift-agent"]["data"]["agent.toml.template"],
        "agent.toml.template",
    );
    let url_file = scratch.path().join("url");
    std::fs::write(&url_file, "postgres://fleetshift:secret@127.0.0.1:5432/app").expect("url");
    let rendered = template.replace("@POD@", "users-db-0").replace(
        "/etc/fleetshift/database/url",
        url_file.to_str().expect("path"),
    );
    let path = scratch.path().join("agent.toml");
    std::fs::write(&path, rendered).expect("write");
    let agent = AgentConfig::load(&path).expect("the agent's template loads once rendered");
    assert_eq!(agent.agent_id, "users-db-0");
    assert_eq!(agent.shards[0].id, "users-db-0-app");
    let agent_pods = workloads
        .iter()
        .find(|pods| pods.name == "users-db")
        .expect("StatefulSet");
    assert_eq!(
        agent
            .telemetry_listen
            .map(|address| i64::from(address.port())),
        agent_pods.ports.get("telemetry").copied()
    );
    let link = agent.coordinator.expect("[coordinator]");
    assert!(
        link.endpoints[0]
            .address
            .contains("fleetshift-coordinator.fleetshift.svc:7443")
    );
}
