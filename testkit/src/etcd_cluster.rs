//! Throwaway etcd clusters on loopback whose members can be killed, frozen and started
//! again (the chaos campaign's store): one member, or three that keep a quorum when one is
//! down.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ports;

/// One member: its name, ports, data directory and, while it runs, its process.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// Where a cluster's members run: on loopback, or (for the chaos campaign's partitions) in a
/// network namespace of their own, reached at an address of it.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Put before each member's command line (`ip netns exec <namespace>`).
    pub command_prefix: Vec<String>,
    /// Where clients reach the members: loopback, else each member listens on every address
    /// of its namespace (members talk to each other over its loopback).
    pub address: IpAddr,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            command_prefix: Vec::new(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// A running cluster; every member is killed (by its PID) and the data deleted on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    binary: String,
    placement: Placement,
    data: tempfile::TempDir,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `size` members (`FLEETSHIFT_ETCD_BINARY`, default `etcd`) on free loopback
    /// ports (others when a port was taken meanwhile) and waits until each answers `/health`.
    pub fn start(size: usize) -> anyhow::Result<Self> {
        Self::start_placed(size, Placement::default())
    }

    /// [`EtcdCluster::start`] with the members where `placement` says.
    pub fn start_placed(size: usize, placement: Placement) -> anyhow::Result<Self> {
        if size == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        let binary = std::env::var("FLEETSHIFT_ETCD_BINARY").unwrap_or_else(|_| "etcd".to_owned());
        ports::retried(|| Self::start_once(&binary, size, &placement))
    }

    /// One attempt: a member that cannot start ends it, and the members started are dropped.
    fn start_once(binary: &str, size: usize, placement: &Placement) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("fleetshift-etcd-cluster-")
            .tempdir()?;
        let mut members = Vec::new();
        for index in 0..size {
            members.push(Member {
                name: format!("m{index}"),
                client_port: ports::free_port()?,
                peer_port: ports::free_port()?,
                child: None,
            });
        }
        let mut cluster = Self {
            binary: binary.to_owned(),
            placement: placement.clone(),
            data,
            members,
        };
        for index in 0..size {
            cluster.spawn(index)?;
        }
        for index in 0..size {
            cluster.wait_until_healthy(index)?;
        }
        Ok(cluster)
    }

    /// The client URLs of every member, for a client that fails over between them.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints_at(self.placement.address)
    }

    /// The client URLs of every member at another `address` of theirs (placed members listen
    /// on every address of their namespace).
    pub fn endpoints_at(&self, address: IpAddr) -> Vec<String> {
        self.members
            .iter()
            .map(|member| format!("http://{address}:{}", member.client_port))
            .collect()
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The process id of member `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members
            .get(index)
            .and_then(|member| member.child.as_ref())
            .map(Child::id)
    }

    /// SIGKILLs member `index` (its data stays, for [`EtcdCluster::restart`]).
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let member = self.members.get_mut(index).context("no such member")?;
        if let Some(mut child) = member.child.take() {
            child.kill().context("killing an etcd member")?;
            child.wait().context("reaping an etcd member")?;
        }
        Ok(())
    }

    /// Starts member `index` again from its data, on its ports, and waits for its health.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        if self.pid(index).is_none() {
            self.spawn(index)?;
        }
        self.wait_until_healthy(index)
    }

    /// The member's log (its stderr), for diagnosing a run.
    pub fn log(&self, index: usize) -> String {
        self.members
            .get(index)
            .map(|member| {
                std::fs::read_to_string(self.data.path().join(format!("{}.log", member.name)))
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let initial_cluster = self
            .members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let address = self.placement.address;
        let member = self.members.get_mut(index).context("no such member")?;
        let client_url = format!("http://{address}:{}", member.client_port);
        let listen_url = if address.is_loopback() {
            client_url.clone()
        } else {
            format!("http://0.0.0.0:{}", member.client_port)
        };
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        // Appended, so a restarted member's log keeps what it said before.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join(format!("{}.log", member.name)))?;
        let (program, prefix) = match self.placement.command_prefix.split_first() {
            Some((program, rest)) => (program.as_str(), rest.to_vec()),
            None => (self.binary.as_str(), Vec::new()),
        };
        let mut command = Command::new(program);
        if !prefix.is_empty() {
            command.args(&prefix).arg(&self.binary);
        }
        let child = command
            .arg(format!("--name={}", member.name))
            .arg(format!(
                "--data-dir={}",
                self.data.path().join(&member.name).display()
            ))
            .arg(format!("--listen-client-urls={listen_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=fleetshift-chaos")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install Debian's etcd-server or set FLEETSHIFT_ETCD_BINARY)",
                    self.binary
                )
            })?;
        member.child = Some(child);
        Ok(())
    }

    fn wait_until_healthy(&mut self, index: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = self
            .members
            .get(index)
            .context("no such member")?
            .client_port;
        let address = self.placement.address;
        while Instant::now() < deadline {
            if healthy(address, port) {
                return Ok(());
            }
            let member = self.members.get_mut(index).context("no such member")?;
            if let Some(child) = member.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                member.child = None;
                bail!(
                    "etcd member {index} exited ({status}) before it was healthy:\n{}",
                    self.log(index)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "etcd member {index} did not become healthy within 30 s:\n{}",
            self.log(index)
        )
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Whether the member on `port` at `address` answers `/health` with a healthy status.
fn healthy(address: IpAddr, port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((address, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}
