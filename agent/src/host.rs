//! What the agent says about its host in every Hello: its name, CPUs and memory.

use fleetshift_common::proto::v1::HostFacts;

/// This host's facts, read now; what cannot be read is left at zero.
pub fn facts() -> HostFacts {
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let cpus = std::thread::available_parallelism()
        .map_or(0, |cpus| u32::try_from(cpus.get()).unwrap_or(u32::MAX));
    HostFacts {
        hostname,
        cpus,
        memory_bytes: memory_bytes(),
    }
}

#[cfg(target_os = "linux")]
fn memory_bytes() -> u64 {
    let info = rustix::system::sysinfo();
    info.totalram.saturating_mul(u64::from(info.mem_unit))
}

#[cfg(not(target_os = "linux"))]
fn memory_bytes() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_has_a_name_cpus_and_memory() {
        let facts = super::facts();
        assert!(!facts.hostname.is_empty());
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 0);
    }
}
