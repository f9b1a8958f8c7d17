//! TLS client configuration for `https://` sellers.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;

use super::NetError;

/// A client config trusting the CA certificates in `ca_file` (PEM), or the system's roots
/// when there is none. Offers only HTTP/1.1 via ALPN.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, NetError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| NetError::Tls(format!("cannot read {}: {e}", path.display())))?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    NetError::Tls(format!("{}: not a PEM certificate: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    NetError::Tls(format!("{}: unusable certificate: {e}", path.display()))
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(NetError::Tls(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A broken system certificate should not stop us from trusting the rest.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
