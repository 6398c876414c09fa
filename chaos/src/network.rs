//! Network partitions between an agent's host and the coordinators, and between a coordinator
//! replica and etcd. With partitions in the campaign, each agent runs in a network namespace
//! of its own, joined to the campaign's by a veth pair; it reaches its PostgreSQL over the
//! cluster's Unix socket (which no partition cuts, as on a real host) and the coordinators over
//! the pair. The etcd members share one namespace ([`store`]), which each replica reaches at an
//! address of its own. A partition drops packets one way or both, with a blackhole route on
//! the sending side, until it heals.
//!
//! Namespaces are named after the campaign's process (`fleetshift-chaos-<pid>-<agent>`,
//! `fleetshift-chaos-<pid>-etcd`); one left by a campaign that died is deleted by the next.
//! Making them needs `CAP_NET_ADMIN` (root) and `ip` from iproute2.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

/// Namespaces of this program start with it.
const PREFIX: &str = "fleetshift-chaos-";

pub mod store;

/// Which way a partition drops packets, seen from the part it cuts off (an agent, a replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cut {
    /// Neither side hears the other.
    Both,
    /// The others hear nothing from the part; it still hears them.
    Unheard,
    /// The part hears nothing from the others; they still hear it.
    Deaf,
}

impl Cut {
    pub const ALL: [Self; 3] = [Self::Both, Self::Unheard, Self::Deaf];

    /// How the cut leaves `part` ("the agent", "the replica").
    pub fn describe(self, part: &str) -> String {
        match self {
            Self::Both => "both ways".to_owned(),
            Self::Unheard => format!("{part} unheard"),
            Self::Deaf => format!("{part} deaf"),
        }
    }
}

/// One agent's network: its namespace and the pair's two addresses.
#[derive(Debug)]
pub struct HostNetwork {
    namespace: String,
    /// The campaign's end of the pair: where the agent dials the coordinators.
    pub coordinators: Ipv4Addr,
    /// The agent's end.
    agent: Ipv4Addr,
    cut: Option<Cut>,
}

impl HostNetwork {
    /// A namespace and pair for each of `count` agents, on the `subnet` of the campaign's
    /// [`store::StoreNetwork`] (which takes its last 16 addresses).
    pub fn create(count: usize, subnet: u8) -> anyhow::Result<Vec<Self>> {
        if count > 60 {
            bail!("at most 60 agents can each have a network namespace, not {count}");
        }
        let pid = std::process::id();
        let mut networks = Vec::new();
        for agent in 0..count {
            let namespace = format!("{PREFIX}{pid}-{agent}");
            let (outside, inside) = link_names(subnet, agent);
            let last = u8::try_from(agent * 4).context("agent index")?;
            let network = Self {
                namespace: namespace.clone(),
                coordinators: Ipv4Addr::new(10, 77, subnet, last + 1),
                agent: Ipv4Addr::new(10, 77, subnet, last + 2),
                cut: None,
            };
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            if let Err(error) = ip(&["netns", "add", &namespace]) {
                let _ = ip(&["link", "del", &outside]);
                return Err(error);
            }
            networks.push(network);
            ip(&["link", "set", &inside, "netns", &namespace])?;
            let network = &networks[agent];
            ip(&[
                "addr",
                "add",
                &format!("{}/30", network.coordinators),
                "dev",
                &outside,
            ])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{}/30", network.agent),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &namespace, "link", "set", &inside, "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            // A blackhole a dead campaign left on this subnet.
            let _ = ip(&[
                "route",
                "del",
                "blackhole",
                &format!("{}/32", network.agent),
            ]);
        }
        Ok(networks)
    }

    /// The command line that runs `program` inside the namespace.
    pub fn wrap(&self, program: &str, arguments: &[String]) -> (String, Vec<String>) {
        let mut wrapped = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            self.namespace.clone(),
            program.to_owned(),
        ];
        wrapped.extend_from_slice(arguments);
        ("ip".to_owned(), wrapped)
    }

    /// Drops packets `cut`'s way until [`Self::heal`].
    pub fn partition(&mut self, cut: Cut) -> anyhow::Result<()> {
        self.heal()?;
        self.blackholes(cut, "add")?;
        self.cut = Some(cut);
        Ok(())
    }

    /// Lets packets through both ways again.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        match self.cut.take() {
            Some(cut) => self.blackholes(cut, "del"),
            None => Ok(()),
        }
    }

    /// Adds or deletes (`change`) the blackhole routes that make `cut`: in the namespace
    /// towards the coordinators, and in the campaign's towards the agent.
    fn blackholes(&self, cut: Cut, change: &str) -> anyhow::Result<()> {
        if matches!(cut, Cut::Both | Cut::Unheard) {
            let coordinators = format!("{}/32", self.coordinators);
            ip(&[
                "-n",
                &self.namespace,
                "route",
                change,
                "blackhole",
                &coordinators,
            ])?;
        }
        if matches!(cut, Cut::Both | Cut::Deaf) {
            ip(&["route", change, "blackhole", &format!("{}/32", self.agent)])?;
        }
        Ok(())
    }
}

impl Drop for HostNetwork {
    fn drop(&mut self) {
        let _ = self.heal();
        // The pair goes with its inner end.
        if let Err(error) = ip(&["netns", "del", &self.namespace]) {
            eprintln!("fleetshift-chaos: {error:#}");
        }
    }
}

/// The pair's names for `agent` on `subnet` (at most 15 bytes, as Linux allows).
fn link_names(subnet: u8, agent: usize) -> (String, String) {
    (
        format!("fsc{subnet}-{agent}"),
        format!("fsc{subnet}-{agent}p"),
    )
}

/// A subnet (`10.77.<n>.0/24`) no running campaign holds, for this campaign's namespaces:
/// holding it is making the veth pair `names(n)` gives, which fails for a name another
/// campaign made. The pair must go into a namespace of the campaign's, which takes it along
/// when deleted. Namespaces of campaigns no longer running are deleted first.
fn allocate(names: impl Fn(u8) -> (String, String)) -> anyhow::Result<u8> {
    delete_stale()?;
    for subnet in 0..=u8::MAX {
        let (outside, inside) = names(subnet);
        if ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])
        .is_ok()
        {
            return Ok(subnet);
        }
    }
    bail!(
        "process {}: every subnet 10.77.0-255.0/24 is held by another campaign's veth pairs",
        std::process::id()
    )
}

/// Deletes the namespaces of campaigns no longer running.
fn delete_stale() -> anyhow::Result<()> {
    let listed = run("ip", &["netns", "list"])?;
    for line in listed.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(owner) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{owner}")).exists() {
            ip(&["netns", "del", name])?;
        }
    }
    Ok(())
}

pub(crate) fn ip(arguments: &[&str]) -> anyhow::Result<()> {
    run("ip", arguments).map(drop)
}

fn run(program: &str, arguments: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .with_context(|| format!("running {program} (iproute2)"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}; network partitions need root (CAP_NET_ADMIN): leave them out with --faults",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
