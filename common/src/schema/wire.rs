//! A snapshot as agents send it: its canonical text, gzip-compressed (schemas repeat
//! themselves, so a 24,000-object text shrinks to a fraction), checked on arrival against the
//! fingerprint it is sent with.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::{Fingerprint, ParseError, Snapshot};

/// Why packed bytes are not the snapshot they claim to be.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the schema snapshot is not gzip-compressed UTF-8 text: {0}")]
    Encoding(#[from] std::io::Error),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("the schema snapshot's fingerprint is {actual}, not the {claimed} it was sent as")]
    Mismatch {
        claimed: String,
        actual: Fingerprint,
    },
}

/// The snapshot's canonical text, compressed.
pub fn pack(snapshot: &Snapshot) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(snapshot.canonical().as_bytes());
    encoder.finish().unwrap_or_default()
}

/// The snapshot in `packed`, which must have fingerprint `claimed`.
pub fn unpack(packed: &[u8], claimed: &str) -> Result<Snapshot, UnpackError> {
    let mut text = String::new();
    GzDecoder::new(packed).read_to_string(&mut text)?;
    let snapshot = Snapshot::parse(&text)?;
    let actual = snapshot.fingerprint();
    if actual.as_str() != claimed {
        return Err(UnpackError::Mismatch {
            claimed: claimed.to_owned(),
            actual,
        });
    }
    Ok(snapshot)
}
