//! The container images the Kubernetes manifests run, against their Dockerfiles
//! (`deploy/docker/`): each `registry.example/…` image is built by the Dockerfile whose header
//! tags it, at the workspace's version; its entrypoint is a binary of ours that accepts the
//! container's arguments (run for real with `--help`); it exposes exactly the container's
//! ports and runs as the pod's user; the agent's carries the PostgreSQL client programs at the
//! version of the server beside it or newer; the builder's Rust is the workspace's. With a
//! container engine at hand, both images are built and their binaries run.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetshift_tests::binary;
use yaml_rust2::Yaml;

use super::deploy_manifests::{documents, list};

/// What a Dockerfile says about the image it builds.
#[derive(Debug)]
struct Dockerfile {
    path: PathBuf,
    /// From the `docker build … -t <tag>` line of its header.
    tag: String,
    /// The final stage's lines.
    runtime: Vec<String>,
    text: String,
}

impl Dockerfile {
    fn read(path: PathBuf) -> Self {
        let text = std::fs::read_to_string(&path).expect("Dockerfile");
        let tag = text
            .lines()
            .find_map(|line| line.split_once(" -t ").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{}: no `-t <tag>` in its header", path.display()))
            .to_owned();
        let stages: Vec<&str> = text.split("\nFROM ").collect();
        let runtime = stages
            .last()
            .expect("a stage")
            .lines()
            .map(str::to_owned)
            .collect();
        Self {
            path,
            tag,
            runtime,
            text,
        }
    }

    fn instruction(&self, name: &str) -> String {
        self.runtime
            .iter()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{}: no {name} in the final stage", self.path.display()))
            .to_owned()
    }

    /// The entrypoint's program name.
    fn entrypoint(&self) -> String {
        let entrypoint: Vec<String> =
            serde_json::from_str(&self.instruction("ENTRYPOINT")).expect("exec-form ENTRYPOINT");
        Path::new(&entrypoint[0])
            .file_name()
            .expect("a program")
            .to_string_lossy()
            .into_owned()
    }

    fn exposed(&self) -> Vec<i64> {
        let mut ports: Vec<i64> = self
            .instruction("EXPOSE")
            .split_whitespace()
            .map(|port| port.parse().expect("a port"))
            .collect();
        ports.sort_unstable();
        ports
    }

    fn user(&self) -> i64 {
        self.instruction("USER")
            .split(':')
            .next()
            .and_then(|uid| uid.parse().ok())
            .expect("a numeric USER")
    }
}

fn dockerfiles() -> Vec<Dockerfile> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(directory)
        .expect("deploy/docker")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".Dockerfile"))
        .collect();
    paths.sort();
    paths.into_iter().map(Dockerfile::read).collect()
}

/// Our binary of that name, as the tests built it.
fn built(program: &str) -> PathBuf {
    match program {
        "fleetshift" => binary::fleetshift(),
        "fleetshift-agent" => binary::agent(),
        other => panic!("{other} is no binary of the workspace"),
    }
}

/// The major version of a `postgres:<major>` image in the pod, if any.
fn postgres_major(containers: &[Yaml]) -> Option<u32> {
    containers.iter().find_map(|container| {
        container["image"]
            .as_str()?
            .strip_prefix("postgres:")?
            .split(['.', '-'])
            .next()?
            .parse()
            .ok()
    })
}

#[test]
fn every_image_the_manifests_run_is_built_by_a_dockerfile_that_agrees_with_them() {
    let dockerfiles = dockerfiles();
    assert!(dockerfiles.len() >= 2, "{dockerfiles:?}");
    let mut checked = 0;
    for (file, document) in documents() {
        let pod = &document["spec"]["template"]["spec"];
        let containers = list(&pod["containers"]);
        for container in containers {
            let Some(image) = container["image"].as_str() else {
                continue;
            };
            if !image.starts_with("registry.example/") {
                continue;
            }
            let context = format!("{file}: {image}");
            let dockerfile = dockerfiles
                .iter()
                .find(|dockerfile| dockerfile.tag == image)
                .unwrap_or_else(|| panic!("{context}: no Dockerfile tags it"));
            assert!(
                image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
                "{context}: not the workspace's version"
            );
            let arguments: Vec<&str> = list(&container["args"])
                .iter()
                .filter_map(Yaml::as_str)
                .collect();
            let accepted = Command::new(built(&dockerfile.entrypoint()))
                .args(&arguments)
                .arg("--help")
                .output()
                .expect("run the entrypoint");
            assert!(
                accepted.status.success(),
                "{context}: {} does not accept {arguments:?}: {}",
                dockerfile.entrypoint(),
                binary::printed(&accepted)
            );
            let mut ports: Vec<i64> = list(&container["ports"])
                .iter()
                .filter_map(|port| port["containerPort"].as_i64())
                .collect();
            ports.sort_unstable();
            assert_eq!(dockerfile.exposed(), ports, "{context}: EXPOSE");
            let user = container["securityContext"]["runAsUser"]
                .as_i64()
                .or_else(|| pod["securityContext"]["runAsUser"].as_i64())
                .unwrap_or_else(|| panic!("{context}: no runAsUser"));
            assert_eq!(dockerfile.user(), user, "{context}: USER");
            if let Some(server) = postgres_major(containers) {
                let client = dockerfile
                    .text
                    .split("postgresql-client-")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|major| major.parse::<u32>().ok())
                    .unwrap_or_else(|| panic!("{context}: no postgresql-client-<major>"));
                assert!(
                    client >= server,
                    "{context}: pg_dump {client} < server {server}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "the coordinator and the agent images");
    let workspace =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .expect("Cargo.toml");
    let rust = workspace
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    for dockerfile in &dockerfiles {
        assert!(
            dockerfile.text.contains(&format!("FROM rust:{rust}-")),
            "{}: builds with another Rust than {rust}",
            dockerfile.path.display()
        );
    }
}

/// Whether a container engine answers here.
fn engine() -> Option<&'static str> {
    ["docker", "podman"].into_iter().find(|engine| {
        Command::new(engine)
            .arg("info")
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

#[test]
fn the_images_build_and_their_binaries_run_where_a_container_engine_is() {
    let Some(engine) = engine() else {
        eprintln!("no container engine answers here: the images are not built");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dockerfile in dockerfiles() {
        let build = Command::new(engine)
            .current_dir(&root)
            .args(["build", "-f"])
            .arg(&dockerfile.path)
            .args(["-t", &dockerfile.tag, "."])
            .output()
            .expect("build");
        assert!(build.status.success(), "{}", binary::printed(&build));
        let run = Command::new(engine)
            .args(["run", "--rm", &dockerfile.tag, "--version"])
            .output()
            .expect("run");
        assert!(run.status.success(), "{}", binary::printed(&run));
    }
}
