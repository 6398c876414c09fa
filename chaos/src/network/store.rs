//! The etcd members' network: one namespace (`fleetshift-chaos-<pid>-etcd`) holding every
//! member, which talk to each other over its loopback, joined to the campaign's namespace by a
//! veth pair on the last 16 addresses of the campaign's subnet. The campaign reaches the
//! members at one address of the namespace and each replica at an address of its own, so a
//! partition can cut one replica off: a blackhole route to the replica's address in the
//! campaign's namespace drops what it sends, and a rule in the store's namespace sending what
//! goes out from that address to a table holding only a blackhole drops what it would hear.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::bail;
use fleetshift_testkit::etcd_cluster::Placement;

use super::{Cut, PREFIX, allocate, ip};

/// The last octets of the store's block: the campaign's end of the pair, the address the
/// campaign reaches the members at, and the first replica's address.
const OUTSIDE: u8 = 241;
const CAMPAIGN: u8 = 242;
const FIRST_REPLICA: u8 = 243;

/// The routing tables holding the blackholes, one per replica from this one on.
const FIRST_TABLE: usize = 100;

#[derive(Debug)]
pub struct StoreNetwork {
    namespace: String,
    pub subnet: u8,
    replicas: usize,
    /// The cut each replica is under.
    cuts: Vec<Option<Cut>>,
}

impl StoreNetwork {
    /// The namespace, its pair and an address for each of `replicas`, on a subnet no running
    /// campaign holds.
    pub fn create(replicas: usize) -> anyhow::Result<Self> {
        if replicas > usize::from(254 - FIRST_REPLICA) {
            bail!(
                "at most {} replicas can each have an address of the store's namespace, not {replicas}",
                254 - FIRST_REPLICA
            );
        }
        let subnet = allocate(link_names)?;
        let (outside, inside) = link_names(subnet);
        let namespace = format!("{PREFIX}{}-etcd", std::process::id());
        if let Err(error) = ip(&["netns", "add", &namespace]) {
            let _ = ip(&["link", "del", &outside]);
            return Err(error);
        }
        let network = Self {
            namespace: namespace.clone(),
            subnet,
            replicas,
            cuts: vec![None; replicas],
        };
        ip(&["link", "set", &inside, "netns", &namespace])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/28", network.at(OUTSIDE)),
            "dev",
            &outside,
        ])?;
        ip(&["link", "set", &outside, "up"])?;
        let inner = |arguments: &[&str]| {
            let mut all = vec!["-n", namespace.as_str()];
            all.extend_from_slice(arguments);
            ip(&all)
        };
        for last in std::iter::once(CAMPAIGN).chain(network.replica_octets()) {
            inner(&[
                "addr",
                "add",
                &format!("{}/28", network.at(last)),
                "dev",
                &inside,
            ])?;
        }
        inner(&["link", "set", &inside, "up"])?;
        inner(&["link", "set", "lo", "up"])?;
        for replica in 0..replicas {
            let table = (FIRST_TABLE + replica).to_string();
            inner(&["route", "add", "blackhole", "default", "table", &table])?;
            // A blackhole a dead campaign left on this subnet.
            let _ = ip(&[
                "route",
                "del",
                "blackhole",
                &format!("{}/32", network.replica_address(replica)),
            ]);
        }
        Ok(network)
    }

    /// Where the members run: in the namespace, reached by the campaign at its address.
    pub fn placement(&self) -> Placement {
        Placement {
            command_prefix: vec![
                "ip".to_owned(),
                "netns".to_owned(),
                "exec".to_owned(),
                self.namespace.clone(),
            ],
            address: IpAddr::V4(self.at(CAMPAIGN)),
        }
    }

    /// The address replica `replica` reaches the members at.
    pub fn replica_address(&self, replica: usize) -> IpAddr {
        let last = usize::from(FIRST_REPLICA) + replica;
        IpAddr::V4(self.at(u8::try_from(last).unwrap_or(u8::MAX)))
    }

    /// Cuts replica `replica` off the store `cut`'s way until [`Self::heal`].
    pub fn partition(&mut self, replica: usize, cut: Cut) -> anyhow::Result<()> {
        self.heal(replica)?;
        self.blackholes(replica, cut, "add")?;
        if let Some(slot) = self.cuts.get_mut(replica) {
            *slot = Some(cut);
        }
        Ok(())
    }

    /// Lets replica `replica`'s packets through both ways again.
    pub fn heal(&mut self, replica: usize) -> anyhow::Result<()> {
        match self.cuts.get_mut(replica).and_then(Option::take) {
            Some(cut) => self.blackholes(replica, cut, "del"),
            None => Ok(()),
        }
    }

    /// Adds or deletes (`change`) what makes `cut` for `replica`.
    fn blackholes(&self, replica: usize, cut: Cut, change: &str) -> anyhow::Result<()> {
        let address = self.replica_address(replica).to_string();
        if matches!(cut, Cut::Both | Cut::Unheard) {
            ip(&["route", change, "blackhole", &format!("{address}/32")])?;
        }
        if matches!(cut, Cut::Both | Cut::Deaf) {
            let table = (FIRST_TABLE + replica).to_string();
            ip(&[
                "-n",
                &self.namespace,
                "rule",
                change,
                "from",
                &address,
                "lookup",
                &table,
            ])?;
        }
        Ok(())
    }

    fn replica_octets(&self) -> impl Iterator<Item = u8> {
        (0..self.replicas)
            .filter_map(|replica| u8::try_from(usize::from(FIRST_REPLICA) + replica).ok())
    }

    fn at(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, last)
    }
}

impl Drop for StoreNetwork {
    fn drop(&mut self) {
        for replica in 0..self.replicas {
            let _ = self.heal(replica);
        }
        // The pair goes with its inner end.
        if let Err(error) = ip(&["netns", "del", &self.namespace]) {
            eprintln!("fleetshift-chaos: {error:#}");
        }
    }
}

/// The store pair's names on `subnet` (at most 15 bytes, as Linux allows).
fn link_names(subnet: u8) -> (String, String) {
    (format!("fsc{subnet}-s"), format!("fsc{subnet}-sp"))
}
