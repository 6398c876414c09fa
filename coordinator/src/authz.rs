//! Authorisation: operator identities (the certificate's `spiffe://<td>/operator/<name>`) are
//! granted roles in the coordinator's configuration; each RPC needs one role. Roles do not
//! imply each other: an approver who should also operate is listed under both.

use std::collections::{BTreeSet, HashMap};

use fleetshift_common::tls::identity::{Role as IdentityRole, SpiffeId};
use fleetshift_common::tls::mtls;
use rustls_pki_types::CertificateDer;
use tonic::{Request, Status};

use crate::error::{ErrorCode, refuse};

/// The caller's identity: its certificate's URI SAN, in this coordinator's trust domain.
pub fn caller<T>(request: &Request<T>, trust_domain: &str) -> Result<SpiffeId, Status> {
    let certificates = request.peer_certs();
    identity(certificates.as_deref().map(Vec::as_slice), trust_domain)
}

/// The identity the leaf of `certificates` (a connection's peer's) names, in `trust_domain`.
pub fn identity(
    certificates: Option<&[CertificateDer<'_>]>,
    trust_domain: &str,
) -> Result<SpiffeId, Status> {
    let identity = mtls::peer_identity(certificates)
        .map_err(|error| refuse(ErrorCode::Unauthenticated, error.to_string()))?;
    if identity.trust_domain() != trust_domain {
        return Err(refuse(
            ErrorCode::Forbidden,
            format!("{identity} belongs to another trust domain than {trust_domain}"),
        ));
    }
    Ok(identity)
}

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperatorRole {
    /// Read shards, plans and rollouts.
    Viewer,
    /// Create, start, pause, resume and cancel rollouts.
    Operator,
    /// Approve plans.
    Approver,
}

impl OperatorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
        }
    }
}

/// Roles by operator name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    granted: HashMap<String, BTreeSet<OperatorRole>>,
}

impl Roles {
    pub fn grant(&mut self, operator: &str, role: OperatorRole) {
        self.granted
            .entry(operator.to_owned())
            .or_default()
            .insert(role);
    }

    /// Allows `identity` to do what `needed` permits, or says why not.
    pub fn authorize(&self, identity: &SpiffeId, needed: OperatorRole) -> Result<(), Status> {
        if identity.role() != IdentityRole::Operator {
            return Err(refuse(
                ErrorCode::Forbidden,
                format!(
                    "{identity} is not an operator identity; the fleet service answers spiffe://{}/operator/<name>",
                    identity.trust_domain()
                ),
            ));
        }
        let roles = self.granted.get(identity.name());
        if roles.is_some_and(|roles| roles.contains(&needed)) {
            return Ok(());
        }
        let held = roles.map_or_else(
            || "none".to_owned(),
            |roles| {
                roles
                    .iter()
                    .map(|role| role.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        Err(refuse(
            ErrorCode::Forbidden,
            format!(
                "{identity} needs the {} role (it has: {held}); grant it under [roles] in the coordinator's configuration",
                needed.as_str()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(name: &str) -> SpiffeId {
        SpiffeId::new("fleet.example", IdentityRole::Operator, name).expect("identity")
    }

    #[test]
    fn each_call_needs_its_own_role() {
        let mut roles = Roles::default();
        roles.grant("alice", OperatorRole::Viewer);
        roles.grant("carol", OperatorRole::Approver);
        assert!(
            roles
                .authorize(&operator("alice"), OperatorRole::Viewer)
                .is_ok()
        );
        let refused = roles
            .authorize(&operator("alice"), OperatorRole::Approver)
            .expect_err("viewer cannot approve");
        assert!(
            refused
                .message()
                .contains("needs the approver role (it has: viewer)"),
            "{}",
            refused.message()
        );
        assert!(
            roles
                .authorize(&operator("carol"), OperatorRole::Viewer)
                .is_err(),
            "roles do not imply each other"
        );
        assert!(
            roles
                .authorize(&operator("mallory"), OperatorRole::Viewer)
                .is_err()
        );
        let agent = SpiffeId::new("fleet.example", IdentityRole::Agent, "alice").expect("identity");
        assert!(
            roles.authorize(&agent, OperatorRole::Viewer).is_err(),
            "an agent named like an operator is still an agent"
        );
    }
}
