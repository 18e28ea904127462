//! TLS identities for QUIC: certificates and keys read from PEM files, and a
//! development CA that signs an aggregator's server certificate and edge
//! client certificates, generated into a data folder on first start when
//! none are configured.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};

/// A certificate and its private key, DER-encoded.
#[derive(Debug)]
pub struct Identity {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Certificate work that failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the parameters.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or key.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// rustls refused a certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate authority that can issue server and edge certificates.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl DevCa {
    /// A fresh self-signed CA.
    pub fn generate(name: &str) -> Result<DevCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(DevCa { issuer })
    }

    /// The CA certificate.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a certificate for `names`, for a server or a client.
    pub fn issue(
        &self,
        names: &[&str],
        client: bool,
    ) -> Result<(Identity, String, String), TlsError> {
        self.issue_valid(names, client, None)
    }

    /// Issues a certificate valid from `validity.0` to `validity.1` (rcgen's long default when `None`).
    pub fn issue_valid(
        &self,
        names: &[&str],
        client: bool,
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> Result<(Identity, String, String), TlsError> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("sluice"),
        );
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if let Some((from, until)) = validity {
            params.not_before = from;
            params.not_after = until;
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let identity = Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        };
        Ok((identity, cert.pem(), key.serialize_pem()))
    }
}

/// The files of a development PKI in a folder.
pub struct DevPki {
    /// The CA certificate that signs edges and the server.
    pub ca: CertificateDer<'static>,
    /// The aggregator's server identity.
    pub server: Identity,
    /// Where the edge's certificate and key were written.
    pub edge_files: (PathBuf, PathBuf),
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a private key readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| TlsError::Io {
            action: "writing",
            path: path.to_path_buf(),
            source,
        })
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

/// The crypto provider every endpoint uses.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from a PEM file.
pub fn certs_from_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = read_pem(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// A private key from a PEM file.
pub fn key_from_pem(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("no usable private key: {e}"),
    })
}

impl Identity {
    /// The chain in `cert` and the key in `key`, both PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: certs_from_pem(cert)?,
            key: key_from_pem(key)?,
        })
    }
}

/// The first certificate of a PEM file: a CA to trust.
pub fn ca_from_pem(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let mut certs = certs_from_pem(path)?;
    Ok(certs.swap_remove(0))
}

/// Loads the development PKI from `dir`, generating it on first use.
pub fn ensure_dev_pki(dir: &Path) -> Result<DevPki, TlsError> {
    let ca_path = dir.join("ca.pem");
    let server_cert = dir.join("server.pem");
    let server_key = dir.join("server.key.pem");
    let edge_cert = dir.join("edge.pem");
    let edge_key = dir.join("edge.key.pem");
    if !ca_path.exists() || !server_cert.exists() || !server_key.exists() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let ca = DevCa::generate("Sluice development CA")?;
        let (_, cert_pem, key_pem) = ca.issue(&["localhost", "127.0.0.1"], false)?;
        write(&server_cert, &cert_pem)?;
        write_secret(&server_key, &key_pem)?;
        let (_, cert_pem, key_pem) = ca.issue(&["sluice-edge"], true)?;
        write(&edge_cert, &cert_pem)?;
        write_secret(&edge_key, &key_pem)?;
        write(&ca_path, &ca.pem())?;
        tracing::warn!(dir = %dir.display(), "Generated a development CA, server and edge certificates; configure real ones outside development.");
    }
    Ok(DevPki {
        ca: ca_from_pem(&ca_path)?,
        server: Identity::from_pem_files(&server_cert, &server_key)?,
        edge_files: (edge_cert, edge_key),
    })
}
