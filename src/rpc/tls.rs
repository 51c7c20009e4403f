//! libvirt's TLS transport (`qemu+tls://`): the server side of the
//! handshake that libvirt clients make with gnutls.
//!
//! As with libvirtd, the client must present a certificate signed by the
//! CA, valid now, and, when an allow-list is set, with a DN that matches
//! it. All of this is checked inside the handshake, so a refused client
//! has sent nothing the RPC layer reads. After the handshake the libvirt
//! protocol runs unchanged inside the stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use super::dn;
use super::listen::ListenError;

/// Where the server's certificate, key and the CA come from, and which
/// client DNs may connect (libvirtd's `tls_allowed_dn_list`; `None` lets
/// any CA-signed client in).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA's revocation list (libvirtd's crl_file), if any.
    pub crl: Option<PathBuf>,
    pub allowed_dns: Option<Vec<String>>,
}

impl TlsFiles {
    /// libvirtd's default paths.
    pub fn libvirt_defaults() -> TlsFiles {
        TlsFiles {
            ca: "/etc/pki/CA/cacert.pem".into(),
            cert: "/etc/pki/libvirt/servercert.pem".into(),
            key: "/etc/pki/libvirt/private/serverkey.pem".into(),
            crl: None,
            allowed_dns: None,
        }
    }
}

fn bad(file: &Path, reason: impl std::fmt::Display) -> ListenError {
    ListenError::Tls {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads the files and builds the acceptor; any problem names the file.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ListenError> {
    // ring has no post-quantum key exchange, which the gnutls 3.7 of
    // libvirt 9.0's clients does not offer either; aws-lc-rs would bring
    // a C build with cmake for nothing here.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::pem_file_iter(&files.ca).map_err(|e| bad(&files.ca, e))?;
    for cert in ca {
        let cert = cert.map_err(|e| bad(&files.ca, e))?;
        roots.add(cert).map_err(|e| bad(&files.ca, e))?;
    }
    if roots.is_empty() {
        return Err(bad(&files.ca, "no CA certificate in the file"));
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = &files.crl {
        let crls: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_file_iter(crl)
                .map_err(|e| bad(crl, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(crl, e))?;
        if crls.is_empty() {
            return Err(bad(crl, "no revocation list in the file"));
        }
        // gnutls, which libvirtd uses, refuses a certificate a list names
        // and takes one no list speaks of.
        builder = builder.with_crls(crls).allow_unknown_revocation_status();
    }
    // What can go wrong here is a list webpki cannot use (a version 1
    // one, say: it takes version 2 lists only).
    let webpki = builder
        .build()
        .map_err(|e| bad(files.crl.as_deref().unwrap_or(&files.ca), e))?;
    if files
        .allowed_dns
        .as_ref()
        .is_some_and(|list| list.is_empty())
    {
        tracing::warn!("tls_allowed_dn_list is empty: no TLS client can connect");
    }
    let verifier = Arc::new(AllowListVerifier {
        inner: webpki,
        allowed: files.allowed_dns.clone(),
    });

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, e))?;
    if chain.is_empty() {
        return Err(bad(&files.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, e))?;

    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(&files.key, e))?;
    // libvirt's client reads exactly one record after the handshake, the
    // confirmation byte; a TLS 1.3 session ticket arriving first makes that
    // read fail ("Unable to read TLS confirmation"). libvirt clients never
    // resume sessions, so there is nothing to lose.
    config.send_tls13_tickets = 0;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The CA check (signature, validity dates, key usage) from webpki, then
/// libvirtd's DN allow-list.
#[derive(Debug)]
struct AllowListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Option<Vec<String>>,
}

impl ClientCertVerifier for AllowListVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|err| tracing::info!(%err, "refusing a TLS client"))?;
        let Some(allowed) = &self.allowed else {
            return Ok(verified);
        };
        let subject = dn::subject_of(end_entity).unwrap_or_default();
        if dn::allowed(&subject, allowed) {
            Ok(verified)
        } else {
            tracing::info!(dn = %subject, "refusing a TLS client: DN not on tls_allowed_dn_list");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
