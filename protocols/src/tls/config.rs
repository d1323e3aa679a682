//! Configurations a server or client usually wants, built from PEM files: several hosts on one
//! listener (chosen by SNI), ALPN, session resumption both ways, a root store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// rustls refused the key, the certificates or the settings.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

/// The crypto provider every configuration here uses (aws-lc-rs: faster than ring here at
/// both handshakes and record encryption; see docs/benchmarks.md).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// A certificate chain and its private key, from PEM files (the chain leaf first; the key in
/// PKCS#8, PKCS#1 or SEC1 form).
pub fn load_certified_key(
    cert_pem: impl AsRef<Path>,
    key_pem: impl AsRef<Path>,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let (cert_pem, key_pem) = (cert_pem.as_ref(), key_pem.as_ref());
    let pem_error = |path: &Path, why: String| ConfigError::Pem {
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(cert_pem)
        .map_err(|e| pem_error(cert_pem, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_pem, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(cert_pem, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_pem).map_err(|e| pem_error(key_pem, e.to_string()))?;
    certified_key(chain, key)
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let key = CertifiedKey::from_der(chain, key, &provider())?;
    Ok(Arc::new(key))
}

/// Chooses a server's certificate by the name the client asked for (SNI): an exact host name,
/// then a wildcard one level up (`*.example.com`), then the default. A client asking for a
/// name no certificate is for, with no default, is refused in the handshake.
#[derive(Debug, Default)]
pub struct CertResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// A resolver with no certificates yet.
    pub fn new() -> CertResolver {
        CertResolver::default()
    }

    /// Serves `key` to clients asking for `name` (a host name, or `*.` and a domain).
    pub fn add(mut self, name: &str, key: Arc<CertifiedKey>) -> CertResolver {
        self.by_name.insert(name.to_ascii_lowercase(), key);
        self
    }

    /// Serves `key` to clients that sent no name or one no other certificate is for.
    pub fn default_key(mut self, key: Arc<CertifiedKey>) -> CertResolver {
        self.default = Some(key);
        self
    }

    fn find(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = name {
            let name = name.to_ascii_lowercase();
            if let Some(key) = self.by_name.get(&name) {
                return Some(Arc::clone(key));
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = self.by_name.get(&format!("*.{parent}"))
            {
                return Some(Arc::clone(key));
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name())
    }
}

/// Session resumption entries a server keeps (for clients that do not take tickets).
const SESSION_CACHE: usize = 4096;

/// A server configuration a web server would start from: TLS 1.3 and 1.2, certificates from
/// `certs`, ALPN `http/1.1`, resumption by stateless tickets (rotated every six hours) and by a
/// session cache.
pub fn server_config(
    certs: impl ResolvesServerCert + 'static,
) -> Result<rustls::ServerConfig, ConfigError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(config)
}

/// [`server_config`] for one certificate chain and key in PEM files.
pub fn server_config_from_pem(
    cert_pem: impl AsRef<Path>,
    key_pem: impl AsRef<Path>,
) -> Result<rustls::ServerConfig, ConfigError> {
    let key = load_certified_key(cert_pem, key_pem)?;
    server_config(CertResolver::new().default_key(key))
}

/// A client configuration trusting `roots` (TLS 1.3 and 1.2, the server's name checked,
/// sessions resumed from an in-memory store).
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, ConfigError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A root store holding the CA certificates of a PEM file.
pub fn roots_from_pem(ca_pem: impl AsRef<Path>) -> Result<rustls::RootCertStore, ConfigError> {
    let path = ca_pem.as_ref();
    let pem_error = |why: String| ConfigError::Pem {
        path: path.to_owned(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| pem_error(e.to_string()))? {
        roots.add(cert.map_err(|e| pem_error(e.to_string()))?)?;
    }
    if roots.is_empty() {
        return Err(pem_error("no certificate in the file".into()));
    }
    Ok(roots)
}

/// The client configuration used when none is given: the web's public roots
/// (webpki-roots), shared by every connection of the process.
pub fn default_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        match client_config(roots) {
            Ok(config) => Arc::new(config),
            // Only a provider without TLS 1.2 or 1.3 refuses them, and ours has both.
            Err(e) => unreachable!("the provider refused TLS 1.2 and 1.3: {e}"),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(name: &str) -> Arc<CertifiedKey> {
        let key = rcgen_key(name);
        certified_key(key.0, key.1).unwrap()
    }

    fn rcgen_key(name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (
            vec![cert.cert.der().clone()],
            PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
        )
    }

    #[test]
    fn resolver_prefers_exact_then_wildcard_then_default() {
        let (a, wild, fallback) = (key_for("a.test"), key_for("*.b.test"), key_for("c.test"));
        let resolver = CertResolver::new()
            .add("A.test", Arc::clone(&a))
            .add("*.b.test", Arc::clone(&wild));
        assert!(Arc::ptr_eq(&resolver.find(Some("a.TEST")).unwrap(), &a));
        assert!(Arc::ptr_eq(
            &resolver.find(Some("x.b.test")).unwrap(),
            &wild
        ));
        assert!(resolver.find(Some("x.y.b.test")).is_none());
        assert!(resolver.find(None).is_none());
        let resolver = resolver.default_key(Arc::clone(&fallback));
        assert!(Arc::ptr_eq(
            &resolver.find(Some("other")).unwrap(),
            &fallback
        ));
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let (chain, _) = rcgen_key("a.test");
        let (_, other_key) = rcgen_key("b.test");
        assert!(certified_key(chain, other_key).is_err());
    }

    #[test]
    fn pem_files_load_and_bad_ones_say_which() {
        let dir = std::env::temp_dir().join(format!("coring-tls-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let (cert_path, key_path, junk) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("j"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
        std::fs::write(&junk, "not pem").unwrap();
        assert!(server_config_from_pem(&cert_path, &key_path).is_ok());
        let e = load_certified_key(&junk, &key_path).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        assert!(load_certified_key(&cert_path, &junk).is_err());
        assert!(load_certified_key(dir.join("missing"), &key_path).is_err());
        assert!(roots_from_pem(&cert_path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
