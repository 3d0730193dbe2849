//! TLS for the `redis` backend (`rediss://`), through rustls with the ring provider: the
//! client configuration built from the backend's `ssl_*` arguments (redis-py's and
//! dogpile's names).

use std::sync::Arc;

use dogpile_core::backend::Arguments;
use dogpile_core::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS arguments, accepted by `redis` when the feature is on.
pub(crate) const ARGUMENTS: &[&str] = &[
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for a `rediss://` server. `insecure`: the URL said
/// `#insecure`.
pub(crate) fn client_config(args: &Arguments, insecure: bool) -> Result<Arc<ClientConfig>> {
    let verify = match args.get("ssl_cert_reqs").map(str::trim) {
        None | Some("required") => !insecure,
        Some("none") => false,
        Some(other) => {
            return Err(args.invalid(
                "ssl_cert_reqs",
                format!(
                    "`{other}` is not accepted: `required` (the default: the server's \
                     certificate must be valid for its host) or `none` (not checked: \
                     encrypted, but open to a man in the middle)"
                ),
            ))
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| args.invalid("url", format!("no TLS protocol version: {e}")))?;
    let builder = if verify {
        builder.with_root_certificates(roots(args)?)
    } else {
        if args.get("ssl_ca_certs").is_some() {
            return Err(args.invalid(
                "ssl_ca_certs",
                "has no use when the certificate is not checked (ssl_cert_reqs = none or \
                 #insecure)",
            ));
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    };
    let config = match (args.get("ssl_certfile"), args.get("ssl_keyfile")) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| unreadable(args, "ssl_certfile", cert, &e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| unreadable(args, "ssl_keyfile", key, &e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                args.invalid("ssl_keyfile", format!("not the certificate's key: {e}"))
            })?
        }
        (Some(_), None) => return Err(args.invalid("ssl_keyfile", "required with ssl_certfile")),
        (None, Some(_)) => return Err(args.invalid("ssl_certfile", "required with ssl_keyfile")),
    };
    Ok(Arc::new(config))
}

fn unreadable(
    args: &Arguments,
    argument: &str,
    path: &str,
    error: &dyn std::fmt::Display,
) -> Error {
    args.invalid(argument, format!("cannot read PEM file `{path}`: {error}"))
}

/// The CAs that `ssl_ca_certs` names (a PEM file), or the system's.
fn roots(args: &Arguments) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match args.get("ssl_ca_certs") {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| unreadable(args, "ssl_ca_certs", path, &e))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(args.invalid(
                    "ssl_ca_certs",
                    format!("`{path}` holds no usable CA certificate"),
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "cannot load a system CA certificate");
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// The server's name for certificate checks (a host name or an IP address).
pub(crate) fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// `ssl_cert_reqs = none`: any certificate is accepted (its signatures on the handshake
/// are still checked).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
