//! The client's TLS configuration: which server certificates to trust.
//!
//! By default a `wss` server must present a certificate chaining to one of Mozilla's roots
//! (`webpki-roots`, compiled in, so no system store is needed). `--ca FILE` adds PEM
//! certificates to those roots: a private CA, or a self-signed server certificate itself.
//! `--insecure` accepts any certificate (the handshake signature is still checked, so the
//! connection is encrypted, but to whoever answered): for testing only.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::ClientError;

/// Which server certificates to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Verify against Mozilla's roots plus these PEM files (`--ca`).
    Verify {
        /// Extra trust anchors.
        extra_roots: Vec<PathBuf>,
    },
    /// Accept any certificate (`--insecure`).
    Insecure,
}

/// Builds the rustls configuration for `trust` (TLS 1.2 and 1.3, ALPN `http/1.1`: a WebSocket
/// upgrade is an HTTP/1.1 request).
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::TlsSetup(e.to_string()))?;
    let mut config = match trust {
        Trust::Verify { extra_roots } => {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for path in extra_roots {
                for cert in read_certificates(path)? {
                    roots.add(cert).map_err(|e| ClientError::CaFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(&provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; none is an error (a wrong file was given).
fn read_certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let fail = |reason: String| ClientError::CaFile {
        path: path.clone(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// `--insecure`: any certificate, any name. Signatures are still verified, with the
/// provider's algorithms, so the handshake itself is sound.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_trust_modes_build() {
        assert!(
            client_config(&Trust::Verify {
                extra_roots: vec![]
            })
            .is_ok()
        );
        assert!(client_config(&Trust::Insecure).is_ok());
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_it() {
        let err = client_config(&Trust::Verify {
            extra_roots: vec!["/nonexistent/ca.pem".into()],
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
