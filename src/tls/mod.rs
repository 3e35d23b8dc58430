//! TLS on both sides (rustls, `ring` provider): the client-facing server configuration from
//! PEM files (optionally verifying client certificates), the upstream client configuration,
//! and what a handshake tells the audit trail (version, cipher, client certificate).

pub mod config;

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::util::hex::hex_sha256;
use config::{ClientAuth, TlsConfig, UpstreamTlsConfig, UserFrom};

/// A TLS configuration that cannot be built; its `Display` names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material (key does not match, bad CA, ...).
    #[error("{0}")]
    Rustls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: message.to_string() }
}

/// Every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The certificates of a PEM file the proxy presents (its own, or its client certificate to
/// Redis), the first one checked for what rustls refuses with a message that names neither
/// the file nor the fix.
fn own_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = load_certs(path)?;
    if let Ok((_, first)) = x509_parser::parse_x509_certificate(certs[0].as_ref()) {
        // Redis accepts X.509 v1 certificates (OpenSSL does), and its documentation's
        // `utils/gen-test-certs.sh` makes one (`redis.crt`); rustls (webpki) takes v3 only.
        if first.version() != x509_parser::x509::X509Version::V3 {
            return Err(file_error(
                path,
                format!(
                    "an X.509 v{} certificate, which rustls does not accept: reissue it as v3 \
                     (with extensions, e.g. `openssl x509 -req ... -extfile FILE -extensions \
                     SECTION` with a subjectAltName; Redis's utils/gen-test-certs.sh makes its \
                     redis.crt v1 and its server.crt v3)",
                    first.version().0 + 1
                ),
            ));
        }
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_error(path, format!("no usable private key: {e}")))
}

fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The client-facing configuration: certificate and key, and client certificates verified
/// against `ca_file` when `client_auth` asks for them.
pub(crate) fn server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = own_certs(&config.cert_file)?;
    let key = load_key(&config.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match (&config.client_auth, &config.ca_file) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (auth, Some(ca_file)) => {
            let roots = Arc::new(roots_from(ca_file)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if *auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier.build().map_err(|e| TlsError::Rustls(e.to_string()))?,
            )
        }
        (_, None) => return Err(TlsError::Rustls("client_auth needs tls.ca_file".into())),
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|e| file_error(&config.key_file, format!("does not fit the certificate: {e}")))?;
    Ok(Arc::new(server))
}

/// The upstream configuration: Redis's certificate checked against `ca_file` or the system
/// roots (or not at all with `insecure_skip_verify`), and an optional client certificate.
pub fn client_config(config: &UpstreamTlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if config.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert))
    } else {
        let roots = match &config.ca_file {
            Some(path) => roots_from(path)?,
            None => {
                let mut roots = RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(TlsError::Rustls(
                        "no system root certificates found; set upstream.tls.ca_file".into(),
                    ));
                }
                roots
            }
        };
        builder.with_root_certificates(roots)
    };
    let client = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(own_certs(cert)?, load_key(key)?)
            .map_err(|e| file_error(key, format!("does not fit the certificate: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(client))
}

/// The name Redis's certificate is checked against.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| TlsError::Rustls(format!("\"{name}\" is not a valid server name: {e}")))
}

/// What the two signature checks of [`ServerCertVerifier`] take and give.
type Der<'a> = CertificateDer<'a>;
type Dss = DigitallySignedStruct;
type Verified = Result<HandshakeSignatureValid, rustls::Error>;

/// The signature algorithms of the crypto provider in use.
fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// `upstream.tls.insecure_skip_verify`: any certificate is accepted (signatures are still
/// checked, so the handshake itself is sound).
#[derive(Debug)]
struct AcceptAnyServerCert;

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &Der<'_>, dss: &Dss) -> Verified {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &Der<'_>, dss: &Dss) -> Verified {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// What a finished handshake says about a client connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The cipher suite, as IANA names it.
    pub cipher: String,
    /// SHA-256 of the client certificate (DER), lower-case hex.
    pub client_cert_sha256: Option<String>,
    /// The client certificate's subject (RFC 4514).
    pub client_subject: Option<String>,
    /// The name `tls.user_from` takes from it (CN or first DNS / e-mail SAN).
    pub client_name: Option<String>,
}

impl TlsFacts {
    /// Reads the facts off a server-side connection after its handshake.
    pub fn of(connection: &rustls::ServerConnection, user_from: UserFrom) -> Self {
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher = connection
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or_default()
            .to_owned();
        let mut facts = Self { version, cipher, ..Self::default() };
        if let Some(cert) = connection.peer_certificates().and_then(|certs| certs.first()) {
            facts.client_cert_sha256 = Some(hex_sha256(cert.as_ref()));
            if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
                facts.client_subject = Some(parsed.subject().to_string());
                facts.client_name = name_of(&parsed, user_from);
            }
        }
        facts
    }
}

/// The CN, or the first DNS name or e-mail of the subject alternative names.
fn name_of(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    user_from: UserFrom,
) -> Option<String> {
    match user_from {
        UserFrom::None => None,
        UserFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        UserFrom::San => {
            let san = cert.subject_alternative_name().ok().flatten()?;
            san.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                x509_parser::extensions::GeneralName::RFC822Name(mail) => Some((*mail).to_owned()),
                _ => None,
            })
        }
    }
}

/// An I/O error for a failed handshake, for logs and events.
pub(crate) fn describe_handshake_error(error: &io::Error) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None => error.to_string(),
    }
}
