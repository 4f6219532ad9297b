//! Service-account token signing keys and the JWS compact format: signs
//! claims with the `--service-account-signing-key-file` key (ES256 for
//! ECDSA P-256, RS256 for RSA) and verifies tokens against every
//! `--service-account-key-file` key. What the claims mean is
//! [`crate::serviceaccount`]'s business.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0}: no PEM key found (expected PRIVATE KEY, EC PRIVATE KEY, RSA PRIVATE KEY or PUBLIC KEY)"
    )]
    NoKey(String),
    #[error("{0}: not a usable key ({1}); ECDSA P-256 and RSA are supported")]
    Unsupported(String, String),
    #[error("{0}: a signing key must be a private key")]
    NotPrivate(String),
}

enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// A public key that verifies tokens.
#[derive(Clone)]
pub struct VerifyKey {
    alg: &'static str,
    kid: String,
    /// EC: the uncompressed point; RSA: the PKCS#1 RSAPublicKey DER.
    public: Vec<u8>,
    jwk: Value,
}

/// Signs with one key and verifies with several.
pub struct TokenKeys {
    signer: Signer,
    kid: String,
    verifiers: Vec<VerifyKey>,
}

impl TokenKeys {
    /// `signing` signs; it and every file in `verifying` verify.
    pub fn load(signing: &Path, verifying: &[&Path]) -> Result<Self, KeyError> {
        let name = signing.display().to_string();
        let blocks = pem_blocks(&read(signing)?);
        let (signer, key) = blocks
            .iter()
            .find_map(|(label, der)| private_key(label, der))
            .ok_or_else(|| match blocks.first() {
                Some((l, _)) if l == "PUBLIC KEY" => KeyError::NotPrivate(name.clone()),
                Some((l, _)) => KeyError::Unsupported(name.clone(), l.clone()),
                None => KeyError::NoKey(name.clone()),
            })?;
        let kid = key.kid.clone();
        let mut verifiers = vec![key];
        for path in verifying {
            let name = path.display().to_string();
            let blocks = pem_blocks(&read(path)?);
            if blocks.is_empty() {
                return Err(KeyError::NoKey(name));
            }
            for (label, der) in &blocks {
                let key = match label.as_str() {
                    "PUBLIC KEY" => public_key(der)
                        .ok_or_else(|| KeyError::Unsupported(name.clone(), label.clone()))?,
                    _ => private_key(label, der)
                        .map(|(_, k)| k)
                        .ok_or_else(|| KeyError::Unsupported(name.clone(), label.clone()))?,
                };
                if !verifiers.iter().any(|v| v.kid == key.kid) {
                    verifiers.push(key);
                }
            }
        }
        Ok(Self {
            signer,
            kid,
            verifiers,
        })
    }

    /// The JWS compact serialization of `claims`.
    pub fn sign(&self, claims: &Value) -> Option<String> {
        let alg = match self.signer {
            Signer::Es256(_) => "ES256",
            Signer::Rs256(_) => "RS256",
        };
        let header = json!({"alg": alg, "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).ok()?)
        );
        let rng = SystemRandom::new();
        let sig = match &self.signer {
            Signer::Es256(k) => k.sign(&rng, input.as_bytes()).ok()?.as_ref().to_vec(),
            Signer::Rs256(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut out,
                )
                .ok()?;
                out
            }
        };
        Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The claims of a token signed by one of our keys; None for anything
    /// else (malformed, unknown key, bad signature). Expiry is the caller's.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        let alg = header["alg"].as_str()?;
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let input = &token[..h.len() + 1 + c.len()];
        let kid = header["kid"].as_str();
        let ok = self
            .verifiers
            .iter()
            .filter(|k| k.alg == alg && kid.is_none_or(|id| id == k.kid))
            .any(|k| {
                let algorithm: &dyn signature::VerificationAlgorithm = match k.alg {
                    "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA256,
                };
                signature::UnparsedPublicKey::new(algorithm, &k.public)
                    .verify(input.as_bytes(), &sig)
                    .is_ok()
            });
        if !ok {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()
    }

    /// The verification keys as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        json!({"keys": self.verifiers.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `(label, DER)` for every PEM block in `text`.
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            cur = Some((label.to_string(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some((label, b64)) = cur.take()
                && let Ok(der) = STANDARD.decode(b64)
            {
                out.push((label, der));
            }
        } else if let Some((_, b64)) = cur.as_mut() {
            b64.push_str(line);
        }
    }
    out
}

fn private_key(label: &str, der: &[u8]) -> Option<(Signer, VerifyKey)> {
    let rng = SystemRandom::new();
    let ec = |pkcs8: &[u8]| {
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).ok()
    };
    let signer = match label {
        "PRIVATE KEY" => ec(der)
            .map(Signer::Es256)
            .or_else(|| RsaKeyPair::from_pkcs8(der).ok().map(Signer::Rs256))?,
        "EC PRIVATE KEY" => Signer::Es256(ec(&sec1_to_pkcs8(der)?)?),
        "RSA PRIVATE KEY" => Signer::Rs256(RsaKeyPair::from_der(der).ok()?),
        _ => return None,
    };
    let key = match &signer {
        Signer::Es256(k) => ec_key(k.public_key().as_ref())?,
        Signer::Rs256(k) => {
            let parts = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
            rsa_key(k.public().as_ref(), &parts.n, &parts.e)
        }
    };
    Some((signer, key))
}

/// A `PUBLIC KEY` (SubjectPublicKeyInfo) block.
fn public_key(der: &[u8]) -> Option<VerifyKey> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der).ok()?;
    match spki.parsed().ok()? {
        PublicKey::EC(point) => ec_key(point.data()),
        PublicKey::RSA(rsa) => Some(rsa_key(
            &spki.subject_public_key.data,
            rsa.modulus,
            rsa.exponent,
        )),
        _ => None,
    }
}

/// The key id: base64url SHA-256 of the public key bytes.
fn kid_of(public: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, public))
}

fn ec_key(point: &[u8]) -> Option<VerifyKey> {
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    let kid = kid_of(point);
    Some(VerifyKey {
        alg: "ES256",
        jwk: json!({"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}),
        kid,
        public: point.to_vec(),
    })
}

fn rsa_key(pkcs1: &[u8], modulus: &[u8], exponent: &[u8]) -> VerifyKey {
    let strip = |b: &[u8]| {
        let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        URL_SAFE_NO_PAD.encode(&b[i..])
    };
    let kid = kid_of(pkcs1);
    VerifyKey {
        alg: "RS256",
        jwk: json!({"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
                    "n": strip(modulus), "e": strip(exponent)}),
        kid,
        public: pkcs1.to_vec(),
    }
}

/// Wraps a SEC1 `EC PRIVATE KEY` (what `openssl ecparam -genkey` writes) in
/// the PKCS#8 envelope ring reads, for P-256.
fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Vec<u8>> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    const ALG: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(ALG);
    body.push(0x04);
    der_len(&mut body, sec1.len())?;
    body.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_len(&mut out, body.len())?;
    out.extend_from_slice(&body);
    Some(out)
}

fn der_len(out: &mut Vec<u8>, n: usize) -> Option<()> {
    match n {
        0..=0x7f => out.push(u8::try_from(n).ok()?),
        0x80..=0xff => out.extend_from_slice(&[0x81, u8::try_from(n).ok()?]),
        0x100..=0xffff => {
            out.push(0x82);
            out.extend_from_slice(&u16::try_from(n).ok()?.to_be_bytes());
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_pem(dir: &Path, name: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        k3rs_common::pki::load_or_generate_signing_key(&p).unwrap();
        p
    }

    #[test]
    fn signs_and_verifies_es256_and_rejects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let a = ec_pem(dir.path(), "a.key");
        let keys = TokenKeys::load(&a, &[]).unwrap();
        let claims = json!({"sub": "system:serviceaccount:default:x", "exp": 1});
        let t = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&t), Some(claims.clone()));
        // Another key does not verify it.
        let b = ec_pem(dir.path(), "b.key");
        let other = TokenKeys::load(&b, &[]).unwrap();
        assert_eq!(other.verify(&t), None);
        // ...unless it is one of the verification keys (key rotation).
        let both = TokenKeys::load(&b, &[a.as_path()]).unwrap();
        assert_eq!(both.verify(&t), Some(claims));
        // Tampered claims or signature, or garbage, never verify.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"system:admin"}"#);
        parts[1] = &forged;
        assert_eq!(keys.verify(&parts.join(".")), None);
        for junk in ["", "a.b", "a.b.c", "...", "x.y.z.w", &t[..t.len() - 2]] {
            assert_eq!(keys.verify(junk), None, "{junk}");
        }
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["kty"], "EC");
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
    }

    /// Keys as users make them with openssl: SEC1 EC, PKCS#1 RSA, and
    /// public-only SPKI files for verification.
    #[test]
    fn reads_openssl_keys_and_explains_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let st = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "openssl {args:?}");
        };
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ]);
        openssl(&["ec", "-in", "ec.pem", "-pubout", "-out", "ec.pub"]);
        openssl(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
        openssl(&["rsa", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub"]);
        let p = |n: &str| dir.path().join(n);
        assert!(
            std::fs::read_to_string(p("ec.pem"))
                .unwrap()
                .contains("EC PRIVATE KEY")
        );
        assert!(
            std::fs::read_to_string(p("rsa.pem"))
                .unwrap()
                .contains("RSA PRIVATE KEY")
        );
        let claims = json!({"sub": "s"});

        let ec = TokenKeys::load(&p("ec.pem"), &[]).unwrap();
        let t = ec.sign(&claims).unwrap();
        let rsa = TokenKeys::load(&p("rsa.pem"), &[]).unwrap();
        let r = rsa.sign(&claims).unwrap();
        assert_eq!(rsa.verify(&r), Some(claims.clone()));
        assert_eq!(rsa.jwks()["keys"][0]["kty"], "RSA");
        assert_eq!(rsa.jwks()["keys"][0]["e"], "AQAB");
        // A server holding other signing keys verifies both with the public halves.
        let other = dir.path().join("other.key");
        k3rs_common::pki::load_or_generate_signing_key(&other).unwrap();
        let verifier =
            TokenKeys::load(&other, &[p("ec.pub").as_path(), p("rsa.pub").as_path()]).unwrap();
        assert_eq!(verifier.verify(&t), Some(claims.clone()));
        assert_eq!(verifier.verify(&r), Some(claims));
        assert_eq!(verifier.jwks()["keys"].as_array().unwrap().len(), 3);

        let e = TokenKeys::load(&p("ec.pub"), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("must be a private key"), "{e}");
        std::fs::write(p("bad.pem"), "hello").unwrap();
        let e = TokenKeys::load(&p("bad.pem"), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no PEM key found"), "{e}");
        let e = TokenKeys::load(&p("missing.pem"), &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
