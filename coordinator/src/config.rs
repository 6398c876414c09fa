//! Coordinator configuration: defaults, then a TOML file, then environment overrides; the raw
//! file is validated into [`CoordinatorConfig`] before anything uses it.

use std::net::SocketAddr;
use std::path::Path;

pub use fleetshift_common::config_file::ConfigError;
use fleetshift_common::config_file::read_toml_with_env;
use std::time::Duration;

use fleetshift_common::duration;
use fleetshift_common::lease::SessionIntervals;
use fleetshift_common::tls::identity::{Role, SpiffeId};
use fleetshift_common::tls::mtls::TlsFiles;
use serde::Deserialize;

use crate::authz::{OperatorRole, Roles};
use crate::peer_limits::PeerLimits;
use crate::webhooks::Webhook;

pub mod environment;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    coordinator_id: String,
    listen: String,
    /// Where `/metrics` and the health probes are served (off when unset).
    telemetry_listen: Option<String>,
    /// Where `grpc.health.v1` alone is served in plaintext, for gRPC probes (off when unset).
    health_listen: Option<String>,
    /// Where the web console is served over mutual TLS (off when unset).
    web_listen: Option<String>,
    /// The console's URL as browsers reach it, advertised to the other replicas' consoles
    /// (default: `https://<web_listen>`).
    web_advertise: Option<String>,
    trust_domain: String,
    #[serde(default = "default_heartbeat")]
    heartbeat: String,
    tls: TlsFiles,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    roles: RawRoles,
    /// `[[webhooks]]`: rollout events POSTed to each URL, signed with its secret.
    #[serde(default)]
    webhooks: Vec<Webhook>,
    #[serde(default)]
    limits: RawLimits,
}

/// `[limits]`: what each identity may ask of a replica (see [`PeerLimits`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    requests_per_second: Option<u32>,
    burst: Option<u32>,
    calls_per_identity: Option<usize>,
}

impl RawLimits {
    fn validate(self) -> Result<PeerLimits, String> {
        let defaults = PeerLimits::default();
        let limits = PeerLimits {
            requests_per_second: self
                .requests_per_second
                .unwrap_or(defaults.requests_per_second),
            burst: self.burst.unwrap_or(defaults.burst),
            calls_per_identity: self
                .calls_per_identity
                .unwrap_or(defaults.calls_per_identity),
        };
        for (key, value, default) in [
            (
                "requests_per_second",
                u64::from(limits.requests_per_second),
                u64::from(defaults.requests_per_second),
            ),
            ("burst", u64::from(limits.burst), u64::from(defaults.burst)),
            (
                "calls_per_identity",
                limits.calls_per_identity as u64,
                defaults.calls_per_identity as u64,
            ),
        ] {
            if value == 0 {
                return Err(format!(
                    "[limits] {key} = 0 would refuse every call; raise it (default {default})"
                ));
            }
        }
        Ok(limits)
    }
}

/// Operator names (of `spiffe://<td>/operator/<name>` certificates) per role.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    #[serde(default)]
    viewers: Vec<String>,
    #[serde(default)]
    operators: Vec<String>,
    #[serde(default)]
    approvers: Vec<String>,
}

fn default_heartbeat() -> String {
    "2s".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    etcd_endpoints: Vec<String>,
}

/// Where fleet state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    Etcd(Vec<String>),
    /// The embedded default: one replica, state lost on exit.
    Memory,
}

/// Where the web console listens and the URL it is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConsole {
    pub listen: SocketAddr,
    /// `None`: `https://` and the address bound (right when browsers reach that address).
    pub advertise: Option<String>,
}

/// A validated coordinator configuration.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub coordinator_id: String,
    pub listen: SocketAddr,
    /// Where the telemetry endpoint listens; `None` serves none.
    pub telemetry_listen: Option<SocketAddr>,
    /// Where the plaintext gRPC health listener listens; `None` serves none.
    pub health_listen: Option<SocketAddr>,
    /// The web console; `None` serves none.
    pub web: Option<WebConsole>,
    pub trust_domain: String,
    pub intervals: SessionIntervals,
    pub tls: TlsFiles,
    pub store: StoreChoice,
    pub roles: Roles,
    /// Where the leader sends rollout events (none by default).
    pub webhooks: Vec<Webhook>,
    /// What each identity may ask of this replica.
    pub limits: PeerLimits,
}

impl CoordinatorConfig {
    /// Reads `path`, each key set in the environment replacing the file's
    /// ([`environment::KEYS`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = read_toml_with_env(
            path,
            "coordinator configuration",
            environment::KEYS,
            |variable| std::env::var(variable).ok(),
        )?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::validate(raw, base).map_err(|message| {
            ConfigError::new(
                path,
                format!("invalid coordinator configuration: {message}"),
            )
        })
    }

    /// The configuration `raw` stands for, or what is wrong with it.
    fn validate(raw: RawConfig, base: &Path) -> Result<Self, String> {
        SpiffeId::new(&raw.trust_domain, Role::Coordinator, &raw.coordinator_id).map_err(
            |error| format!("coordinator_id and trust_domain must form a valid identity: {error}"),
        )?;
        let listen = raw.listen.parse().map_err(|error| {
            format!(
                "listen = {:?} is not an address like 0.0.0.0:7443: {error}",
                raw.listen
            )
        })?;
        let telemetry_listen =
            optional_address("telemetry_listen", raw.telemetry_listen, "0.0.0.0:9464")?;
        let health_listen = optional_address("health_listen", raw.health_listen, "0.0.0.0:7444")?;
        let web = web_console(raw.web_listen, raw.web_advertise)?;
        let heartbeat = duration::parse(&raw.heartbeat)?;
        if heartbeat < Duration::from_millis(500) {
            return Err(format!(
                "heartbeat = {:?} is too short (at least 500ms)",
                raw.heartbeat
            ));
        }
        let mut roles = Roles::default();
        for (names, role) in [
            (&raw.roles.viewers, OperatorRole::Viewer),
            (&raw.roles.operators, OperatorRole::Operator),
            (&raw.roles.approvers, OperatorRole::Approver),
        ] {
            for name in names {
                SpiffeId::new(&raw.trust_domain, Role::Operator, name).map_err(|error| {
                    format!("[roles] names {name:?}, which is not a valid operator name: {error}")
                })?;
                roles.grant(name, role);
            }
        }
        let mut webhooks = raw.webhooks;
        for hook in &mut webhooks {
            if !(hook.url.starts_with("https://") || hook.url.starts_with("http://")) {
                return Err(format!(
                    "[[webhooks]] url = {:?} must start with https:// or http://",
                    hook.url
                ));
            }
            let file = hook.secret_file.as_ref().ok_or_else(|| {
                format!(
                    "[[webhooks]] {}: secret_file is missing (the HMAC key)",
                    hook.url
                )
            })?;
            let file = base.join(file);
            hook.secret = std::fs::read_to_string(&file)
                .map_err(|error| {
                    format!(
                        "[[webhooks]] {}: cannot read {}: {error}",
                        hook.url,
                        file.display()
                    )
                })?
                .trim()
                .to_owned();
            if hook.secret.is_empty() {
                return Err(format!(
                    "[[webhooks]] {}: {} is empty",
                    hook.url,
                    file.display()
                ));
            }
        }
        let limits = raw.limits.validate()?;
        let store = if raw.store.etcd_endpoints.is_empty() {
            StoreChoice::Memory
        } else {
            StoreChoice::Etcd(raw.store.etcd_endpoints)
        };
        Ok(Self {
            coordinator_id: raw.coordinator_id,
            listen,
            telemetry_listen,
            health_listen,
            web,
            trust_domain: raw.trust_domain,
            intervals: SessionIntervals::from_heartbeat(heartbeat),
            tls: raw.tls.relative_to(base),
            store,
            roles,
            webhooks,
            limits,
        })
    }
}

/// The web console `web_listen` and `web_advertise` configure, if any.
fn web_console(
    listen: Option<String>,
    advertise: Option<String>,
) -> Result<Option<WebConsole>, String> {
    let Some(listen) = optional_address("web_listen", listen, "0.0.0.0:8443")? else {
        return match advertise {
            Some(_) => {
                Err("web_advertise is set without web_listen; set both, or neither".to_owned())
            }
            None => Ok(None),
        };
    };
    if let Some(url) = &advertise
        && (!url.starts_with("https://") || url.len() == "https://".len())
    {
        return Err(format!(
            "web_advertise = {url:?} must be the console's https:// URL, like https://coordinator-1.example:8443"
        ));
    }
    Ok(Some(WebConsole { listen, advertise }))
}

/// The address `name` gives, if it gives one; what is wrong with it otherwise (`example`
/// shows the form).
fn optional_address(
    name: &str,
    address: Option<String>,
    example: &str,
) -> Result<Option<SocketAddr>, String> {
    address
        .map(|address| {
            address.parse().map_err(|error| {
                format!("{name} = {address:?} is not an address like {example}: {error}")
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_configuration_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/coordinator/coordinator.example.toml");
        let config = CoordinatorConfig::load(&example).expect("example config is valid");
        assert_eq!(config.coordinator_id, "c1");
        assert_eq!(config.intervals.heartbeat, Duration::from_secs(2));
        assert!(matches!(config.store, StoreChoice::Etcd(ref endpoints) if endpoints.len() == 1));
        assert!(config.tls.certificate.ends_with("pki/coordinator-c1.pem"));
        let alice = SpiffeId::new("fleet.example", Role::Operator, "alice").expect("identity");
        assert!(config.roles.authorize(&alice, OperatorRole::Viewer).is_ok());
        assert!(
            config
                .roles
                .authorize(&alice, OperatorRole::Approver)
                .is_err()
        );
    }

    #[test]
    fn mistakes_are_named_with_file_and_line() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("coordinator.toml");
        let valid = "coordinator_id = \"c1\"\nlisten = \"127.0.0.1:7443\"\ntrust_domain = \"fleet.example\"\n[tls]\ncertificate = \"a\"\nprivate_key = \"b\"\ntrust_bundle = \"c\"\n";
        std::fs::write(&path, valid.replace("listen", "lisen")).expect("write");
        let error = format!("{:#}", CoordinatorConfig::load(&path).expect_err("typo"));
        assert!(error.contains("coordinator.toml:"), "{error}");
        std::fs::write(&path, valid.replace("127.0.0.1:7443", "somewhere")).expect("write");
        let error = format!(
            "{:#}",
            CoordinatorConfig::load(&path).expect_err("bad address")
        );
        assert!(error.contains("not an address"), "{error}");
        let probes = "health_listen = \"0.0.0.0:7444\"\ntelemetry_listen = \"0.0.0.0:9464\"\n";
        std::fs::write(&path, format!("{probes}{valid}")).expect("write");
        let config = CoordinatorConfig::load(&path).expect("valid");
        assert_eq!(config.health_listen, "0.0.0.0:7444".parse().ok());
        assert_eq!(config.telemetry_listen, "0.0.0.0:9464".parse().ok());
        std::fs::write(&path, format!("health_listen = \"port 7444\"\n{valid}")).expect("write");
        let error = format!(
            "{:#}",
            CoordinatorConfig::load(&path).expect_err("bad address")
        );
        assert!(
            error.contains("health_listen = \"port 7444\" is not an address like 0.0.0.0:7444"),
            "{error}"
        );
        std::fs::write(&path, valid).expect("write");
        let config = CoordinatorConfig::load(&path).expect("valid");
        assert_eq!(
            config.store,
            StoreChoice::Memory,
            "no etcd endpoints: the embedded store"
        );
        assert_eq!(config.limits, PeerLimits::default());
        std::fs::write(&path, format!("{valid}[limits]\nburst = 20\n")).expect("write");
        let config = CoordinatorConfig::load(&path).expect("valid");
        assert_eq!(config.limits.burst, 20);
        assert_eq!(config.limits.requests_per_second, 100, "the others default");
        std::fs::write(&path, format!("{valid}[limits]\ncalls_per_identity = 0\n")).expect("write");
        let error = format!("{:#}", CoordinatorConfig::load(&path).expect_err("zero"));
        assert!(
            error.contains(
                "[limits] calls_per_identity = 0 would refuse every call; raise it (default 64)"
            ),
            "{error}"
        );
    }

    #[test]
    fn webhooks_read_their_secret_from_a_file_and_must_have_one() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("coordinator.toml");
        let base = "coordinator_id = \"c1\"\nlisten = \"127.0.0.1:7443\"\ntrust_domain = \"fleet.example\"\n[tls]\ncertificate = \"a\"\nprivate_key = \"b\"\ntrust_bundle = \"c\"\n";
        std::fs::write(directory.path().join("hook.key"), "s3cret\n").expect("secret");
        std::fs::write(
            &path,
            format!("{base}[[webhooks]]\nurl = \"https://chat.example/hook\"\nsecret_file = \"hook.key\"\nevents = [\"shard.failed\"]\n"),
        )
        .expect("write");
        let config = CoordinatorConfig::load(&path).expect("valid");
        assert_eq!(config.webhooks.len(), 1);
        assert_eq!(config.webhooks[0].secret, "s3cret");
        assert!(
            !format!("{:?}", config.webhooks[0]).contains("s3cret"),
            "the secret stays out of debug output"
        );
        std::fs::write(
            &path,
            format!("{base}[[webhooks]]\nurl = \"https://chat.example/hook\"\n"),
        )
        .expect("write");
        let error = format!(
            "{:#}",
            CoordinatorConfig::load(&path).expect_err("no secret")
        );
        assert!(error.contains("secret_file is missing"), "{error}");
        std::fs::write(
            &path,
            format!("{base}[[webhooks]]\nurl = \"ftp://x\"\nsecret_file = \"hook.key\"\n"),
        )
        .expect("write");
        let error = format!("{:#}", CoordinatorConfig::load(&path).expect_err("scheme"));
        assert!(error.contains("must start with https://"), "{error}");
    }

    #[test]
    fn the_web_console_is_off_unless_listened_for_and_advertises_an_https_url() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("coordinator.toml");
        let valid = "coordinator_id = \"c1\"\nlisten = \"127.0.0.1:7443\"\ntrust_domain = \"fleet.example\"\n[tls]\ncertificate = \"a\"\nprivate_key = \"b\"\ntrust_bundle = \"c\"\n";
        std::fs::write(&path, valid).expect("write");
        assert_eq!(CoordinatorConfig::load(&path).expect("valid").web, None);
        std::fs::write(&path, format!("web_listen = \"0.0.0.0:8443\"\n{valid}")).expect("write");
        let web = CoordinatorConfig::load(&path).expect("valid").web;
        assert_eq!(
            web,
            Some(WebConsole {
                listen: "0.0.0.0:8443".parse().expect("address"),
                advertise: None,
            })
        );
        for (keys, refusal) in [
            (
                "web_advertise = \"https://c1.example:8443\"\n",
                "web_advertise is set without web_listen",
            ),
            (
                "web_listen = \"127.0.0.1:8443\"\nweb_advertise = \"c1.example:8443\"\n",
                "web_advertise = \"c1.example:8443\" must be the console's https:// URL",
            ),
            (
                "web_listen = \"port 8443\"\n",
                "web_listen = \"port 8443\" is not an address like 0.0.0.0:8443",
            ),
        ] {
            std::fs::write(&path, format!("{keys}{valid}")).expect("write");
            let error = format!("{:#}", CoordinatorConfig::load(&path).expect_err(keys));
            assert!(error.contains(refusal), "{keys}: {error}");
        }
    }
}
