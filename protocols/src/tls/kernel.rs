//! Kernel TLS hand-over (Linux): rustls' traffic secrets as the kernel's record keys, and
//! whether this kernel can take them.
//!
//! A connection whose configuration sets `enable_secret_extraction` can give its secrets up
//! after the handshake (`dangerous_extract_secrets`); [`direction_keys`] turns each
//! direction into [`DirectionKeys`] for `coring::net::ktls::enable`. [`kernel_tls`] is the
//! process's probe: without the kernel's `tls` module every connection stays on rustls in user
//! space, and the reason is in the capability report.

use coring::net::ktls::{self, Cipher, DirectionKeys, KtlsSupport, Version};
use rustls::ConnectionTrafficSecrets;

/// What this kernel offers for TLS offload (probed once per process).
pub fn kernel_tls() -> &'static KtlsSupport {
    ktls::support()
}

/// One direction of extracted secrets (`seq` is the next record's sequence number) as the
/// kernel's keys; `None` for an AEAD the kernel does not seal.
pub fn direction_keys(
    version: rustls::ProtocolVersion,
    seq: u64,
    secrets: &ConnectionTrafficSecrets,
) -> Option<DirectionKeys> {
    let version = match version {
        rustls::ProtocolVersion::TLSv1_2 => Version::Tls12,
        rustls::ProtocolVersion::TLSv1_3 => Version::Tls13,
        _ => return None,
    };
    let (cipher, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::AesGcm128, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::AesGcm256, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Cipher::Chacha20Poly1305, key, iv)
        }
        _ => return None,
    };
    let iv: [u8; 12] = iv.as_ref().try_into().ok()?;
    Some(DirectionKeys {
        version,
        cipher,
        key: key.as_ref().to_vec(),
        iv,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    use super::*;

    /// A full handshake between a rustls client and server in memory, restricted to `suite`,
    /// then both sides' extracted secrets.
    fn extract(
        suite: rustls::SupportedCipherSuite,
    ) -> (
        rustls::ExtractedSecrets,
        rustls::ExtractedSecrets,
        rustls::ProtocolVersion,
    ) {
        let cert = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::aws_lc_rs::default_provider()
        });
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
            )
            .unwrap();
        server.enable_secret_extraction = true;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;
        let mut c = rustls::ClientConnection::new(
            Arc::new(client),
            ServerName::try_from("a.test").unwrap(),
        )
        .unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        let mut wire = Vec::new();
        while c.is_handshaking() || s.is_handshaking() {
            wire.clear();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets().unwrap();
            wire.clear();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            c.read_tls(&mut &wire[..]).unwrap();
            c.process_new_packets().unwrap();
        }
        let version = c.protocol_version().unwrap();
        (
            c.dangerous_extract_secrets().unwrap(),
            s.dangerous_extract_secrets().unwrap(),
            version,
        )
    }

    #[test]
    fn each_cipher_hands_over_keys_one_side_sends_and_the_other_opens() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        for (suite, cipher) in [
            (cs::TLS13_AES_128_GCM_SHA256, Cipher::AesGcm128),
            (cs::TLS13_AES_256_GCM_SHA384, Cipher::AesGcm256),
            (cs::TLS13_CHACHA20_POLY1305_SHA256, Cipher::Chacha20Poly1305),
            (
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                Cipher::AesGcm128,
            ),
            (
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                Cipher::AesGcm256,
            ),
            (
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                Cipher::Chacha20Poly1305,
            ),
        ] {
            let (client, server, version) = extract(suite);
            let keys = |(seq, secrets): &(u64, ConnectionTrafficSecrets)| {
                direction_keys(version, *seq, secrets).unwrap()
            };
            let (c_tx, s_rx) = (keys(&client.tx), keys(&server.rx));
            let (s_tx, c_rx) = (keys(&server.tx), keys(&client.rx));
            for (a, b) in [(&c_tx, &s_rx), (&s_tx, &c_rx)] {
                assert_eq!(a.cipher, cipher, "{suite:?}");
                assert_eq!((&a.key, a.iv, a.seq), (&b.key, b.iv, b.seq), "{suite:?}");
                assert_eq!(a.key.len(), cipher.key_len());
                assert!(a.crypto_info().is_ok());
            }
            // The two directions have keys of their own.
            assert_ne!(c_tx.key, s_tx.key);
            let expected = if suite.tls13().is_some() {
                Version::Tls13
            } else {
                Version::Tls12
            };
            assert_eq!(c_tx.version, expected);
        }
    }
}
