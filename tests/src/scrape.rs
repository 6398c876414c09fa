//! Reading a telemetry endpoint as Prometheus and an orchestrator's probes would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` from `address` (`host:port`): the status code and the body, or `None` when
/// nothing answers.
pub fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    Some((status, body))
}

/// The status code of `path` at `address`, 0 when nothing answers.
pub fn status(address: &str, path: &str) -> u16 {
    get(address, path).map_or(0, |(status, _)| status)
}

/// The metrics text at `address`, empty when nothing answers.
pub fn metrics(address: &str) -> String {
    get(address, "/metrics")
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The value of `series` (a name with its labels as exposed, e.g.
/// `fleetshift_rollouts{state="running"}`) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}
