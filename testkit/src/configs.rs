//! The configuration files of the coordinator replicas and agents the test suite and the chaos
//! campaign start: TLS files from `pki/` beside each file, heartbeats every second.

/// A replica `id` listening on `listen`, its identities in `trust_domain`, its state in etcd at
/// `etcd_endpoints`; `roles` is the `[roles]` table's body.
pub fn replica(
    id: &str,
    listen: &str,
    trust_domain: &str,
    etcd_endpoints: &[String],
    roles: &str,
) -> String {
    format!(
        "coordinator_id = \"{id}\"\nlisten = \"{listen}\"\ntrust_domain = \"{trust_domain}\"\nheartbeat = \"1s\"\n\
         [tls]\ncertificate = \"pki/coordinator-{id}.pem\"\nprivate_key = \"pki/coordinator-{id}.key\"\ntrust_bundle = \"pki/ca.pem\"\n\
         [store]\netcd_endpoints = [{}]\n[roles]\n{roles}\n",
        quoted(etcd_endpoints)
    )
}

/// An agent `agent` trying the replicas at `addresses` in turn; `tables` is the text of its
/// `[[shards]]` (and any other) tables.
pub fn agent(agent: &str, addresses: &[String], tables: &str) -> String {
    format!(
        "agent_id = \"{agent}\"\n[coordinator]\naddresses = [{}]\n\
         [tls]\ncertificate = \"pki/agent-{agent}.pem\"\nprivate_key = \"pki/agent-{agent}.key\"\ntrust_bundle = \"pki/ca.pem\"\n\
         {tables}",
        quoted(addresses)
    )
}

/// `items` as the elements of a TOML array of strings.
fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("\"{item}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_files_are_toml_naming_their_tls_files() {
        let replica = replica(
            "c1",
            "127.0.0.1:7443",
            "fleet.example",
            &["http://127.0.0.1:2379".to_owned()],
            "viewers = [\"ops\"]",
        );
        let parsed: toml::Table = replica.parse().expect("replica TOML");
        assert_eq!(
            parsed["tls"]["certificate"].as_str(),
            Some("pki/coordinator-c1.pem")
        );
        assert_eq!(parsed["roles"]["viewers"][0].as_str(), Some("ops"));
        let agent = agent("host-1", &["https://localhost:7443".to_owned()], "");
        let parsed: toml::Table = agent.parse().expect("agent TOML");
        assert_eq!(
            parsed["coordinator"]["addresses"][0].as_str(),
            Some("https://localhost:7443")
        );
    }
}
