//! Throwaway single-node etcd servers on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ports;

/// A running etcd; killed (by its PID) and deleted on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    data: tempfile::TempDir,
    pub endpoint: String,
}

impl EtcdServer {
    /// Starts `FLEETSHIFT_ETCD_BINARY` (default `etcd`) on free loopback ports (others when
    /// a port was taken meanwhile) and waits for `/health` to answer.
    pub fn start() -> anyhow::Result<Self> {
        let binary = std::env::var("FLEETSHIFT_ETCD_BINARY").unwrap_or_else(|_| "etcd".to_owned());
        ports::with_free_port(|client_port| {
            ports::with_free_port(|peer_port| Self::start_on(&binary, client_port, peer_port))
        })
    }

    fn start_on(binary: &str, client_port: u16, peer_port: u16) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("fleetshift-etcd-")
            .tempdir()?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(data.path().join("etcd.log"))?;
        let child = Command::new(binary)
            .arg("--name=default")
            .arg(format!(
                "--data-dir={}",
                data.path().join("member").display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {binary} (install Debian's etcd-server or set FLEETSHIFT_ETCD_BINARY)"
                )
            })?;
        let mut server = Self {
            child,
            data,
            endpoint: client_url,
        };
        server.wait_until_healthy(client_port)?;
        Ok(server)
    }

    /// The server's process id (to kill it mid-test).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `/health`; fails at once when the server exits (its port was taken).
    fn wait_until_healthy(&mut self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if healthy(port) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.data.path().join("etcd.log")).unwrap_or_default();
                bail!(
                    "etcd exited ({status}) before it was healthy:
{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.data.path().join("etcd.log")).unwrap_or_default();
        bail!("etcd did not become healthy within 30 s:\n{log}")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Err(error) = self.child.kill() {
            eprintln!("stopping etcd failed: {error}");
        }
        let _ = self.child.wait();
    }
}

pub(crate) fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
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
