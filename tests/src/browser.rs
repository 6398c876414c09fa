//! A real headless Chromium (the Debian package), driven over WebDriver by `chromedriver`,
//! holding an operator's certificate: its NSS database (in a home of its own) trusts the
//! fleet's CA and holds the operator's key, imported with `pk12util`, and its profile presents
//! that certificate to loopback consoles without asking (the `auto_select_certificate`
//! content setting).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use fleetshift_common::tls::pki;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fleet::Process;
use crate::wait::wait_until;

/// What chromedriver prints once it listens.
const DRIVER_READY: &str = "was started successfully";

/// A browser session; the browser and its driver stop when it is dropped.
#[derive(Debug)]
pub struct Browser {
    port: u16,
    session: String,
    _driver: Process,
    _home: tempfile::TempDir,
}

/// Where the browser and its driver are: `FLEETSHIFT_CHROMIUM` and `FLEETSHIFT_CHROMEDRIVER`,
/// or the Debian packages' paths.
fn binaries() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("FLEETSHIFT_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let driver = std::env::var_os("FLEETSHIFT_CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
    (chromium, driver)
}

fn run(program: &str, arguments: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .with_context(|| format!("running {program} (Debian: libnss3-tools, openssl)"))?;
    if !output.status.success() {
        bail!(
            "{program} {arguments:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A home whose NSS database trusts `pki`'s CA and holds `holder`'s certificate and key
/// (`<role>-<name>` in `pki`), and a profile that presents it to `https://127.0.0.1:*`.
fn prepare_home(pki: &Path, holder: &str) -> anyhow::Result<tempfile::TempDir> {
    let home = tempfile::tempdir()?;
    let nss = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nss)?;
    let database = format!("sql:{}", nss.display());
    run("certutil", &["-N", "--empty-password", "-d", &database])?;
    let ca = pki.join(pki::CA_CERTIFICATE);
    let ca = ca.to_str().context("UTF-8 path")?;
    run(
        "certutil",
        &[
            "-A", "-t", "C,,", "-n", "fleet-ca", "-i", ca, "-d", &database,
        ],
    )?;
    let bundle = home.path().join("operator.p12");
    let bundle = bundle.to_str().context("UTF-8 path")?;
    let certificate = pki.join(format!("{holder}.pem"));
    let key = pki.join(format!("{holder}.key"));
    run(
        "openssl",
        &[
            "pkcs12",
            "-export",
            "-in",
            certificate.to_str().context("UTF-8 path")?,
            "-inkey",
            key.to_str().context("UTF-8 path")?,
            "-out",
            bundle,
            "-passout",
            "pass:",
            "-name",
            holder,
        ],
    )?;
    run("pk12util", &["-i", bundle, "-d", &database, "-W", ""])?;
    let profile = home.path().join("profile/Default");
    std::fs::create_dir_all(&profile)?;
    let preferences = json!({"profile": {"content_settings": {"exceptions": {
        "auto_select_certificate": {
            "https://127.0.0.1:*,*": {"setting": {"filters": [{}]}}
        }
    }}}});
    std::fs::write(profile.join("Preferences"), preferences.to_string())?;
    Ok(home)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session holding `holder`'s certificate
    /// from `pki`.
    pub async fn start(pki: &Path, holder: &str) -> anyhow::Result<Self> {
        let home = prepare_home(pki, holder)?;
        let (chromium, driver_binary) = binaries();
        let (port, driver) = fleetshift_testkit::ports::with_free_port(|port| {
            let log = home.path().join("chromedriver.log");
            let output = home.path().join("chromedriver.out");
            let environment = [("HOME".to_owned(), home.path().display().to_string())];
            let mut driver = Process::spawn_printing(
                &driver_binary,
                &[&format!("--port={port}")],
                &output,
                &log,
                &environment,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let printed = std::fs::read_to_string(&output).unwrap_or_default();
                if printed.contains(DRIVER_READY) {
                    return Ok((port, driver));
                }
                if driver.wait_for_exit(Duration::from_millis(50)).is_some()
                    || Instant::now() > deadline
                {
                    bail!(
                        "chromedriver did not start on port {port}: {printed}{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        })?;
        let profile = home.path().join("profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let created = request(port, "POST", "/session", Some(&capabilities)).await?;
        let session = created["value"]["sessionId"]
            .as_str()
            .context("no session id in chromedriver's answer")?
            .to_owned();
        Ok(Self {
            port,
            session,
            _driver: driver,
            _home: home,
        })
    }

    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        request(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    /// Opens `url` and waits for the page's script to have run (`body[data-loaded]`).
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "/url", Some(&json!({ "url": url })))
            .await?;
        let loaded = self
            .wait_for(
                "return document.body && document.body.dataset.loaded === 'true'",
                Duration::from_secs(30),
            )
            .await?;
        if !loaded {
            bail!(
                "{url} never finished loading: {}",
                self.text("#main").await?
            );
        }
        Ok(())
    }

    /// What `script` (a function body) returns in the page.
    pub async fn run(&self, script: &str) -> anyhow::Result<Value> {
        let answer = self
            .command(
                "POST",
                "/execute/sync",
                Some(&json!({ "script": script, "args": [] })),
            )
            .await?;
        Ok(answer["value"].clone())
    }

    /// Runs `script` until it returns `true`, for up to `limit`; whether it did. A script that
    /// fails ends the wait with its error.
    pub async fn wait_for(&self, script: &str, limit: Duration) -> anyhow::Result<bool> {
        let failed = std::sync::Mutex::new(None);
        let failure = &failed;
        let held = wait_until(limit, move || async move {
            match self.run(script).await {
                Ok(value) => value == Value::Bool(true),
                Err(error) => {
                    *failure
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
                    true
                }
            }
        })
        .await;
        match failed
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(error) => Err(error),
            None => Ok(held),
        }
    }

    /// The text of the first element `selector` matches (empty when none does).
    pub async fn text(&self, selector: &str) -> anyhow::Result<String> {
        let script = format!(
            "const node = document.querySelector({}); return node ? node.innerText : '';",
            json!(selector)
        );
        Ok(self
            .run(&script)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let answer = self.command("GET", "/screenshot", None).await?;
        let encoded = answer["value"].as_str().context("no screenshot")?;
        let png = base64::engine::general_purpose::STANDARD.decode(encoded)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: the driver is killed right after, and the browser with its session.
        let port = self.port;
        let path = format!("/session/{}", self.session);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                let _ = runtime.block_on(request(port, "DELETE", &path, None));
            }
        })
        .join();
    }
}

/// One WebDriver call: its `value`, or the driver's error.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let answer = http_exchange(stream, method, "127.0.0.1", path, &[], &body).await?;
    let status = answer.status;
    let answer: Value = serde_json::from_slice(&answer.body)
        .with_context(|| format!("chromedriver's answer to {method} {path}"))?;
    if status != 200 {
        bail!(
            "chromedriver refused {method} {path} ({status}): {}",
            answer["value"]
        );
    }
    Ok(answer)
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// The status line and the header lines.
    pub head: String,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 exchange on `stream`, which is closed after it; the body is read to its
/// `Content-Length`, or to the end of the stream without one (and decoded when chunked).
pub async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpAnswer> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 16 << 10];
    let split = loop {
        if let Some(split) = answer.windows(4).position(|window| window == b"\r\n\r\n") {
            break split;
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            bail!("the answer ended before its header did");
        }
        answer.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("an answer without a status")?;
    let length: Option<usize> = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    });
    let mut body = answer[split + 4..].to_vec();
    match length {
        Some(length) => {
            while body.len() < length {
                let read = stream.read(&mut buffer).await?;
                if read == 0 {
                    bail!("the answer ended {} bytes short", length - body.len());
                }
                body.extend_from_slice(&buffer[..read]);
            }
            body.truncate(length);
        }
        // A TLS peer may close without close_notify: what was read is the body.
        None => {
            let _ = stream.read_to_end(&mut body).await;
        }
    }
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim() == "chunked"
        })
    });
    if chunked {
        body = dechunked(&body)?;
    }
    Ok(HttpAnswer { status, head, body })
}

/// A chunked body's content (a stream cut short keeps what arrived whole).
fn dechunked(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut content = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|window| window == b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .with_context(|| format!("a chunk size {size:?}"))?;
        let start = line_end + 2;
        if size == 0 || raw.len() < start + size {
            break;
        }
        content.extend_from_slice(&raw[start..start + size]);
        raw = raw.get(start + size + 2..).unwrap_or_default();
    }
    Ok(content)
}
