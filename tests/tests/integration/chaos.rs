//! The chaos campaign as CI runs it: `fleetshift-chaos` with fixed seeds, a few rounds each,
//! on a three-member etcd and on a single member; each must inject its faults and find no
//! violation. (The checker's own tests, in the chaos crate, show it finds each kind.)
//!
//! The seeds are chosen (with `--schedule-only`) so that every round's target lies past where
//! the round before left the fleet and no operator cancels: every round's plan has work to do
//! while its faults strike, whatever the fleet's timing.

use std::process::Output;

use fleetshift_tests::binary;

/// Runs `fleetshift-chaos` with `arguments`, its report as JSON on stdout.
async fn campaign(arguments: &[&str]) -> (Output, serde_json::Value) {
    let work = tempfile::tempdir().expect("work directory");
    let mut command = std::process::Command::new(binary::chaos());
    command
        .args(arguments)
        .args(["--output", "json", "--rows", "20000", "--work-dir"])
        .arg(work.path());
    let output = tokio::task::spawn_blocking(move || command.output().expect("run the campaign"))
        .await
        .expect("the campaign ran");
    let report = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (output, report)
}

fn assert_clean(output: &Output, report: &serde_json::Value, classes: &[&str]) {
    let printed = binary::printed(output);
    assert_eq!(output.status.code(), Some(0), "{printed}");
    assert_eq!(report["violations"], serde_json::json!([]), "{printed}");
    assert_eq!(
        report["skipped"],
        serde_json::json!([]),
        "no round skipped: {printed}"
    );
    let plans = report["plans"].as_array().expect("plans");
    assert!(!plans.is_empty(), "{printed}");
    assert!(
        plans
            .iter()
            .all(|plan| plan["ended_after_heal_ms"].is_u64()),
        "every plan ended: {printed}"
    );
    for class in classes {
        assert!(
            report["faults_by_class"][class]
                .as_u64()
                .is_some_and(|count| count > 0),
            "{class} faults were injected: {printed}"
        );
    }
    assert!(
        printed.contains("(replay with --seed"),
        "the seed is printed: {printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_campaign_on_three_etcd_members_finds_no_violation() {
    let (output, report) = campaign(&["--seed", "45", "--rounds", "4"]).await;
    assert_clean(
        &output,
        &report,
        &[
            "kill",
            "stop",
            "pg-restart",
            "etcd",
            "partition",
            "disk-full",
            "clock",
        ],
    );
    assert_eq!(report["etcd_members"], 3);
    let partitions: Vec<&str> = report["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .filter_map(|fault| fault["fault"].as_str())
        .collect();
    assert!(
        partitions.contains(&"partition") && partitions.contains(&"isolate-replica"),
        "an agent cut off the coordinators and a replica cut off etcd: {partitions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_campaign_on_one_etcd_member_finds_no_violation() {
    let (output, report) = campaign(&[
        "--seed",
        "13",
        "--rounds",
        "3",
        "--etcd-members",
        "1",
        "--faults",
        "kill,etcd,operator",
    ])
    .await;
    assert_clean(&output, &report, &["kill", "etcd", "operator"]);
    assert_eq!(report["etcd_members"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_shard_damaged_behind_fleetshifts_back() {
    let (output, report) = campaign(&[
        "--seed",
        "13",
        "--rounds",
        "1",
        "--etcd-members",
        "1",
        "--faults",
        "operator",
        "--tamper",
    ])
    .await;
    let printed = binary::printed(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "violations exit 1: {printed}"
    );
    let violations = report["violations"].as_array().expect("violations");
    assert!(
        violations
            .iter()
            .any(|seen| seen["check"] == "applied-twice"
                && seen["shard"] == "host-0-db0"
                && seen["round"] == 0),
        "{printed}"
    );
    assert!(
        printed.contains("are kept in"),
        "the fleet is kept: {printed}"
    );
}

#[tokio::test]
async fn a_fault_class_not_known_is_refused_naming_it() {
    let (output, _) = campaign(&["--faults", "kill,partiton"]).await;
    let printed = binary::printed(&output);
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("unknown fault class \"partiton\"")
            && printed
                .contains("kill, stop, pg-restart, etcd, operator, partition, disk-full and clock"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_seed_draws_the_same_schedule_every_time() {
    let drawn = || async {
        let mut command = std::process::Command::new(binary::chaos());
        command.args([
            "--seed",
            "7",
            "--rounds",
            "20",
            "--schedule-only",
            "--output",
            "json",
        ]);
        tokio::task::spawn_blocking(move || command.output().expect("run"))
            .await
            .expect("ran")
    };
    let (first, second) = (drawn().await, drawn().await);
    assert_eq!(first.status.code(), Some(0), "{}", binary::printed(&first));
    let rounds: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON");
    assert_eq!(rounds.as_array().map(Vec::len), Some(20));
    assert_eq!(first.stdout, second.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_campaign_stops_its_whole_fleet() {
    use std::io::BufRead;
    use std::process::Stdio;

    let work = tempfile::tempdir().expect("work directory");
    let mut child = std::process::Command::new(binary::chaos())
        .args([
            "--seed",
            "5",
            "--rounds",
            "50",
            "--etcd-members",
            "1",
            "--faults",
            "partition,disk-full,clock",
            "--rows",
            "1000",
            "--work-dir",
        ])
        .arg(work.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the campaign");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    // Read until the first round starts: the whole fleet is up then.
    let (started, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.expect("a line");
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("round 0:") {
                return (seen, lines);
            }
        }
        panic!("the campaign ended before its first round: {seen}");
    })
    .await
    .expect("read");
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(terminated.success());
    let (status, said) = tokio::task::spawn_blocking(move || {
        let said: Vec<String> = rest.map_while(Result::ok).collect();
        (child.wait().expect("wait"), said.join("\n"))
    })
    .await
    .expect("waited");
    let printed = format!("{started}{said}");
    assert_eq!(status.code(), Some(3), "{printed}");
    assert!(printed.contains("interrupted by SIGTERM"), "{printed}");

    let home = work.path().to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&home))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "replicas or agents left running"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        !mounts.contains(&home),
        "a backup disk left mounted: {mounts}"
    );
    let namespaces = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !namespaces.contains(&format!("fleetshift-chaos-{pid}-")),
        "a namespace left: {namespaces}"
    );
}
