//! TLS for the management API: certificate loading, the self-signed first-start certificate,
//! and reloading without restart.
//!
//! Invariants:
//! - rustls with the `ring` provider only, TLS 1.2 and 1.3, ALPN `http/1.1`. There is no
//!   plaintext listener anywhere.
//! - The served certificate is read through [`CertStore`], which the TLS acceptor asks on
//!   every handshake; a reload swaps it atomically, so new connections get the new
//!   certificate and open ones keep theirs.
//! - A reload that fails (unreadable file, key that does not match the certificate) keeps
//!   the old certificate and reports the error: a half-written file never takes the API down.
//! - The generated key and certificate are written 0600 through a temporary file and a
//!   rename, so a crash leaves either no file or a whole one.
//! - The fingerprint is `sha256:` and the SHA-256 of the leaf certificate's DER in
//!   colon-separated uppercase hex, the form browsers and `openssl x509 -fingerprint` show.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// Mode of the generated key and certificate.
pub const FILE_MODE: u32 = 0o600;
/// Validity of a generated certificate, in years.
pub const SELF_SIGNED_YEARS: i32 = 10;

/// Why a certificate could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The key is of an unsupported type, or does not belong to the certificate.
    #[error("key: {0}")]
    Key(rustls::Error),
    /// The leaf certificate cannot be parsed as X.509.
    #[error("certificate is not valid X.509: {0}")]
    X509(String),
    /// rcgen failed to generate the self-signed certificate.
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the server configuration.
    #[error("tls configuration: {0}")]
    Config(rustls::Error),
}

/// What the API reports about the served certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// `sha256:AB:CD:...` of the leaf certificate.
    pub sha256: String,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

/// A certificate chain and key ready to serve.
#[derive(Debug)]
pub struct Loaded {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// Its fingerprint and expiry.
    pub info: CertInfo,
}

/// The SHA-256 fingerprint of a DER certificate, `sha256:AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    crate::client::format_fingerprint(&Sha256::digest(der).into())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_owned(), source }
}

/// Loads a PEM chain and key, checks they match, and reads the leaf's fingerprint and expiry.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Loaded, TlsError> {
    let cert_pem = fs::read(cert_path).map_err(io_err(cert_path))?;
    let key_pem = fs::read(key_path).map_err(io_err(key_path))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { path: cert_path.to_owned(), what: e.to_string() })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::Pem { path: cert_path.to_owned(), what: "no certificate".into() });
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Pem { path: key_path.to_owned(), what: e.to_string() })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::X509(e.to_string()))?;
    let not_after = u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0);
    let info = CertInfo { sha256: fingerprint(leaf), not_after };
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(TlsError::Key)?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(TlsError::Key)?;
    Ok(Loaded { key: Arc::new(certified), info })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f =
        OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// The paths of the generated certificate and key in `state_dir`.
pub fn generated_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (state_dir.join("tls-cert.pem"), state_dir.join("tls-key.pem"))
}

/// Makes sure `state_dir` holds a self-signed certificate and key, generating them (ECDSA
/// P-256) if either is missing. Returns their paths and whether they were generated now.
pub fn ensure_self_signed(
    state_dir: &Path,
    listen: SocketAddr,
    now: u64,
) -> Result<(PathBuf, PathBuf, bool), TlsError> {
    let (cert_path, key_path) = generated_paths(state_dir);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path, false));
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "edgerelay relay-control");
    let date = crate::tc3::utc_date(now);
    let ymd: Vec<i32> = date.split('-').filter_map(|p| p.parse().ok()).collect();
    if let [y, m, d] = ymd[..] {
        let (m, d) = (m as u8, d.min(28) as u8);
        params.not_before = rcgen::date_time_ymd(y - 1, m, d);
        params.not_after = rcgen::date_time_ymd(y + SELF_SIGNED_YEARS, m, d);
    }
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    write_private(&key_path, key_pair.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    Ok((cert_path, key_path, true))
}

/// The served certificate, reloadable. rustls asks it on every handshake.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<Loaded>>,
    mtimes: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl CertStore {
    /// Loads the certificate at `cert_path` with the key at `key_path`.
    pub fn open(cert_path: PathBuf, key_path: PathBuf) -> Result<Self, TlsError> {
        let mtimes = (mtime(&cert_path), mtime(&key_path));
        let loaded = load(&cert_path, &key_path)?;
        Ok(CertStore { cert_path, key_path, current: RwLock::new(Arc::new(loaded)), mtimes: Mutex::new(mtimes) })
    }

    /// The served certificate's fingerprint and expiry.
    pub fn info(&self) -> CertInfo {
        self.current.read().unwrap_or_else(|p| p.into_inner()).info.clone()
    }

    /// Reloads from the files. On error the old certificate stays.
    pub fn reload(&self) -> Result<CertInfo, TlsError> {
        let mtimes = (mtime(&self.cert_path), mtime(&self.key_path));
        let loaded = load(&self.cert_path, &self.key_path)?;
        let info = loaded.info.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        *self.mtimes.lock().unwrap_or_else(|p| p.into_inner()) = mtimes;
        Ok(info)
    }

    /// Reloads if either file's modification time changed since the last load; `Ok(None)`
    /// when nothing changed.
    pub fn reload_if_changed(&self) -> Result<Option<CertInfo>, TlsError> {
        let now = (mtime(&self.cert_path), mtime(&self.key_path));
        if *self.mtimes.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return Ok(None);
        }
        self.reload().map(Some)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).key.clone())
    }
}

/// The rustls server configuration serving `certs`.
pub fn server_config(certs: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).unwrap();
            let p = std::env::temp_dir().join(format!("relay-control-tls-{tag}-{}", hex::encode(b)));
            fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn generated_once_private_and_loadable() {
        use std::os::unix::fs::PermissionsExt;
        let d = Dir::new("gen");
        let listen = "127.0.0.1:8443".parse().unwrap();
        let (cert, key, fresh) = ensure_self_signed(&d.0, listen, 1_700_000_000).unwrap();
        assert!(fresh);
        for p in [&cert, &key] {
            assert_eq!(fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let again = ensure_self_signed(&d.0, listen, 1_700_000_000).unwrap();
        assert!(!again.2);
        let store = CertStore::open(cert.clone(), key.clone()).unwrap();
        let info = store.info();
        assert!(info.sha256.starts_with("sha256:") && info.sha256.len() == 7 + 32 * 3 - 1, "{}", info.sha256);
        // 2023-11-14 + 10 years.
        assert!((2_015_000_000..2_016_000_000).contains(&info.not_after), "{}", info.not_after);
        let der = CertificateDer::pem_file_iter(&cert).unwrap().next().unwrap().unwrap();
        assert_eq!(fingerprint(&der), info.sha256);
        assert_eq!(store.reload_if_changed().unwrap(), None);
    }

    #[test]
    fn mismatched_or_broken_files_keep_the_old_certificate() {
        let d1 = Dir::new("a");
        let d2 = Dir::new("b");
        let listen = "127.0.0.1:1".parse().unwrap();
        let (c1, k1, _) = ensure_self_signed(&d1.0, listen, 1_700_000_000).unwrap();
        let (c2, k2, _) = ensure_self_signed(&d2.0, listen, 1_700_000_000).unwrap();
        assert!(matches!(load(&c1, &k2), Err(TlsError::Key(_))));
        let store = CertStore::open(c1.clone(), k1.clone()).unwrap();
        let before = store.info();
        fs::write(&c1, b"garbage").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.info(), before);
        fs::copy(&c2, &c1).unwrap();
        fs::copy(&k2, &k1).unwrap();
        let after = store.reload().unwrap();
        assert_ne!(after.sha256, before.sha256);
        assert_eq!(store.info(), after);
    }
}
