//! TLS for the connections live trading makes and serves: `wss://` feeds and
//! `https://` webhooks as a client, and the replay server's `wss://` as a
//! server (`palisade feed replay --tls-cert … --tls-key …`).
//!
//! A server's certificate is checked against the Mozilla roots compiled in
//! (`webpki-roots`) and the host's own: `SSL_CERT_FILE` or `SSL_CERT_DIR`
//! when set, else the system's bundle (on Debian, `/etc/ssl/certs` from the
//! `ca-certificates` package). An organisation's private CA is trusted by
//! installing it on the host or naming it in `SSL_CERT_FILE`. The name
//! checked is the URL's host (a DNS name or an IP address). rustls on
//! *ring*, TLS 1.2 and 1.3; no client certificates.

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The client configuration every connection uses by default, built once:
/// the compiled-in roots and the host's.
pub fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "TLS: a certificate of the host's store cannot be read");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "TLS: the host's trusted certificates");
            client_config_with(roots)
        })
        .clone()
}

/// A client configuration trusting exactly `roots`.
pub fn client_config_with(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client configuration trusting only the certificates of the PEM file
/// at `path` (tests, and a private CA given explicitly).
pub fn client_config_trusting(path: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(client_config_with(roots))
}

/// Connects to `host:port` over TCP and TLS, checking the certificate
/// against `host` with `config`.
pub async fn connect(
    host: &str,
    port: u16,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let name = server_name(host)?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}:{port}: {e}"))
}

/// The name a certificate must carry for `host` (brackets of an IPv6
/// literal removed).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(crate::unbracketed(host).to_owned())
        .map_err(|e| format!("`{}` is not a valid TLS server name: {e}", crate::clipped(host)))
}

/// A server configuration from a PEM certificate chain and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1), each error naming the file.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{}: no PEM private key: {e}", key_path.display()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {}: not a certificate and its key: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) if e.kind() == io::ErrorKind::NotFound => {
            "no such file".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A certificate for `localhost` and 127.0.0.1 with its key, written as
    /// PEM files into `dir`: (certificate, key).
    pub(crate) fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let key = rcgen::generate_simple_self_signed(names).expect("a certificate");
        let (cert, private) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, key.cert.pem()).unwrap();
        std::fs::write(&private, key.signing_key.serialize_pem()).unwrap();
        (cert, private)
    }

    #[test]
    fn files_that_are_not_a_certificate_and_key_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        server_config(&cert, &key).expect("a certificate and its key");
        client_config_trusting(&cert).expect("a CA file");

        let missing = dir.path().join("missing.pem");
        let e = server_config(&missing, &key).unwrap_err();
        assert!(e.contains("missing.pem") && e.contains("no such file"), "{e}");
        let e = server_config(&cert, &cert).unwrap_err();
        assert!(e.contains("cert.pem") && e.contains("private key"), "{e}");
        let e = server_config(&key, &key).unwrap_err();
        assert!(e.contains("key.pem") && e.contains("no PEM certificate"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = self_signed(other.path());
        let e = server_config(&cert, &other_key).unwrap_err();
        assert!(e.contains("not a certificate and its key"), "{e}");
        let e = client_config_trusting(&key).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn server_names_are_dns_names_or_addresses() {
        assert!(server_name("feeds.example.com").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("bad name").unwrap_err().contains("bad name"));
    }
}
