//! Certificates made at test time (rcgen): a CA, a server certificate for `localhost` and
//! 127.0.0.1, client certificates by common name, one from another CA, one expired; written
//! as PEM files, plus a rustls client for the tests' own TLS connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA that signs the certificates of one test.
pub struct Authority {
    cert: Certificate,
    key: KeyPair,
    /// Its certificate as PEM, on disk.
    pub ca_file: PathBuf,
}

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Authority {
    /// A new CA named `name`, written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).unwrap();
        Self { cert, key, ca_file }
    }

    fn issue(&self, dir: &Path, file: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_file, key_file) =
            (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Issued { cert_file, key_file }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, dir: &Path, file: &str) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, "localhost");
        self.issue(dir, file, params)
    }

    /// A client certificate with this common name (and a DNS SAN `<cn>.clients.test`).
    pub fn client(&self, dir: &Path, cn: &str) -> Issued {
        let mut params = CertificateParams::new(vec![format!("{cn}.clients.test")]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        self.issue(dir, &format!("client-{cn}"), params)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, dir: &Path, cn: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(dir, &format!("expired-{cn}"), params)
    }
}

/// A rustls client trusting `ca_file`, presenting `identity` when given.
pub fn client_config(ca_file: &Path, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    client_config_versions(ca_file, identity, rustls::DEFAULT_VERSIONS)
}

/// The same, speaking only TLS 1.2.
pub fn client_config_tls12(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    client_config_versions(ca_file, None, &[&rustls::version::TLS12])
}

fn client_config_versions(
    ca_file: &Path,
    identity: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let redis_audit_proxy_certs = redis_audit_proxy::tls::load_certs(ca_file).unwrap();
    for cert in redis_audit_proxy_certs {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(issued) => builder
            .with_client_auth_cert(
                redis_audit_proxy::tls::load_certs(&issued.cert_file).unwrap(),
                redis_audit_proxy::tls::load_key(&issued.key_file).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Connects with TLS to `addr` as `localhost`.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}
