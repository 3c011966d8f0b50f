//! TLS to PostgreSQL: `sslmode` and `sslrootcert` of `--database`, as libpq reads them,
//! through rustls.
//!
//! Owns the [`Target`] every connection of the store is opened to (the pool's, the
//! writer's, the LISTEN and lock connections': one configuration, so one TLS policy).
//! tokio-postgres knows only `disable`, `prefer` and `require`, and verifies nothing
//! itself; the two parameters are taken out of the URL here and become a rustls
//! configuration that verifies what the mode asks for:
//!
//! | sslmode       | TLS                          | verified                               |
//! |---------------|------------------------------|----------------------------------------|
//! | `disable`     | never                        | —                                      |
//! | `prefer` (default) | if the server offers it | nothing                                |
//! | `require`     | always                       | nothing; the chain if `sslrootcert` is given (libpq's rule) |
//! | `verify-ca`   | always                       | the chain, to `sslrootcert`            |
//! | `verify-full` | always                       | the chain and the host name            |
//!
//! Without `sslrootcert` (or with `sslrootcert=system`), the verifying modes trust the
//! system's roots, which is what managed services with public certificates need.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Connection, Socket};

use crate::store::StoreError;
use crate::tls::{provider, read_roots, system_roots};

/// `sslmode`, with libpq's meanings (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` (plain first, TLS if refused) has no use left: every server that
            // accepts plain connections is reached by `prefer` or `disable`.
            other => {
                return Err(StoreError::BadUrl(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }
}

/// Where the store connects, with the TLS its `sslmode` asks for.
#[derive(Clone)]
pub(crate) struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakePgTls,
}

/// A connection of the store, TLS or not as negotiated.
pub(crate) type PgConnection = Connection<Socket, PgTlsStream>;

impl Target {
    /// Splits `sslmode` and `sslrootcert` from `url` (a `postgres://` URL) and parses
    /// the rest with tokio-postgres.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`] naming the problem, never echoing the URL (it may carry
    /// a password).
    pub(super) fn parse(url: &str) -> Result<Self, StoreError> {
        let (rest, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut mode, mut root_cert) = (SslMode::Prefer, None);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = || percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
            match key {
                "sslmode" => mode = SslMode::parse(&decoded())?,
                "sslrootcert" => root_cert = Some(decoded()),
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() { rest.to_owned() } else { format!("{rest}?{}", kept.join("&")) };
        let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            // The URL may carry a password: name the problem, never echo the URL.
            StoreError::BadUrl(super::describe(&e))
        })?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        let tls = MakePgTls::new(mode, root_cert.as_deref())?;
        Ok(Target { config, tls })
    }

    /// Opens one connection; the caller drives it.
    pub(super) async fn connect_raw(&self) -> Result<(Client, PgConnection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// tokio-postgres's TLS connector over one rustls configuration; `None` for `disable`.
#[derive(Clone)]
pub(crate) struct MakePgTls(Option<Arc<ClientConfig>>);

impl MakePgTls {
    fn new(mode: SslMode, root_cert: Option<&str>) -> Result<Self, StoreError> {
        let provider = provider();
        let roots = || -> Result<Arc<RootCertStore>, StoreError> {
            let roots = match root_cert {
                None | Some("system") => system_roots(),
                Some(path) => {
                    read_roots("sslrootcert", Path::new(path)).map_err(|e| StoreError::BadUrl(e.to_string()))?
                }
            };
            Ok(Arc::new(roots))
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
            (SslMode::Disable, _) => return Ok(MakePgTls(None)),
            (SslMode::Prefer, _) | (SslMode::Require, None) => Arc::new(Unverified(Arc::clone(&provider))),
            (SslMode::Require | SslMode::VerifyCa, Some(_)) | (SslMode::VerifyCa, None) => {
                Arc::new(ChainOnly(web_pki(roots()?, &provider)?))
            }
            (SslMode::VerifyFull, _) => web_pki(roots()?, &provider)?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::BadUrl(format!("TLS cannot be set up: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakePgTls(Some(Arc::new(config))))
    }
}

fn web_pki(roots: Arc<RootCertStore>, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider))
        .build()
        .map_err(|e| StoreError::BadUrl(format!("sslrootcert cannot be used: {e}")))
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
/// webpki checks the chain before the name, so a name mismatch means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` (without `sslrootcert`): encrypted, whoever answers. The
/// handshake's signatures are still checked, so the session is with the holder of the
/// certificate's key, whatever the certificate says.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl MakeTlsConnect<Socket> for MakePgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<PgTlsConnect, std::io::Error> {
        // A host that is no name (a Unix socket's directory) fails only if TLS is
        // actually attempted to it.
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string());
        Ok(PgTlsConnect { config: self.0.clone(), name })
    }
}

/// One connection's handshake, to the host it was made for.
pub(crate) struct PgTlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: Result<ServerName<'static>, String>,
}

impl TlsConnect<Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<PgTlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| std::io::Error::other("sslmode=disable: no TLS"))?;
            let name =
                self.name.map_err(|e| std::io::Error::other(format!("the host is not a TLS server name: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(explain)?;
            Ok(PgTlsStream(Box::new(stream)))
        })
    }
}

/// Adds what to do to the certificate failures whose rustls names alone do not say it
/// (`UnknownIssuer` is the one a wrong or missing `sslrootcert` gives). The host-name
/// failure already names both the host and the certificate's names.
fn explain(error: std::io::Error) -> std::io::Error {
    let hint = match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "the server's certificate is not signed by a CA in sslrootcert (or, without it, the system's roots)"
        }
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "the server's certificate has expired",
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        )) => "the server's certificate is not valid yet (is this machine's clock right?)",
        _ => return error,
    };
    std::io::Error::new(error.kind(), format!("{error}: {hint}"))
}

/// A TLS connection to PostgreSQL.
pub(crate) struct PgTlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for PgTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM-SHA-256-PLUS is not offered; SCRAM-SHA-256 and the other methods work
        // as over any connection.
        ChannelBinding::none()
    }
}

impl AsyncRead for PgTlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_leave_the_url_and_other_parameters_stay() {
        let target = Target::parse("postgres://u:p@h:5/db?sslmode=disable&application_name=a%20b").unwrap();
        assert_eq!(target.config.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
        assert_eq!(target.config.get_application_name(), Some("a b"));
        assert!(target.tls.0.is_none());
        let target = Target::parse("postgres://h/db?sslmode=verify-full").unwrap();
        assert_eq!(target.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert!(target.tls.0.is_some());
        let target = Target::parse("postgres://h/db").unwrap();
        assert_eq!(target.config.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn a_bad_sslmode_or_root_file_is_named_without_the_url() {
        let Err(StoreError::BadUrl(why)) = Target::parse("postgres://u:secret@h/db?sslmode=maybe") else {
            panic!("accepted")
        };
        assert!(why.contains("sslmode=maybe") && !why.contains("secret"), "{why}");
        let Err(StoreError::BadUrl(why)) =
            Target::parse("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/root.crt")
        else {
            panic!("accepted")
        };
        assert!(why.contains("sslrootcert /nonexistent/root.crt"), "{why}");
    }
}
