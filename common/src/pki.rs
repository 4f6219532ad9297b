//! The cluster PKI: a CA, certificates it issues (serving and client), and
//! the files they live in. Used by the apiserver's self-bootstrap and by the
//! supervisor; private keys are always written 0600.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a certificate carries at most two organizations (groups)")]
    TooManyGroups,
    #[error("{0}: not a valid PEM certificate")]
    BadCert(String),
}

/// File names inside a server's cert dir (`<data-dir>/server/tls/`). The
/// supervisor and the API server both bootstrap from them, so a cert dir made
/// by either is reused by the other.
pub mod layout {
    /// The cluster CA (`server-ca.crt` / `server-ca.key`).
    pub const SERVER_CA: &str = "server-ca";
    pub const SERVER_CA_CN: &str = "k3rs-server-ca";
    /// The API server's serving certificate (`.crt` / `.key`).
    pub const APISERVER_SERVING: &str = "serving-kube-apiserver";
    /// The admin (`system:admin`, `system:masters`) client certificate.
    pub const ADMIN_CLIENT: &str = "client-admin";
    /// The API server's client certificate for kubelet APIs
    /// (`system:kube-apiserver`, `system:masters`).
    pub const APISERVER_KUBELET_CLIENT: &str = "client-kube-apiserver";
    /// The admin kubeconfig the API server writes for itself.
    pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
    /// The service-account signing key (PKCS#8 PEM, ECDSA P-256).
    pub const SERVICE_ACCOUNT_KEY: &str = "service.key";
}

/// Loads the PEM private key at `path`, generating an ECDSA P-256 key
/// (PKCS#8, 0600) when the file does not exist. Used to sign service-account
/// tokens.
pub fn load_or_generate_signing_key(path: &Path) -> Result<String, PkiError> {
    if path.exists() {
        return read(path);
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let pem = key.serialize_pem();
    write_private(path, &pem)?;
    Ok(pem)
}

/// A PEM certificate with its PEM private key.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What to put in an issued certificate.
#[derive(Debug, Clone, Default)]
pub struct CertSpec {
    pub common_name: String,
    /// `O=` entries; Kubernetes reads them as the user's groups.
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub server: bool,
    pub client: bool,
    pub validity_days: i64,
}

/// A CA able to issue certificates.
pub struct Ca {
    pub cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Creates a new self-signed CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let issuer = Issuer::new(params, key);
        Ok(Self {
            cert_pem,
            key_pem,
            issuer,
        })
    }

    /// Loads a CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// Loads `<dir>/<name>.crt` + `<dir>/<name>.key`, creating them when missing.
    pub fn load_or_generate(dir: &Path, name: &str, common_name: &str) -> Result<Self, PkiError> {
        let crt = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        if crt.exists() && key.exists() {
            return Self::from_pem(&read(&crt)?, &read(&key)?);
        }
        let ca = Self::generate(common_name)?;
        write_public(&crt, &ca.cert_pem)?;
        write_private(&key, &ca.key_pem)?;
        Ok(ca)
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate signed by this CA.
    pub fn issue(&self, spec: &CertSpec) -> Result<CertKey, PkiError> {
        if spec.organizations.len() > 2 {
            return Err(PkiError::TooManyGroups);
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&spec.common_name, &spec.organizations);
        for d in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into()?));
        }
        for ip in &spec.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(spec.validity_days.max(1));
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads `<dir>/<name>.crt/.key` when present and valid for more than
    /// `renew_days`, else issues and writes a fresh pair.
    pub fn load_or_issue(
        &self,
        dir: &Path,
        name: &str,
        spec: &CertSpec,
        renew_days: i64,
    ) -> Result<CertKey, PkiError> {
        let crt = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        if crt.exists() && key.exists() {
            let cert_pem = read(&crt)?;
            if !expires_within(&cert_pem, renew_days).unwrap_or(true) {
                return Ok(CertKey {
                    cert_pem,
                    key_pem: read(&key)?,
                });
            }
        }
        let ck = self.issue(spec)?;
        write_public(&crt, &ck.cert_pem)?;
        write_private(&key, &ck.key_pem)?;
        Ok(ck)
    }
}

/// The O= attribute's OID (2.5.4.10).
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

fn dn(cn: &str, orgs: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    // rcgen keys a name by attribute type, so a second O= goes in under the
    // same OID spelled as a custom type; two groups cover every cert k3rs issues.
    if let Some(o) = orgs.first() {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    if let Some(o) = orgs.get(1) {
        dn.push(DnType::CustomDnType(ORGANIZATION_OID.to_vec()), o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// This machine's host name, lower-cased (certificate SANs, node names);
/// "localhost" when the kernel has none.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether the first certificate in `pem` expires within `days` days.
pub fn expires_within(pem: &str, days: i64) -> Result<bool, PkiError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| PkiError::BadCert("certificate".into()))?;
    let cert = p
        .parse_x509()
        .map_err(|_| PkiError::BadCert("certificate".into()))?;
    let not_after = cert.validity().not_after.timestamp();
    let limit = OffsetDateTime::now_utc().unix_timestamp() + days * 86_400;
    Ok(not_after < limit)
}

/// The user name (CN) and groups (O) of a DER client certificate.
pub fn subject_of(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, groups))
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes a file readable by everyone (certificates).
pub fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_mode(path, contents, 0o644)
}

/// Writes a file only the owner can read (keys, tokens, kubeconfigs).
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_mode(path, contents, 0o600)
}

/// Writes atomically (temp file + rename) with the given mode set before any
/// secret byte lands on disk.
pub fn write_mode(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp-k3rs");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A kubeconfig with one cluster, one user authenticated by a client
/// certificate, and one context, all named `default` like K3s's.
pub fn kubeconfig(server: &str, ca_pem: &str, client: &CertKey) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(&client.cert_pem),
        b64(&client.key_pem)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_client_cert_with_groups_and_reloads_ca() {
        let ca = Ca::generate("k3rs-test-ca").unwrap();
        let ck = ca
            .issue(&CertSpec {
                common_name: "alice".into(),
                organizations: vec!["system:masters".into(), "dev".into()],
                client: true,
                validity_days: 30,
                ..Default::default()
            })
            .unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(ck.cert_pem.as_bytes()).unwrap();
        let (cn, groups) = subject_of(&p.contents).unwrap();
        assert_eq!(cn, "alice");
        assert_eq!(groups, vec!["system:masters", "dev"]);
        assert!(expires_within(&ck.cert_pem, 90).unwrap());
        assert!(!expires_within(&ck.cert_pem, 10).unwrap());

        let again = Ca::from_pem(&ca.cert_pem, ca.key_pem()).unwrap();
        again
            .issue(&CertSpec {
                common_name: "x".into(),
                server: true,
                dns_names: vec!["localhost".into()],
                validity_days: 1,
                ..Default::default()
            })
            .unwrap();
    }

    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/key.pem");
        write_private(&p, "secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
