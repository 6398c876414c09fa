//! Mutual TLS for every fleetshift connection (rustls, ring).
//!
//! - [`identity`]: who is on the other end — the certificate's single URI SAN, a SPIFFE id
//!   `spiffe://<trust-domain>/<agent|operator|coordinator>/<name>` (never the CN).
//! - [`pki`]: a development CA and leaf certificates for a local fleet (`fleetshift certs`).
//! - [`mtls`]: rustls server and client configurations from PEM files; both sides must
//!   present a certificate chaining to the trust bundle.
//! - [`channel`]: client channels to a coordinator, mutual TLS only, through [`connector`].
//! - [`reload`]: configurations that follow their files (polled, SIGHUP) without a restart.
//! - [`refusal`]: why a handshake with a coordinator failed, and which setting to check.

pub mod channel;
pub mod connector;
pub mod identity;
pub mod mtls;
pub mod pki;
pub mod refusal;
pub mod reload;
