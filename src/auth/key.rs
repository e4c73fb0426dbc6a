//! Loading the key tokens are checked with: a shared secret (HS256) or a PEM public key whose
//! type picks the algorithm (docs/auth.md, "Keys"). Read once at startup; any defect is a
//! startup error naming the file.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::TokenKeyFile;
use crate::error::TokenKeyError;

/// Fewest bytes an HS256 secret may have (the hash's size; RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Object identifiers, DER-encoded, that tell the key types apart inside a public key.
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Reads the key and names the one algorithm tokens must be signed with.
pub fn load(file: &TokenKeyFile) -> Result<(DecodingKey, Algorithm), TokenKeyError> {
    match file {
        TokenKeyFile::Secret(path) => {
            let bytes = read(path)?;
            let secret = trim_line_end(&bytes);
            if secret.len() < MIN_SECRET_BYTES {
                return Err(TokenKeyError::ShortSecret(path.clone(), secret.len()));
            }
            Ok((DecodingKey::from_secret(secret), Algorithm::HS256))
        }
        TokenKeyFile::PublicKey(path) => {
            let bytes = read(path)?;
            public_key(&bytes).map_err(|why| TokenKeyError::PublicKey(path.clone(), why))
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TokenKeyError> {
    std::fs::read(path).map_err(|e| TokenKeyError::Read(path.to_path_buf(), e))
}

/// The secret without the line end an editor or `echo` adds.
fn trim_line_end(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

/// The key of a PEM file, and its algorithm from its type.
fn public_key(pem_text: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    let block = pem::parse(pem_text).map_err(|e| format!("not PEM ({e})"))?;
    let der = block.contents();
    let err = |e: jsonwebtoken::errors::Error| e.to_string();
    match block.tag() {
        tag if tag.contains("PRIVATE") => Err(format!(
            "it is a private key ({tag}): give the public key, which cannot sign"
        )),
        // PKCS#1: an RSA key without the algorithm wrapper.
        "RSA PUBLIC KEY" => Ok((
            DecodingKey::from_rsa_pem(pem_text).map_err(err)?,
            Algorithm::RS256,
        )),
        "PUBLIC KEY" if contains(der, OID_RSA) => Ok((
            DecodingKey::from_rsa_pem(pem_text).map_err(err)?,
            Algorithm::RS256,
        )),
        "PUBLIC KEY" if contains(der, OID_ED25519) => Ok((
            DecodingKey::from_ed_pem(pem_text).map_err(err)?,
            Algorithm::EdDSA,
        )),
        "PUBLIC KEY" if contains(der, OID_EC) => {
            let alg = if contains(der, OID_P256) {
                Algorithm::ES256
            } else if contains(der, OID_P384) {
                Algorithm::ES384
            } else {
                return Err("an EC key on a curve other than P-256 or P-384".into());
            };
            Ok((DecodingKey::from_ec_pem(pem_text).map_err(err)?, alg))
        }
        "PUBLIC KEY" => Err("a public key of a type other than RSA, EC or Ed25519".into()),
        tag => Err(format!(
            "a PEM {tag:?} block: expected \"PUBLIC KEY\" (or \"RSA PUBLIC KEY\")"
        )),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Public keys made with `openssl genpkey` / `openssl pkey -pubout` (test material only).
    const ED25519: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAjVk1KMg947U9xCUHJrPFF3bl6GTxWfthS1iJkuDx048=
-----END PUBLIC KEY-----
";
    const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMLeu4Yb1kpkVuVsICDm/4bpL5TsU
UhcA7Sn22jmcbaGKJqHdk+hZnt3ySajSyF8zRBTagaN1biE6CYjaEXzp1A==
-----END PUBLIC KEY-----
";
    const P384: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEjYig1JN+6PKu3szJvcQK21gsp33SMxsU
xixMnRYyHEYB8yoHOxbRGI1k02glO+YQU4ABoHd2PY61ZwG8zxyviQXXzEjR4iZU
jfGvAKQ6S/Yz/X7tGpFpVUTicXLi8BwX
-----END PUBLIC KEY-----
";

    /// The algorithm a PEM text's key gets, or why it is refused.
    fn algorithm(pem: &str) -> Result<Algorithm, String> {
        public_key(pem.as_bytes()).map(|(_, alg)| alg)
    }

    #[test]
    fn the_key_type_picks_the_algorithm() {
        assert_eq!(algorithm(ED25519), Ok(Algorithm::EdDSA));
        assert_eq!(algorithm(P256), Ok(Algorithm::ES256));
        assert_eq!(algorithm(P384), Ok(Algorithm::ES384));
    }

    #[test]
    fn unusable_files_are_refused_with_a_reason() {
        assert!(algorithm("not pem").unwrap_err().contains("not PEM"));
        let private = ED25519.replace("PUBLIC", "PRIVATE");
        assert!(algorithm(&private).unwrap_err().contains("private"));
        let cert = ED25519.replace("PUBLIC KEY", "CERTIFICATE");
        assert!(algorithm(&cert).unwrap_err().contains("CERTIFICATE"));
        assert_eq!(trim_line_end(b"abc\r\n\n"), b"abc");
    }

    #[test]
    fn short_secrets_are_refused() {
        let dir = std::env::temp_dir().join(format!("shardcast-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "too short\n").unwrap();
        assert!(matches!(
            load(&TokenKeyFile::Secret(path.clone())),
            Err(TokenKeyError::ShortSecret(_, 9))
        ));
        std::fs::write(&path, format!("{}\n", "k".repeat(32))).unwrap();
        assert!(load(&TokenKeyFile::Secret(path.clone())).is_ok());
        assert!(matches!(
            load(&TokenKeyFile::Secret(dir.join("missing"))),
            Err(TokenKeyError::Read(..))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
