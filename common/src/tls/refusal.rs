//! Why a TLS handshake with a coordinator failed, told from the connecting side: which side
//! refused whose certificate and why, and which of its own settings to check. A bare
//! "transport error" tells an operator nothing; the cause is a `rustls::Error` somewhere in the
//! error's chain (inside an `io::Error`, whose `source()` skips it).

use std::error::Error;

/// A refused handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeRefusal {
    #[error(
        "this side refused the coordinator's certificate: no CA in its trust bundle issued it (unknown issuer)"
    )]
    UnknownIssuer,
    #[error(
        "this side refused the coordinator's certificate: it is not valid for the name {0} (name mismatch)"
    )]
    NameMismatch(String),
    #[error(
        "this side refused the coordinator's certificate: it is expired or not yet valid ({0})"
    )]
    ServerOutOfDate(String),
    #[error("this side refused the coordinator's certificate ({0})")]
    ServerCertificate(String),
    #[error("the coordinator refused this side's certificate: it has expired")]
    ClientExpired,
    #[error("the coordinator requires a client certificate and was given none")]
    ClientMissing,
    #[error(
        "the coordinator refused this side's certificate ({0}): it is not issued by a CA the coordinator trusts"
    )]
    ClientUntrusted(String),
    #[error("the TLS handshake failed: {0}")]
    Other(String),
}

/// The setting of the connecting side that a refusal points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The CA bundle the coordinator's certificate is checked against.
    TrustBundle,
    /// The name the coordinator's certificate is checked against (the address's host).
    ServerName,
    /// This side's own certificate and key.
    Certificate,
}

impl HandshakeRefusal {
    /// The refusal in `error`'s chain, if it holds one; `server_name` is the name the
    /// coordinator's certificate was checked against.
    pub fn find(error: &(dyn Error + 'static), server_name: &str) -> Option<Self> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(found) = Self::read(&error.to_string(), server_name) {
                return Some(found);
            }
            // An `io::Error`'s `source()` skips the error it wraps.
            let wrapped = error
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref);
            if let Some(found) = wrapped.and_then(|inner| Self::find(inner, server_name)) {
                return Some(found);
            }
            current = error.source();
        }
        None
    }

    /// A rustls error as it reads: tokio-rustls hands it on as text inside an `io::Error`
    /// as often as the typed error, so the text is what both have in common.
    fn read(text: &str, server_name: &str) -> Option<Self> {
        if let Some(alert) = text.strip_prefix("received fatal alert: ") {
            let alert = alert.trim();
            return Some(match alert {
                "CertificateExpired" => Self::ClientExpired,
                "CertificateRequired" => Self::ClientMissing,
                "UnknownCA"
                | "BadCertificate"
                | "CertificateUnknown"
                | "UnsupportedCertificate"
                | "DecryptError"
                | "AccessDenied" => Self::ClientUntrusted(alert.to_owned()),
                _ => Self::Other(text.to_owned()),
            });
        }
        let detail = text.strip_prefix("invalid peer certificate: ")?;
        let has = |words: &[&str]| words.iter().any(|word| detail.contains(word));
        Some(if has(&["UnknownIssuer", "BadSignature"]) {
            Self::UnknownIssuer
        } else if has(&["not valid for name", "NotValidForName"]) {
            Self::NameMismatch(server_name.to_owned())
        } else if has(&["expired", "Expired", "not valid yet", "NotValidYet"]) {
            Self::ServerOutOfDate(detail.to_owned())
        } else {
            Self::ServerCertificate(detail.to_owned())
        })
    }

    /// The setting of this side to check.
    pub fn setting(&self) -> Option<Setting> {
        match self {
            Self::UnknownIssuer | Self::ServerCertificate(_) => Some(Setting::TrustBundle),
            Self::NameMismatch(_) => Some(Setting::ServerName),
            Self::ClientExpired | Self::ClientMissing | Self::ClientUntrusted(_) => {
                Some(Setting::Certificate)
            }
            // The coordinator's own certificate needs renewing; nothing here mends it.
            Self::ServerOutOfDate(_) | Self::Other(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::{AlertDescription, CertificateError};

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Transport(#[source] std::io::Error);

    fn wrapped(cause: rustls::Error) -> Transport {
        Transport(std::io::Error::new(std::io::ErrorKind::InvalidData, cause))
    }

    #[test]
    fn the_cause_is_found_inside_an_io_error_and_points_at_a_setting() {
        let unknown = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let refusal = HandshakeRefusal::find(&unknown, "db-1").expect("found");
        assert_eq!(refusal, HandshakeRefusal::UnknownIssuer);
        assert_eq!(refusal.setting(), Some(Setting::TrustBundle));

        let name = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        let refusal = HandshakeRefusal::find(&name, "coordinator.example").expect("found");
        assert!(
            refusal.to_string().contains("coordinator.example"),
            "{refusal}"
        );
        assert_eq!(refusal.setting(), Some(Setting::ServerName));

        let expired = wrapped(rustls::Error::AlertReceived(
            AlertDescription::CertificateExpired,
        ));
        let refusal = HandshakeRefusal::find(&expired, "c").expect("found");
        assert_eq!(refusal, HandshakeRefusal::ClientExpired);
        assert_eq!(refusal.setting(), Some(Setting::Certificate));

        let plain = Transport(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(HandshakeRefusal::find(&plain, "c"), None);
    }

    #[test]
    fn rustls_errors_handed_on_as_text_read_the_same() {
        let as_text = |cause: rustls::Error| {
            Transport(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                cause.to_string(),
            ))
        };
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::BadSignature),
                HandshakeRefusal::UnknownIssuer,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::DecryptError),
                HandshakeRefusal::ClientUntrusted("DecryptError".to_owned()),
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                HandshakeRefusal::ClientMissing,
            ),
        ];
        for (cause, expected) in cases {
            assert_eq!(HandshakeRefusal::find(&as_text(cause), "c"), Some(expected));
        }
        let expired = as_text(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert_eq!(
            HandshakeRefusal::find(&expired, "c").and_then(|refusal| refusal.setting()),
            None,
            "the coordinator's own certificate needs renewing"
        );
    }
}
