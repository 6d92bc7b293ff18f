//! TLS and the shared secret.
//!
//! Every `tcp://` connection is TLS 1.3 (rustls with the *ring* provider). The server makes a
//! fresh self-signed certificate when it starts; the client does not judge the certificate
//! (there is no authority to judge it by) but still checks that the server holds its key.
//! Both sides then prove they hold the shared secret without sending it: each sends an
//! HMAC-SHA256, keyed with the secret, of a value exported from this TLS session
//! (RFC 8446, section 7.5). A man in the middle runs two sessions with two different exported
//! values, so a proof from one is worthless in the other; a client that meets a server
//! without the secret stops before any socket is made.
//!
//! The client proves itself first, so a stranger who connects to the server learns nothing.
//! A secret is only as strong as its entropy: the proofs let someone who sees them (a fake
//! server, say) guess offline, so the secret file must hold at least [`MIN_SECRET`] bytes
//! and should be random (`head -c 32 /dev/urandom | base64 > FILE`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Environment variable naming the client's secret file.
pub const RUMPHIJACK_SECRET_FILE: &str = "RUMPHIJACK_SECRET_FILE";

/// Fewest bytes a secret may have.
pub const MIN_SECRET: usize = 16;

/// Sent by the client first, after TLS is up.
const MAGIC: &[u8; 8] = b"RHRELAY1";

const EXPORTER_LABEL: &[u8] = b"EXPORTER-rumphijack-relay";
const CLIENT_ROLE: &[u8] = b"client";
const SERVER_ROLE: &[u8] = b"server";

/// The name the server's certificate carries and the client asks for (it is not a host).
const SERVER_NAME: &str = "rumphijack-relay";

const PROOF: usize = 32;
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// Why authentication or the secret failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The secret file could not be read.
    #[error("reading secret file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The secret file is readable by others.
    #[error(
        "secret file {path} is accessible to group or others (mode {mode:o}); \
         chmod 600 it"
    )]
    Exposed { path: PathBuf, mode: u32 },
    /// The secret is too short.
    #[error("secret file {path} holds {len} bytes; at least {MIN_SECRET} are needed")]
    TooShort { path: PathBuf, len: usize },
    /// No secret was given for a tcp:// server.
    #[error("a tcp:// server needs a shared secret: set {RUMPHIJACK_SECRET_FILE} to its file")]
    Missing,
    /// The server did not accept our proof.
    #[error("authentication failed: the server refused our secret")]
    Refused,
    /// The client's proof was wrong (the server's view).
    #[error("authentication failed: the client's proof does not match the secret")]
    BadProof,
    /// The server could not prove it holds the secret.
    #[error("authentication failed: the server does not hold the secret")]
    ServerProof,
    /// The peer is not a relay peer.
    #[error("authentication failed: the peer does not speak the relay protocol")]
    Protocol,
    /// TLS or the connection failed.
    #[error("relay handshake")]
    Io(#[from] std::io::Error),
    /// TLS could not be set up.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// A shared secret.
#[derive(Clone)]
pub struct Secret(Arc<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Reads a secret file: the file's bytes without surrounding whitespace. The file must
    /// not be accessible to group or others.
    pub fn from_file(path: &Path) -> Result<Secret, AuthError> {
        let read_err = |source| AuthError::Read {
            path: path.into(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthError::Exposed {
                path: path.into(),
                mode,
            });
        }
        let raw = std::fs::read(path).map_err(read_err)?;
        let trimmed = raw.trim_ascii();
        if trimmed.len() < MIN_SECRET {
            return Err(AuthError::TooShort {
                path: path.into(),
                len: trimmed.len(),
            });
        }
        Ok(Secret(Arc::new(trimmed.to_vec())))
    }

    /// The secret named by `RUMPHIJACK_SECRET_FILE`.
    pub fn from_env() -> Result<Secret, AuthError> {
        match std::env::var_os(RUMPHIJACK_SECRET_FILE) {
            Some(path) if !path.is_empty() => Secret::from_file(Path::new(&path)),
            _ => Err(AuthError::Missing),
        }
    }

    /// A secret from bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> Secret {
        Secret(Arc::new(bytes.to_vec()))
    }

    fn proof(&self, role: &[u8], exported: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(role);
        mac.update(exported);
        mac
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration, with a certificate made now.
pub fn server_config() -> Result<Arc<rustls::ServerConfig>, AuthError> {
    let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| AuthError::Tls(format!("making a certificate: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AuthError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| AuthError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The client's TLS configuration.
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, AuthError> {
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AuthError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(KeyHolder(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server name the client presents.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// Accepts any certificate, but checks the handshake signatures: the peer must hold the
/// certificate's key. Who the peer is, the secret decides.
#[derive(Debug)]
struct KeyHolder(Arc<CryptoProvider>);

impl ServerCertVerifier for KeyHolder {
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
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

/// The value both sides derive from their TLS session.
pub fn exported(conn: &rustls::ConnectionCommon<impl Sized>) -> Result<[u8; 32], AuthError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, None)
        .map_err(|e| AuthError::Tls(format!("exporting keying material: {e}")))?;
    Ok(out)
}

/// The client's half: proves the secret, checks the server's proof, returns the server's
/// description of its stack.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    exported: &[u8],
) -> Result<String, AuthError> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&secret.proof(CLIENT_ROLE, exported).finalize().into_bytes());
    stream.write_all(&hello).await?;
    stream.flush().await?;

    let mut status = [0u8; 1];
    stream.read_exact(&mut status).await?;
    match status[0] {
        ACCEPTED => {}
        REFUSED => return Err(AuthError::Refused),
        _ => return Err(AuthError::Protocol),
    }
    let mut proof = [0u8; PROOF];
    stream.read_exact(&mut proof).await?;
    secret
        .proof(SERVER_ROLE, exported)
        .verify_slice(&proof)
        .map_err(|_| AuthError::ServerProof)?;

    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut text = vec![0u8; usize::from(u16::from_le_bytes(len))];
    stream.read_exact(&mut text).await?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The server's half: checks the client's proof (answering a refusal on failure), then
/// proves the secret and describes the stack.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    exported: &[u8],
    stack: &str,
) -> Result<(), AuthError> {
    let mut hello = [0u8; MAGIC.len() + PROOF];
    stream.read_exact(&mut hello).await?;
    if &hello[..MAGIC.len()] != MAGIC {
        return Err(AuthError::Protocol);
    }
    if secret
        .proof(CLIENT_ROLE, exported)
        .verify_slice(&hello[MAGIC.len()..])
        .is_err()
    {
        stream.write_all(&[REFUSED]).await?;
        stream.flush().await?;
        return Err(AuthError::BadProof);
    }

    let mut reply = vec![ACCEPTED];
    reply.extend_from_slice(&secret.proof(SERVER_ROLE, exported).finalize().into_bytes());
    let text = &stack.as_bytes()[..stack.len().min(u16::MAX as usize)];
    reply.extend_from_slice(&(text.len() as u16).to_le_bytes());
    reply.extend_from_slice(text);
    stream.write_all(&reply).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secret_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("relay-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");

        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Secret::from_file(&file),
            Err(AuthError::Exposed { .. })
        ));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            &**Secret::from_file(&file).unwrap().0,
            b"0123456789abcdef0123"
        );

        std::fs::write(&file, "short\n").unwrap();
        assert!(matches!(
            Secret::from_file(&file),
            Err(AuthError::TooShort { len: 5, .. })
        ));
        assert!(matches!(
            Secret::from_file(&dir.join("missing")),
            Err(AuthError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn handshake_needs_the_same_secret_and_session() {
        let right = Secret::from_bytes(b"0123456789abcdef");
        let wrong = Secret::from_bytes(b"fedcba9876543210");
        for (client_secret, client_export, ok) in [
            (&right, [7u8; 32], true),
            (&wrong, [7u8; 32], false),
            // A proof made for another session is refused.
            (&right, [8u8; 32], false),
        ] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let server = {
                let right = right.clone();
                tokio::spawn(
                    async move { server_handshake(&mut b, &right, &[7u8; 32], "st").await },
                )
            };
            let client = client_handshake(&mut a, client_secret, &client_export).await;
            let served = server.await.unwrap();
            assert_eq!(client.is_ok(), ok, "{client:?}");
            assert_eq!(served.is_ok(), ok, "{served:?}");
            if !ok {
                assert!(matches!(served, Err(AuthError::BadProof)), "{served:?}");
            }
            if ok {
                assert_eq!(client.unwrap(), "st");
            } else {
                assert!(matches!(client, Err(AuthError::Refused)));
            }
        }
    }
}
