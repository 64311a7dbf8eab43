//! The instance secret (generated into `data_dir` on first run, or given as `secret_key`), the
//! purpose-bound keys derived from it, and [`Sealer`], which encrypts what must be read back
//! (signing keys, TOTP secrets) under one of them.

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use fluxgate_core::secret::{random_bytes, secret_key, ExposeSecret, SecretKey, SecretString};
use hkdf::Hkdf;
use sha2::Sha256;
use std::path::Path;

/// The instance secret; every node of one deployment must share it.
#[derive(Debug)]
pub struct InstanceSecret(SecretKey);

const FILE_NAME: &str = "secret.key";

impl InstanceSecret {
    /// From `secret_key` if set, else from `data_dir/secret.key`, created (mode 0600) if missing.
    pub fn load_or_create(
        configured: Option<&SecretString>,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        if let Some(hex) = configured {
            return Self::from_hex(hex.expose_secret()).context("secret_key");
        }
        let path = data_dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_hex(text.trim()).with_context(|| format!("{}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("creating {}", data_dir.display()))?;
                let bytes: [u8; 32] = random_bytes();
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_private(&path, &hex)
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated a new instance secret");
                Ok(Self(secret_key(bytes)))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Parses 64 hex characters.
    pub fn from_hex(hex: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(hex.len() == 64, "must be 64 hexadecimal characters");
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).context("must be hexadecimal")?;
        }
        Ok(Self(secret_key(bytes)))
    }

    /// A 32-byte key for one purpose (HKDF-SHA256 with the purpose as info).
    pub fn derive(&self, purpose: &str) -> SecretKey {
        let hk = Hkdf::<Sha256>::new(Some(b"fluxgate"), self.0.expose_secret());
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
        let _ = hk.expand(purpose.as_bytes(), &mut out);
        secret_key(out)
    }
}

/// Seals secrets that must be read back: XChaCha20-Poly1305 under a derived key, a random
/// nonce per message, bound to a context (`aad`: the signing key's id, the user's id) so a
/// sealed value moved to another row does not open. Stored as base64url of nonce ‖ ciphertext.
pub struct Sealer(SecretKey);

const NONCE_LEN: usize = 24;

impl Sealer {
    /// A sealer under `key` (from [`InstanceSecret::derive`]).
    pub fn new(key: SecretKey) -> Self {
        Self(key)
    }

    /// Encrypts `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> anyhow::Result<String> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ciphertext = XChaCha20Poly1305::new(self.0.expose_secret().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend(ciphertext);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts what [`seal`](Self::seal) made with the same key and `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .context("sealed value is not base64")?;
        anyhow::ensure!(bytes.len() > NONCE_LEN, "sealed value too short");
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        XChaCha20Poly1305::new(self.0.expose_secret().into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("cannot open a sealed value: is the instance secret (secret_key / data_dir/secret.key) the one it was sealed with?"))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
