//! Generates the wire contract's code from `proto/fleetshift/v1` with protox (pure Rust, no
//! `protoc`) and tonic-prost-build, and keeps the descriptor set for tests and reflection.

use std::path::PathBuf;

const PROTO_ROOT: &str = "../proto";
const FILES: [&str; 6] = [
    "fleetshift/v1/types.proto",
    "fleetshift/v1/rehearsals.proto",
    "fleetshift/v1/backups.proto",
    "fleetshift/v1/agent.proto",
    "fleetshift/v1/fleet.proto",
    "fleetshift/v1/store.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in FILES {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{file}");
    }
    let descriptors = protox::compile(FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("fleetshift_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
