//! The fleet's own processes (coordinator replicas, agents): started from a fixed command,
//! killed, frozen, continued and started again, logging to one file across restarts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use rustix::process::{Pid, Signal};

/// A process the campaign owns; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Supervised {
    program: PathBuf,
    arguments: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Supervised {
    /// Starts `program` with `arguments`, its stderr appended to `log`.
    pub fn start(program: &Path, arguments: &[String], log: &Path) -> anyhow::Result<Self> {
        let mut process = Self {
            program: program.to_owned(),
            arguments: arguments.to_vec(),
            log: log.to_owned(),
            child: None,
        };
        process.restart()?;
        Ok(process)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .with_context(|| format!("killing {}", self.program.display()))?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the process again (when it is not running).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Freezes the process (SIGSTOP).
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal(Signal::STOP)
    }

    /// Continues a frozen process (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal(Signal::CONT)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        if let Some(child) = &self.child {
            signal_pid(child.id(), signal)?;
        }
        Ok(())
    }
}

/// Sends `signal` to the process `pid`.
pub fn signal_pid(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .context("not a process id")?;
    rustix::process::kill_process(pid, signal)
        .with_context(|| format!("sending {signal:?} to process {}", pid.as_raw_pid()))
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
