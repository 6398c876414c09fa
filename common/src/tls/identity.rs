//! Identities are SPIFFE ids carried as the certificate's single URI SAN.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate's holder is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Agent,
    Operator,
    Coordinator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Operator => "operator",
            Self::Coordinator => "coordinator",
        }
    }
}

/// `spiffe://<trust-domain>/<role>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    role: Role,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error(
        "the certificate has no URI SAN; a fleetshift identity is spiffe://<trust-domain>/<agent|operator|coordinator>/<name> (issue one with `fleetshift certs issue`)"
    )]
    NoUriSan,
    #[error("the certificate has {0} URI SANs; exactly one identity is allowed")]
    SeveralUriSans(usize),
    #[error("{uri:?} is not a fleetshift identity: {reason}")]
    Malformed { uri: String, reason: String },
}

impl SpiffeId {
    pub fn new(trust_domain: &str, role: Role, name: &str) -> Result<Self, IdentityError> {
        let malformed = |reason: &str| IdentityError::Malformed {
            uri: format!("spiffe://{trust_domain}/{}/{name}", role.as_str()),
            reason: reason.to_owned(),
        };
        let domain_ok = !trust_domain.is_empty()
            && trust_domain.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if !domain_ok {
            return Err(malformed(
                "the trust domain allows lower-case letters, digits, '.', '-' and '_'",
            ));
        }
        let name_ok = !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !name_ok {
            return Err(malformed(
                "the name allows letters, digits, '.', '-' and '_'",
            ));
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            role,
            name: name.to_owned(),
        })
    }

    pub fn parse(uri: &str) -> Result<Self, IdentityError> {
        let malformed = |reason: &str| IdentityError::Malformed {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| malformed("it does not start with spiffe://"))?;
        let mut parts = rest.split('/');
        let (Some(trust_domain), Some(role), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected spiffe://<trust-domain>/<role>/<name>"));
        };
        let role = match role {
            "agent" => Role::Agent,
            "operator" => Role::Operator,
            "coordinator" => Role::Coordinator,
            _ => return Err(malformed("the role must be agent, operator or coordinator")),
        };
        Self::new(trust_domain, role, name)
    }

    /// The identity a DER certificate carries: its one URI SAN.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, certificate) = X509Certificate::from_der(der)
            .map_err(|error| IdentityError::Unparsable(error.to_string()))?;
        let names = certificate
            .subject_alternative_name()
            .map_err(|error| IdentityError::Unparsable(error.to_string()))?;
        let uris: Vec<&str> = names
            .map(|extension| {
                extension
                    .value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::URI(uri) => Some(*uri),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        match uris.as_slice() {
            [] => Err(IdentityError::NoUriSan),
            [uri] => Self::parse(uri),
            several => Err(IdentityError::SeveralUriSans(several.len())),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "spiffe://{}/{}/{}",
            self.trust_domain,
            self.role.as_str(),
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_fleet_identities() {
        let id = SpiffeId::parse("spiffe://fleet.example/agent/db-host-1").expect("valid");
        assert_eq!(id.role(), Role::Agent);
        assert_eq!(id.name(), "db-host-1");
        assert_eq!(id.trust_domain(), "fleet.example");
        assert_eq!(id.to_string(), "spiffe://fleet.example/agent/db-host-1");
    }

    #[test]
    fn refuses_what_is_not_a_fleet_identity() {
        for uri in [
            "https://fleet.example/agent/a",
            "spiffe://fleet.example/agent",
            "spiffe://fleet.example/agent/a/b",
            "spiffe://fleet.example/robot/a",
            "spiffe://Fleet.Example/agent/a",
            "spiffe://fleet.example/agent/..",
        ] {
            assert!(SpiffeId::parse(uri).is_err(), "{uri} must be refused");
        }
    }
}
