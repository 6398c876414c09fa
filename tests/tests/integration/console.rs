//! The web console against a real fleet: etcd, two `fleetshift serve` replicas serving their
//! consoles, one `fleetshift-agent` with six PostgreSQL shards, one of which lacks the table
//! the plan alters. In a real headless Chromium holding an operator's certificate, the plan
//! page shows every shard, follows the rollout live, groups the failed shard's reason, and
//! keeps following it on the other replica's console when the one it loaded from is
//! SIGKILLed mid-rollout; a shard's page shows its ledger as the shard keeps it. The fleet grid and the plan's timeline are saved as screenshots
//! (`target/artefacts/console/`: `fleet.png`, `plan.png`,
//! `timeline.png`, `shard.png`). Without the viewer role, or a certificate, the console
//! refuses, and holds each identity to the replica's limits; only live replicas' consoles are listed and may read each other's answers. The
//! plans list shows a new plan live; a phased plan's page shows its phases, and its shards
//! waiting for their window.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetshift_common::proto::v1::fleet_service_client::FleetServiceClient;
use fleetshift_common::proto::v1::{
    BaselinePolicy, BaselineQuery, CreatePlanRequest, HostDuties, Plan, PlanState, Schedule,
    ShardState, ShardTask, Wave, WavePolicy,
};
use fleetshift_common::tls::identity::Role;
use fleetshift_common::tls::mtls::{self, TlsFiles};
use fleetshift_common::tls::pki;
use fleetshift_coordinator::rollout::records;
use fleetshift_tests::browser::{Browser, HttpAnswer, http_exchange};
use fleetshift_tests::fleet::{
    FleetGround, Process, agent_config_text, await_leader, channel_as, logs, shard_tables,
    shards_announced, spawn_console_replica, spawn_console_replica_with,
};
use fleetshift_tests::wait::wait_until;
use fleetshift_tests::{binary, fixtures, rollout};
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::support;

const ROLES: &str = "viewers = [\"alice\", \"ops\"]\noperators = [\"ops\"]\napprovers = [\"ops\"]";
const SHARDS: usize = 6;
/// The shard whose database lacks `accounts`.
const BROKEN: &str = "a-db2";
const SCHEMA: &str = "CREATE TABLE accounts (id bigint PRIMARY KEY);";

fn artefacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artefacts/console")
}

/// How many cells of the plan page are in `state` (`data-state`), as an expression.
fn cells_in(state: &str) -> String {
    format!("document.querySelectorAll('#waves .cell[data-state=\"{state}\"]').length")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_page_follows_a_rollout_live_across_a_replica_death() {
    let ground = FleetGround::start().await;
    for operator in ["alice", "ops"] {
        ground.issue(Role::Operator, operator);
    }
    ground.issue(Role::Agent, "a");
    let home = ground.home.path().to_path_buf();
    let (port_1, web_1, mut replica_1) =
        spawn_console_replica(&home, "c1", &ground.etcd.endpoint, ROLES);
    let (port_2, web_2, _replica_2) =
        spawn_console_replica(&home, "c2", &ground.etcd.endpoint, ROLES);
    let diagnose = || logs(&home, &["c1.log", "c2.log", "agent.log"]);
    assert!(
        await_leader(&ground.store, Duration::from_secs(20)).await,
        "no leader\n{}",
        diagnose()
    );

    let database = support::database("console").await;
    let mut urls = Vec::new();
    for index in 0..SHARDS {
        let name = format!("console_{index}");
        let url = database
            .cluster
            .create_database(&name)
            .await
            .expect("database");
        let admin = database.cluster.admin_pool(&name).await.expect("pool");
        if format!("a-db{index}") != BROKEN {
            sqlx::raw_sql(SCHEMA).execute(&admin).await.expect("schema");
        }
        admin.close().await;
        urls.push(url);
    }
    let config = home.join("agent.toml");
    let shards = shard_tables(&home, "a", &urls);
    std::fs::write(&config, agent_config_text("a", &[port_1, port_2], &shards)).expect("config");
    let _agent = Process::spawn(
        &binary::agent(),
        &["--config", config.to_str().expect("path"), "run"],
        &home.join("agent.log"),
    );
    let surviving = format!("https://localhost:{port_2}");
    let client = FleetServiceClient::new(channel_as(&surviving, &ground.pki, "operator-ops").await);
    let announced = shards_announced(&client, SHARDS, Duration::from_secs(60)).await;
    assert!(announced, "the agent never announced\n{}", diagnose());

    let migrations = fixtures::migrations(&[
        ("1_note.sql", "ALTER TABLE accounts ADD COLUMN note text;"),
        ("2_owner.sql", "ALTER TABLE accounts ADD COLUMN owner text;"),
    ]);
    let mut prepared = rollout::prepare(
        &client,
        CreatePlanRequest {
            migration_set: Some(fixtures::shipped(migrations.path())),
            target_version: String::new(),
            selector: [("env".to_owned(), "test".to_owned())].into(),
            waves: Some(WavePolicy {
                canary_shards: 0,
                percentages: vec![100],
                max_concurrency_per_wave: 2,
                max_concurrency_per_host: 2,
                failure_threshold: 10,
                max_shard_retries: 0,
            }),
            limits: None,
            // Measured before and after on every shard: the shard page charts them.
            duties: Some(HostDuties {
                baselines: Some(BaselinePolicy {
                    queries: vec![BaselineQuery {
                        name: "catalog".to_owned(),
                        sql: "SELECT count(*) FROM pg_class".to_owned(),
                    }],
                    runs: 3,
                    noise_floor: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 5_000_000,
                    }),
                    ..BaselinePolicy::default()
                }),
                ..HostDuties::default()
            }),
            // The broken shard's schema differs from the others': planned anyway, to fail.
            allow_drift_shards: "a-db2 lacks accounts: its failure is what the page shows"
                .to_owned(),
            schedule: None,
            updates: None,
            gates: Vec::new(),
        },
    )
    .await
    .expect("plan");
    let plan_id = prepared.plan_id.clone();

    let browser = Browser::start(&ground.pki, "operator-alice")
        .await
        .expect("headless Chromium");
    let first = format!("https://127.0.0.1:{web_1}");
    browser
        .open(&format!("{first}/"))
        .await
        .expect("fleet page");
    let grid = browser
        .run("return document.querySelectorAll('.groups .cell').length")
        .await
        .expect("cells");
    assert_eq!(
        grid,
        Value::from(SHARDS),
        "{}",
        browser.text("#main").await.expect("text")
    );
    // The shard without the table has another schema than the others at its version.
    let drifted = browser
        .run("return [...document.querySelectorAll('.groups .cell[data-standing=\"drifted\"]')].map((cell) => cell.dataset.shard).join(',')")
        .await
        .expect("drifted");
    assert_eq!(drifted, BROKEN);
    browser
        .screenshot(&artefacts().join("fleet.png"))
        .await
        .expect("screenshot");

    browser
        .open(&format!("{first}/plans/{plan_id}"))
        .await
        .expect("plan page");
    let shown = browser
        .run("return document.querySelectorAll('#waves .cell').length")
        .await
        .expect("cells");
    assert_eq!(
        shown,
        Value::from(SHARDS),
        "every shard of the plan is shown"
    );
    let pending = browser
        .run(&format!("return {}", cells_in("pending")))
        .await
        .expect("pending");
    assert_eq!(pending, Value::from(SHARDS), "nothing has started");
    let live = browser
        .wait_for(
            "return document.getElementById('link').dataset.state === 'live'",
            Duration::from_secs(20),
        )
        .await
        .expect("link");
    assert!(live, "the page never followed the plan live");

    prepared.start().await.expect("start");
    // Seen through the stream alone: the page reads the plan once.
    let moving = browser
        .wait_for(
            &format!("return {} < {SHARDS}", cells_in("pending")),
            Duration::from_secs(60),
        )
        .await
        .expect("moving");
    assert!(moving, "no shard moved on the page\n{}", diagnose());

    replica_1.signal("KILL");
    assert!(
        replica_1.wait_for_exit(Duration::from_secs(10)).is_some(),
        "c1 outlived SIGKILL"
    );
    let finished = browser
        .wait_for(
            &format!(
                "return {} === {} && {} === 1",
                cells_in("succeeded"),
                SHARDS - 1,
                cells_in("failed")
            ),
            Duration::from_secs(120),
        )
        .await
        .expect("finished");
    let summary = browser.text("#summary").await.expect("summary");
    assert!(
        finished,
        "the page never showed the rollout's end: {summary}\n{}",
        diagnose()
    );
    let ended = browser
        .wait_for(
            "return document.getElementById('link').dataset.state === 'ended'",
            Duration::from_secs(30),
        )
        .await
        .expect("ended");
    assert!(ended, "the page never saw its stream end with the plan");
    let console = browser
        .run("return document.getElementById('link').dataset.console")
        .await
        .expect("console");
    let second = format!("https://127.0.0.1:{web_2}");
    assert_eq!(
        console,
        Value::from(second.as_str()),
        "followed on c2's console"
    );
    let failures = browser.text("#failures").await.expect("failures");
    assert!(
        failures.contains("1 shard(s)") && failures.contains(BROKEN),
        "{failures}"
    );
    assert!(
        failures.contains("\"accounts\" does not exist"),
        "the reason is the database's: {failures}"
    );
    browser
        .screenshot(&artefacts().join("plan.png"))
        .await
        .expect("screenshot");
    browser
        .run("document.getElementById('timeline').parentElement.scrollIntoView(); return true")
        .await
        .expect("scroll");
    browser
        .screenshot(&artefacts().join("timeline.png"))
        .await
        .expect("screenshot");

    // The failed shard's page: its task in the plan, with the reason, from the survivor.
    browser
        .open(&format!("{second}/shards/{BROKEN}"))
        .await
        .expect("shard page");
    let history = browser.text("#main").await.expect("shard");
    assert!(
        history.contains(&plan_id) && history.contains("failed: shard a-db2"),
        "{history}"
    );
    // Its ledger, as the shard keeps it: the failed revision and why.
    let ledger = browser.text("#ledger").await.expect("ledger");
    assert!(
        ledger.contains("note") && ledger.contains("failed") && ledger.contains("does not exist"),
        "{ledger}"
    );
    browser
        .open(&format!("{second}/shards/a-db0"))
        .await
        .expect("shard page");
    let statuses = browser
        .run(
            "return [...document.querySelectorAll('#ledger .status')].map((cell) => cell.textContent).join(',')",
        )
        .await
        .expect("statuses");
    assert_eq!(
        statuses,
        "applied,applied",
        "{}",
        browser.text("#main").await.expect("page")
    );
    let ledger = browser.text("#ledger").await.expect("ledger");
    assert!(
        ledger.contains(&plan_id),
        "each row names its plan: {ledger}"
    );
    let chart = browser.text(".chart").await.expect("chart");
    assert!(
        chart.contains("catalog")
            && chart.contains("before")
            && chart.contains("after")
            && chart.contains("ms p50"),
        "the baselines before and after: {chart}"
    );
    browser
        .screenshot(&artefacts().join("shard.png"))
        .await
        .expect("screenshot");

    // The plans list: the rollout's end as it was, and a plan made while it is open, live.
    browser
        .open(&format!("{second}/plans"))
        .await
        .expect("plans page");
    let plans = browser.text("#main").await.expect("plans");
    assert!(
        plans.contains(&plan_id)
            && plans.contains("finished with failures")
            && plans.contains(&format!("{} / {SHARDS}", SHARDS - 1)),
        "{plans}"
    );

    // A phased plan's page shows its phases and what the next one waits for.
    let phased = fixtures::migrations(&[
        ("1_note.sql", "ALTER TABLE accounts ADD COLUMN note text;"),
        ("2_owner.sql", "ALTER TABLE accounts ADD COLUMN owner text;"),
        (
            "3_tag.sql",
            "-- fleetshift:phase expand\nALTER TABLE accounts ADD COLUMN tag text;",
        ),
        (
            "4_untag.sql",
            "-- fleetshift:phase contract\nALTER TABLE accounts DROP COLUMN note;",
        ),
    ]);
    // Awaiting its approval: a high-risk plan needs a rehearsal first.
    let planned = client
        .clone()
        .create_plan(CreatePlanRequest {
            migration_set: Some(fixtures::shipped(phased.path())),
            target_version: String::new(),
            selector: [("env".to_owned(), "test".to_owned())].into(),
            waves: None,
            limits: None,
            duties: None,
            allow_drift_shards: "a-db2 lacks accounts".to_owned(),
            // Its only window is years away: every shard waits for it.
            schedule: Some(Schedule {
                windows: vec!["2099-01-01T01:00/2h UTC".to_owned()],
                start_at: None,
            }),
            updates: None,
            gates: Vec::new(),
        })
        .await
        .expect("phased plan")
        .into_inner();
    let listed = browser
        .wait_for(
            &format!(
                "return document.getElementById('main').innerText.includes('{}')",
                planned.plan_id
            ),
            Duration::from_secs(30),
        )
        .await
        .expect("listed");
    assert!(listed, "the plans list never showed the new plan");
    browser
        .open(&format!("{second}/plans/{}", planned.plan_id))
        .await
        .expect("phased plan page");
    let waiting = browser
        .run(&format!("return {}", cells_in("waiting for window")))
        .await
        .expect("waiting");
    assert_eq!(
        waiting,
        SHARDS,
        "{}",
        browser.text("#summary").await.expect("summary")
    );
    let phases = browser.text("#phases").await.expect("phases");
    assert!(
        phases.contains("expand (to 3): running: 0 of")
            && phases.contains("contract (to 4): gate waits for an approver"),
        "{phases}"
    );
}

/// An HTTP/1.1 client of a console as `holder` (none: no certificate).
fn connector(pki: &Path, holder: Option<&str>) -> TlsConnector {
    mtls::install_crypto_provider();
    let mut config = match holder {
        Some(holder) => {
            let files = TlsFiles {
                certificate: pki.join(format!("{holder}.pem")),
                private_key: pki.join(format!("{holder}.key")),
                trust_bundle: pki.join(pki::CA_CERTIFICATE),
            };
            Arc::unwrap_or_clone(mtls::client_config(&files).expect("client config"))
        }
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let ca = std::fs::read(pki.join(pki::CA_CERTIFICATE)).expect("CA");
            for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
                roots.add(certificate.expect("PEM")).expect("root");
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// `GET path` on the console at `127.0.0.1:port` as `holder` (`<role>-<name>` in `pki`, none:
/// no certificate), with `headers`: the status and the body, or the connection's error.
pub(super) async fn get(
    pki: &Path,
    holder: Option<&str>,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let answer = exchange(pki, holder, port, path, headers).await?;
    Ok((
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    ))
}

async fn exchange(
    pki: &Path,
    holder: Option<&str>,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpAnswer> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector(pki, holder).connect(name, tcp).await?;
    http_exchange(tls, "GET", "localhost", path, headers, "")
        .await
        .map_err(std::io::Error::other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_answers_viewers_only_and_lists_live_replicas_consoles() {
    let ground = FleetGround::start().await;
    ground.issue(Role::Operator, "alice");
    ground.issue(Role::Operator, "mallory");
    ground.issue(Role::Agent, "a");
    let home = ground.home.path().to_path_buf();
    let pki = ground.pki.clone();
    let (_, web_1, mut replica_1) =
        spawn_console_replica(&home, "c1", &ground.etcd.endpoint, ROLES);
    let (_, web_2, _replica_2) = spawn_console_replica(&home, "c2", &ground.etcd.endpoint, ROLES);

    let (status, body) = get(&pki, Some("operator-alice"), web_1, "/api/v1/plans", &[])
        .await
        .expect("alice");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body, "{}",
        "no plans (the proto3 JSON mapping leaves empty lists out)"
    );
    let (status, body) = get(&pki, Some("operator-mallory"), web_1, "/", &[])
        .await
        .expect("mallory");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("viewer"), "{body}");
    let (status, body) = get(&pki, Some("agent-a"), web_1, "/api/v1/shards", &[])
        .await
        .expect("agent");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not an operator identity"), "{body}");
    assert!(
        get(&pki, None, web_1, "/", &[]).await.is_err(),
        "a browser without a certificate is refused in the handshake"
    );

    // Both consoles are listed; each lets the other's pages read it, and nobody else's.
    let first = format!("https://127.0.0.1:{web_1}");
    let second = format!("https://127.0.0.1:{web_2}");
    let listed = wait_until(Duration::from_secs(20), || {
        let pki = pki.clone();
        let (first, second) = (first.clone(), second.clone());
        async move {
            get(&pki, Some("operator-alice"), web_2, "/api/v1/consoles", &[])
                .await
                .is_ok_and(|(_, body)| body.contains(&first) && body.contains(&second))
        }
    })
    .await;
    assert!(listed, "{}", logs(&home, &["c1.log", "c2.log"]));
    let (_, body) = get(
        &pki,
        Some("operator-alice"),
        web_2,
        "/api/v1/plans",
        &[("Origin", &first)],
    )
    .await
    .expect("cross-origin");
    assert_eq!(
        body, "{}",
        "no plans (the proto3 JSON mapping leaves empty lists out)"
    );
    let headers = raw_headers(&pki, web_2, &first).await;
    assert!(
        headers.contains(&format!("access-control-allow-origin: {first}")),
        "{headers}"
    );
    let headers = raw_headers(&pki, web_2, "https://elsewhere.example").await;
    assert!(
        !headers.contains("access-control-allow-origin"),
        "{headers}"
    );

    // The live stream: an ended plan's state, then `end`; resumed after the sequence of that
    // state, with `since` or `Last-Event-ID`, nothing before `end`.
    let ended = Plan {
        plan_id: "p-ended".to_owned(),
        state: PlanState::Succeeded.into(),
        waves: vec![Wave {
            index: 0,
            shards: ["s-1", "s-2"]
                .map(|shard| ShardTask {
                    shard_id: shard.to_owned(),
                    state: ShardState::Succeeded.into(),
                    ..ShardTask::default()
                })
                .to_vec(),
        }],
        ..Plan::default()
    };
    records::create_plan(&ground.store, &ended)
        .await
        .expect("plan");
    let ids = |body: &str| -> Vec<String> {
        body.lines()
            .filter_map(|line| line.strip_prefix("id:"))
            .map(|id| id.trim().to_owned())
            .collect()
    };
    let events = "/api/v1/events?plan=p-ended";
    let (status, streamed) = get(&pki, Some("operator-alice"), web_2, events, &[])
        .await
        .expect("events");
    assert_eq!(status, 200, "{streamed}");
    let sent = ids(&streamed);
    assert_eq!(sent.len(), 3, "the plan and its two tasks: {streamed}");
    assert!(
        streamed.trim_end().ends_with("event: end\ndata: ended"),
        "{streamed}"
    );
    let last = sent.last().expect("a sequence").clone();
    let since = format!("{events}&since={last}");
    for (path, headers) in [
        (since.as_str(), Vec::new()),
        (events, vec![("Last-Event-ID", last.as_str())]),
    ] {
        let (_, resumed) = get(&pki, Some("operator-alice"), web_2, path, &headers)
            .await
            .expect("resumed");
        assert!(
            ids(&resumed).is_empty() && resumed.contains("event: end"),
            "{path} {headers:?}: {resumed}"
        );
    }

    // The console holds each identity to the replica's limits, as the gRPC port does.
    let limits = [
        (
            "FLEETSHIFT_COORDINATOR_LIMITS_BURST".to_owned(),
            "3".to_owned(),
        ),
        (
            "FLEETSHIFT_COORDINATOR_LIMITS_REQUESTS_PER_SECOND".to_owned(),
            "1".to_owned(),
        ),
    ];
    let (_, web_3, _replica_3) =
        spawn_console_replica_with(&home, "c3", &ground.etcd.endpoint, ROLES, &limits);
    let mut answered = Vec::new();
    for _ in 0..5 {
        let (status, body) = get(&pki, Some("operator-alice"), web_3, "/api/v1/plans", &[])
            .await
            .expect("alice");
        answered.push((status, body));
    }
    let refused = answered
        .iter()
        .find(|(status, _)| *status == 429)
        .map(|(_, body)| body.clone())
        .unwrap_or_default();
    assert!(
        refused.contains("spiffe://fleet.example/operator/alice sent more than 3 requests"),
        "{answered:?}"
    );

    // A replica stopped cleanly leaves the list at once.
    replica_1.signal("TERM");
    assert!(replica_1.wait_for_exit(Duration::from_secs(30)).is_some());
    let (_, body) = get(&pki, Some("operator-alice"), web_2, "/api/v1/consoles", &[])
        .await
        .expect("consoles");
    assert!(!body.contains(&first) && body.contains(&second), "{body}");
}

/// The header lines, in lower case, of the console's answer to `/api/v1/plans` from a page
/// at `origin`.
async fn raw_headers(pki: &Path, port: u16, origin: &str) -> String {
    exchange(
        pki,
        Some("operator-alice"),
        port,
        "/api/v1/plans",
        &[("Origin", origin)],
    )
    .await
    .expect("answer")
    .head
    .to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_its_console_and_keeps_it_up_until_interrupted() {
    let directory = tempfile::tempdir().expect("directory");
    let output = directory.path().join("demo.out");
    let mut demo = Process::spawn_printing(
        &binary::fleetshift(),
        &["demo", "--shards", "2", "--keep"],
        &output,
        &directory.path().join("demo.log"),
        &[],
    );
    let printed = || std::fs::read_to_string(&output).unwrap_or_default();
    let up = wait_until(Duration::from_secs(120), || {
        let text = printed();
        async move { text.contains("the fleet stays up") }
    })
    .await;
    assert!(up, "{}", printed());
    let text = printed();
    let port: u16 = text
        .lines()
        .find_map(|line| line.strip_prefix("web console: https://127.0.0.1:"))
        .and_then(|port| port.trim().parse().ok())
        .expect("the console's URL");
    let kept = text
        .split_whitespace()
        .find_map(|word| {
            word.strip_suffix("/pki/ca.pem")
                .filter(|root| root.starts_with('/'))
        })
        .map(PathBuf::from)
        .expect("the working directory");
    let (status, body) = get(
        &kept.join("pki"),
        Some("operator-demo-operator"),
        port,
        "/api/v1/plans",
        &[],
    )
    .await
    .expect("the demo's console");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("PLAN_STATE_SUCCEEDED"), "{body}");
    demo.signal("INT");
    let status = demo.wait_for_exit(Duration::from_secs(30)).expect("exit");
    assert!(status.success(), "{status:?}: {}", printed());
    assert!(printed().contains("working directory kept in"));
    std::fs::remove_dir_all(&kept).expect("remove the kept directory");
}
