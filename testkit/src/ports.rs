//! Ports for servers that run in another process and must be told their port (PostgreSQL
//! refuses port 0; a single etcd member advertises the URL it is given).
//!
//! Servers of our own are bound on port 0 by the caller and handed the listener, or told
//! `127.0.0.1:0` and asked for the address they bound. For the others a port is picked that
//! was free a moment ago; another process may take it before the server binds, so every
//! caller starts its server through [`with_free_port`] (or [`retried`], picking several), which
//! tries again on other ports when the start fails.

use std::net::TcpListener;

use anyhow::Context;

/// How many ports a start is tried on before its last error is returned.
const ATTEMPTS: usize = 5;

/// A loopback port that was free when asked.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `start` with a free port, and again with another when it fails (the port may have
/// been taken in between), up to a few times; the last failure is returned.
pub fn with_free_port<T>(mut start: impl FnMut(u16) -> anyhow::Result<T>) -> anyhow::Result<T> {
    retried(|| start(free_port()?))
}

/// Runs `start`, which picks its own free ports, again when it fails, up to a few times; the
/// last failure is returned.
pub fn retried<T>(mut start: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut last = None;
    for _attempt in 0..ATTEMPTS {
        match start() {
            Ok(started) => return Ok(started),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt was made")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_that_fails_is_tried_again_on_another_port() {
        let mut tried = Vec::new();
        let started = with_free_port(|port| {
            tried.push(port);
            if tried.len() < 3 {
                anyhow::bail!("port {port} taken");
            }
            Ok(port)
        })
        .expect("third attempt starts");
        assert_eq!(tried.len(), 3);
        assert_eq!(started, tried[2]);
        let failed = with_free_port(|port| -> anyhow::Result<()> { anyhow::bail!("never {port}") });
        assert!(failed.is_err_and(|error| error.to_string().starts_with("never")));
    }
}
