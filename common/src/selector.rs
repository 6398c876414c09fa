//! Label selectors: the pairs plans, listings and operators' fleet throttles pick shards by.
//! A selector matches a shard's attributes: its labels, and the facts its agent reports under
//! reserved `fleetshift.io/` keys (which no label can shadow).

use std::collections::HashMap;
use std::time::SystemTime;

use crate::proto::v1::{Engine, FleetThrottle, HostFacts, ShardFacts};

/// The agent serving the shard.
pub const AGENT: &str = "fleetshift.io/agent";
/// Its agent's host name.
pub const HOST: &str = "fleetshift.io/host";
/// Where its database server is (`host:port`, or the SQLite file).
pub const SERVER: &str = "fleetshift.io/server";
/// The server's version.
pub const SERVER_VERSION: &str = "fleetshift.io/server-version";
/// `postgres` or `sqlite`.
pub const ENGINE: &str = "fleetshift.io/engine";

/// A shard as its agent announced it: what selectors see of it, and which server it shares.
#[derive(Debug, Clone, Copy)]
pub struct Announced<'a> {
    pub agent: &'a str,
    /// Its agent's host, when the agent says.
    pub host: Option<&'a HostFacts>,
    pub shard: &'a ShardFacts,
}

impl Announced<'_> {
    /// Its labels with the reported facts added under the reserved keys.
    pub fn attributes(&self) -> HashMap<String, String> {
        let mut attributes = self.shard.labels.clone();
        let mut fact = |key: &str, value: &str| {
            if value.is_empty() {
                attributes.remove(key);
            } else {
                attributes.insert(key.to_owned(), value.to_owned());
            }
        };
        fact(AGENT, self.agent);
        fact(HOST, self.hostname());
        let server = self.shard.server.as_ref();
        fact(SERVER, server.map_or("", |server| server.address.as_str()));
        fact(
            SERVER_VERSION,
            server.map_or("", |server| server.version.as_str()),
        );
        fact(
            ENGINE,
            match self.shard.engine() {
                Engine::Postgres => "postgres",
                Engine::Sqlite => "sqlite",
                Engine::Unspecified => "",
            },
        );
        attributes
    }

    /// The database server the shard lives on, as the per-host concurrency cap counts it: its
    /// PostgreSQL system identifier (one cluster, whatever address reaches it), else the host
    /// name and the address (a `localhost` on two hosts is two servers), else the host name.
    pub fn server_key(&self) -> String {
        let server = self.shard.server.as_ref();
        if let Some(identifier) = server
            .map(|server| server.system_identifier.as_str())
            .filter(|identifier| !identifier.is_empty())
        {
            return format!("postgres:{identifier}");
        }
        match server
            .map(|server| server.address.as_str())
            .filter(|address| !address.is_empty())
        {
            Some(address) => format!("{}/{address}", self.hostname()),
            None => self.hostname().to_owned(),
        }
    }

    /// Its agent's host name, or the agent's id when the agent does not say.
    fn hostname(&self) -> &str {
        self.host
            .map(|host| host.hostname.as_str())
            .filter(|name| !name.is_empty())
            .unwrap_or(self.agent)
    }
}

/// Whether `attributes` match `selector`: every pair must be there (an empty selector matches
/// all).
pub fn selects(selector: &HashMap<String, String>, attributes: &HashMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| attributes.get(key) == Some(value))
}

/// The first of `throttles` that holds a shard with `attributes` at `now`: one that selects it
/// and has not expired.
pub fn holding<'t>(
    throttles: impl IntoIterator<Item = &'t FleetThrottle>,
    attributes: &HashMap<String, String>,
    now: SystemTime,
) -> Option<&'t FleetThrottle> {
    throttles.into_iter().find(|throttle| {
        let expired = throttle
            .until
            .and_then(|until| SystemTime::try_from(until).ok())
            .is_some_and(|until| until <= now);
        !expired && selects(&throttle.selector, attributes)
    })
}

/// Whether `shard_id` matches `pattern`, where `*` stands for any run of characters.
pub fn id_matches(pattern: &str, shard_id: &str) -> bool {
    let mut pieces = pattern.split('*');
    let Some(first) = pieces.next() else {
        return pattern == shard_id;
    };
    let Some(mut rest) = shard_id.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_selector_needs_every_pair_and_an_empty_one_takes_all() {
        let eu = labels(&[("region", "eu"), ("env", "prod")]);
        assert!(selects(&labels(&[("region", "eu")]), &eu));
        assert!(selects(&HashMap::new(), &eu));
        assert!(!selects(&labels(&[("region", "eu"), ("tier", "a")]), &eu));
        assert!(!selects(&labels(&[("region", "us")]), &eu));
    }

    #[test]
    fn an_expired_throttle_holds_nothing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let throttle = |id: &str, until: SystemTime| FleetThrottle {
            throttle_id: id.to_owned(),
            selector: labels(&[("region", "eu")]),
            until: Some(until.into()),
            ..FleetThrottle::default()
        };
        let throttles = [
            throttle("expired", now - Duration::from_secs(1)),
            throttle("current", now + Duration::from_secs(60)),
        ];
        let eu = labels(&[("region", "eu")]);
        let held = holding(&throttles, &eu, now).map(|held| held.throttle_id.as_str());
        assert_eq!(held, Some("current"));
        assert_eq!(holding(&throttles[..1], &eu, now), None);
        assert_eq!(holding(&throttles, &labels(&[("region", "us")]), now), None);
    }

    fn announced(labels: &[(&str, &str)], identifier: &str, address: &str) -> ShardFacts {
        ShardFacts {
            shard_id: "s".to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            engine: Engine::Postgres.into(),
            server: Some(crate::proto::v1::ServerFacts {
                system_identifier: identifier.to_owned(),
                address: address.to_owned(),
                version: "16.4".to_owned(),
                ..crate::proto::v1::ServerFacts::default()
            }),
            ..ShardFacts::default()
        }
    }

    #[test]
    fn selectors_see_the_reported_facts_and_no_label_shadows_them() {
        let shard = announced(&[("region", "eu"), (HOST, "spoofed")], "", "db1:5432");
        let host = HostFacts {
            hostname: "web-1".to_owned(),
            ..HostFacts::default()
        };
        let attributes = Announced {
            agent: "a",
            host: Some(&host),
            shard: &shard,
        }
        .attributes();
        assert!(selects(
            &labels(&[("region", "eu"), (HOST, "web-1"), (SERVER, "db1:5432")]),
            &attributes
        ));
        assert!(selects(
            &labels(&[(AGENT, "a"), (SERVER_VERSION, "16.4"), (ENGINE, "postgres")]),
            &attributes
        ));
        assert!(!selects(&labels(&[(HOST, "spoofed")]), &attributes));
        let silent = Announced {
            agent: "a",
            host: None,
            shard: &ShardFacts::default(),
        }
        .attributes();
        assert_eq!(
            silent.get(HOST).map(String::as_str),
            Some("a"),
            "the agent stands in"
        );
        assert!(!silent.contains_key(SERVER) && !silent.contains_key(ENGINE));
    }

    #[test]
    fn one_cluster_is_one_server_whatever_reaches_it() {
        let host = |name: &str| HostFacts {
            hostname: name.to_owned(),
            ..HostFacts::default()
        };
        let (one, two) = (host("h1"), host("h2"));
        let key = |host: &HostFacts, shard: &ShardFacts| {
            Announced {
                agent: "a",
                host: Some(host),
                shard,
            }
            .server_key()
        };
        let by_name = announced(&[], "7301", "db1:5432");
        let by_address = announced(&[], "7301", "10.0.0.5:5432");
        assert_eq!(key(&one, &by_name), key(&two, &by_address));
        assert_ne!(
            key(&one, &by_name),
            key(&one, &announced(&[], "7302", "db1:5432"))
        );
        let unknown = announced(&[], "", "localhost:5432");
        assert_ne!(
            key(&one, &unknown),
            key(&two, &unknown),
            "localhost on two hosts"
        );
        assert_eq!(key(&one, &ShardFacts::default()), "h1");
    }

    #[test]
    fn patterns_match_whole_ids_with_stars_for_any_run() {
        assert!(id_matches("users-1", "users-1"));
        assert!(!id_matches("users-1", "users-10"));
        assert!(id_matches("users-*", "users-10"));
        assert!(id_matches("*-10", "users-10"));
        assert!(id_matches("u*s-*0", "users-10"));
        assert!(!id_matches("u*s-*0", "users-11"));
        assert!(id_matches("*", "anything"));
        assert!(!id_matches("a*a", "a"), "the two ends cannot overlap");
    }
}
