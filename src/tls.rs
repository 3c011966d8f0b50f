//! TLS with rustls and the ring provider: the server's certificate (`serve --tls-cert
//! --tls-key`, reloaded on SIGHUP), and the trust roots of the clients (`tail`, `emit`,
//! `webhook`: the system's roots, or `--ca-file`).
//!
//! Owns reading PEM files and the certificate being served. It does not own sockets:
//! `http::serve` runs the handshake on each accepted connection, and the PostgreSQL
//! connector (`store::postgres::tls`) builds its own client configuration from
//! [`read_roots`], since `sslmode` decides what it verifies.
//!
//! Every configuration names its provider rather than relying on a process-wide
//! default, so no other crate's choice of provider can change what is used here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A certificate, key or CA file that cannot be used, naming the file and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: {reason}")]
    File { flag: &'static str, path: PathBuf, reason: String },
    #[error("--tls-cert {cert} and --tls-key {key} do not go together: {reason}")]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("TLS cannot be set up: {0}")]
    Setup(#[from] rustls::Error),
}

/// The provider of every configuration here: ring, as reqwest's own. rustls marks it
/// deprecated for lacking post-quantum key exchange, which only aws-lc-rs offers; that
/// provider needs cmake and clang to build, which the build machines lack.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file, in order (a chain: leaf first).
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate.
pub(crate) fn read_certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File { flag, path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// The certificates of a CA file (`--ca-file`, `sslrootcert`) as trust roots.
///
/// # Errors
/// As [`read_certificates`], or a certificate is not a usable trust anchor.
pub(crate) fn read_roots(flag: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(flag, path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            flag,
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The system's trust roots. Unreadable ones are skipped with a warning: one bad file
/// in the system store should not stop the others from being used.
pub(crate) fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "a system CA certificate could not be read; skipping it");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(added, ignored, "system CA certificates rustls cannot use were skipped");
    }
    roots
}

/// A client configuration that trusts `ca_file`'s certificates, or the system's roots
/// without one, and speaks HTTP/1.1 (the only HTTP the clients use).
///
/// # Errors
/// `ca_file` cannot be used.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let roots = match ca_file {
        Some(path) => read_roots("--ca-file", path)?,
        None => system_roots(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Where the served certificate comes from (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files into a key that signs for the chain's leaf.
    ///
    /// # Errors
    /// A file cannot be read or parsed, or the key is not the leaf's.
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = read_certificates("--tls-cert", &self.cert)?;
        let bad_key = |reason: String| TlsError::File { flag: "--tls-key", path: self.key.clone(), reason };
        let pem = std::fs::read(&self.key).map_err(|e| bad_key(format!("cannot read it: {e}")))?;
        // Takes the first private key of any of the three kinds.
        let key = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| bad_key(format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")))?;
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(certified))
    }
}

/// The certificate being served, swapped whole on reload. Handshakes in progress keep
/// the key they started with; the next ones get the new one.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole certificate: the swap is one assignment.
        Some(Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

/// The server's TLS: the acceptor every connection goes through, and the files its
/// certificate is reloaded from.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

impl ServerTls {
    /// Loads the certificate and key. HTTP/1.1 only is offered in ALPN, as over plain
    /// connections (see `http::serve` on why not HTTP/2).
    ///
    /// # Errors
    /// The files cannot be used.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let current = Arc::new(Current(RwLock::new(files.load()?)));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { files, current, acceptor: TlsAcceptor::from(Arc::new(config)) })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again and serves the new certificate from the next handshake.
    /// On failure the old one stays in service.
    ///
    /// # Errors
    /// The files cannot be used; nothing changed.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.files.load()?;
        // Held for one assignment, never across an await.
        *self.current.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// Reloads on every SIGHUP until `stop`, logging each outcome.
    pub(crate) async fn reload_on_hangup(self, stop: tokio_util::sync::CancellationToken) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signals) => signals,
            Err(e) => {
                // Serving goes on; only reloading is lost, and the log says so.
                tracing::error!(error = %e, "cannot listen for SIGHUP; the TLS certificate will not be reloaded");
                stop.cancelled().await;
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            match self.reload() {
                Ok(()) => tracing::info!(cert = %self.files.cert.display(), "SIGHUP: TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; still serving the previous one")
                }
            }
        }
    }
}
