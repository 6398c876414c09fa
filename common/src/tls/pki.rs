//! A development CA and the leaf certificates of a local fleet. Production fleets bring
//! their own PKI; the certificates only need the identity layout of [`super::identity`].
//!
//! The CA certificate names its trust domain in a URI SAN `spiffe://<trust-domain>`, so
//! issuing reads it back instead of asking again. Private keys are written with mode 0600 and
//! never overwritten silently.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{IdentityError, SpiffeId};

pub const CA_CERTIFICATE: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a minute ago (clock skew) for `days` days.
    pub fn days_from_now(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::days(i64::from(days)),
        }
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub identity: SpiffeId,
    /// DNS names the holder serves under (coordinators).
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub validity: Validity,
}

/// Files written by [`init`] or [`issue`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct Written {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {message}", path = .path.display())]
    File { path: PathBuf, message: String },
    #[error("{path} already exists; pass --force to replace it", path = .0.display())]
    Exists(PathBuf),
    #[error("{path} is not a fleetshift CA: {reason}", path = .path.display())]
    NotOurCa { path: PathBuf, reason: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
}

/// Creates `ca.pem` and `ca.key` in `directory` for `trust_domain`.
pub fn init(
    directory: &Path,
    trust_domain: &str,
    validity: Validity,
    force: bool,
) -> Result<Written, PkiError> {
    // Validates the trust domain the same way identities are validated.
    SpiffeId::new(trust_domain, super::identity::Role::Coordinator, "check")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("fleetshift development CA for {trust_domain}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(format!(
        "spiffe://{trust_domain}"
    ))?)];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    create_directory(directory)?;
    write_pair(
        Written {
            certificate: directory.join(CA_CERTIFICATE),
            private_key: directory.join(CA_KEY),
        },
        &key,
        &certificate,
        force,
    )
}

/// The trust domain of the CA in `directory`.
pub fn trust_domain_of(directory: &Path) -> Result<String, PkiError> {
    let path = directory.join(CA_CERTIFICATE);
    let pem = read(&path)?;
    ca_trust_domain(&path, &pem)
}

/// Issues a leaf certificate signed by the CA in `directory`, written as
/// `<role>-<name>.pem` and `<role>-<name>.key`.
pub fn issue(directory: &Path, request: &LeafRequest, force: bool) -> Result<Written, PkiError> {
    let ca_path = directory.join(CA_CERTIFICATE);
    let ca_pem = read(&ca_path)?;
    let ca_key = KeyPair::from_pem(&read(&directory.join(CA_KEY))?)?;
    let trust_domain = ca_trust_domain(&ca_path, &ca_pem)?;
    if trust_domain != request.identity.trust_domain() {
        return Err(PkiError::NotOurCa {
            path: ca_path,
            reason: format!(
                "it signs for trust domain {trust_domain}, not {}",
                request.identity.trust_domain()
            ),
        });
    }
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)?;
    let key = KeyPair::generate()?;
    let certificate = leaf_params(request)?.signed_by(&key, &issuer)?;
    let stem = format!(
        "{}-{}",
        request.identity.role().as_str(),
        request.identity.name()
    );
    write_pair(
        Written {
            certificate: directory.join(format!("{stem}.pem")),
            private_key: directory.join(format!("{stem}.key")),
        },
        &key,
        &certificate,
        force,
    )
}

fn leaf_params(request: &LeafRequest) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, request.identity.to_string());
    let mut names = vec![SanType::URI(Ia5String::try_from(
        request.identity.to_string(),
    )?)];
    for dns_name in &request.dns_names {
        names.push(SanType::DnsName(Ia5String::try_from(dns_name.as_str())?));
    }
    names.extend(request.ip_addresses.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = request.validity.not_before;
    params.not_after = request.validity.not_after;
    Ok(params)
}

/// The trust domain a fleetshift CA certificate names in its URI SAN.
fn ca_trust_domain(path: &Path, pem: &str) -> Result<String, PkiError> {
    let not_ours = |reason: &str| PkiError::NotOurCa {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|error| not_ours(&error.to_string()))?;
    let (_, certificate) =
        X509Certificate::from_der(&der).map_err(|error| not_ours(&error.to_string()))?;
    let names = certificate
        .subject_alternative_name()
        .map_err(|error| not_ours(&error.to_string()))?
        .ok_or_else(|| not_ours("it has no spiffe://<trust-domain> URI SAN"))?;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix("spiffe://").map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| not_ours("it has no spiffe://<trust-domain> URI SAN"))
}

fn create_directory(directory: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(directory).map_err(|error| PkiError::File {
        path: directory.to_path_buf(),
        message: format!("cannot create the directory: {error}"),
    })
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|error| PkiError::File {
        path: path.to_path_buf(),
        message: format!("cannot read: {error} (run `fleetshift certs init` first)"),
    })
}

/// Writes a private key (0600) and its certificate; refuses before writing anything when
/// either exists and `force` is off, so a key never ends up beside another key's certificate.
fn write_pair(
    written: Written,
    key: &KeyPair,
    certificate: &Certificate,
    force: bool,
) -> Result<Written, PkiError> {
    if !force {
        for path in [&written.private_key, &written.certificate] {
            if path.exists() {
                return Err(PkiError::Exists(path.clone()));
            }
        }
    }
    write_file(&written.private_key, key.serialize_pem().as_bytes(), true)?;
    write_file(&written.certificate, certificate.pem().as_bytes(), false)?;
    Ok(written)
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let failed = |error: std::io::Error| PkiError::File {
        path: path.to_path_buf(),
        message: format!("cannot write: {error}"),
    };
    let mut file = options.open(path).map_err(failed)?;
    if private {
        // `mode` applies on creation only; a replaced key file gets it too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed)?;
    }
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)
}
