//! Certificates for TLS tests: a CA made on the spot and a leaf it signs, and the rustls
//! configurations that serve and trust them (Linux, where the tests build rustls's aws-lc-rs).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and a leaf certificate it signed, with the leaf's key.
#[derive(Debug)]
pub struct Pki {
    /// The CA's certificate (DER).
    pub ca: CertificateDer<'static>,
    /// The CA's certificate (PEM), for peers that read files.
    pub ca_pem: String,
    /// The leaf, the server's chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key (PKCS#8 DER).
    pub key_der: Vec<u8>,
}

impl Pki {
    /// A CA and a leaf for `names` (DNS names or IP addresses).
    pub fn new(names: &[&str]) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "coring test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        Pki {
            ca: ca.der().clone(),
            ca_pem: ca.pem(),
            chain: vec![leaf.der().clone()],
            key_der: leaf_key.serialize_der(),
        }
    }

    /// A server configuration on the leaf, offering `alpn` (TLS 1.3 and 1.2).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), key)
        .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A client configuration trusting this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut store = rustls::RootCertStore::empty();
        store.add(self.ca.clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
        )
    }
}

/// A self-signed certificate and its key, written as PEM files for peers and loaders that
/// read files (openssl, curl, `tls::server_config_from_pem`).
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate (DER), for a root store.
    pub cert: CertificateDer<'static>,
    /// `DIR/cert.pem`.
    pub cert_path: std::path::PathBuf,
    /// `DIR/key.pem`.
    pub key_path: std::path::PathBuf,
}

impl SelfSigned {
    /// A certificate for `names`, written into `dir` (made if missing).
    pub fn write(dir: &std::path::Path, names: &[&str]) -> SelfSigned {
        std::fs::create_dir_all(dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        SelfSigned {
            cert: cert.der().clone(),
            cert_path,
            key_path,
        }
    }
}
