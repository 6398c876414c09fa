//! The key layout, versioned so a future layout can live beside this one.

const PREFIX: &str = "/fleetshift/v1";

pub fn claim(shard: &str) -> String {
    format!("{PREFIX}/claims/{shard}")
}

pub fn leader() -> String {
    format!("{PREFIX}/leader")
}

pub fn state(key: &str) -> String {
    format!("{PREFIX}/state/{key}")
}

pub fn agents_prefix() -> String {
    format!("{PREFIX}/agents/")
}

pub fn agent(agent: &str) -> String {
    format!("{}{agent}", agents_prefix())
}
