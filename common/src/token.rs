//! Join tokens in K3s's format: `K10<sha256 hex of the CA cert PEM>::<user>:<secret>`.
//!
//! The hash lets a joining node check the CA it downloads before trusting it;
//! the secret authenticates the node. A token may also be given bare (just
//! the secret), as K3s allows.

use std::fmt;

use rand::RngCore;

/// Prefix of full tokens (K3s's "K10" = version 1 of the format, hash 0).
const PREFIX: &str = "K10";

/// The user name inside server and node tokens.
pub const SERVER_USER: &str = "server";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token's CA hash is not 64 hex characters")]
    BadHash,
    #[error("the token has no secret after \"::\"")]
    NoSecret,
    #[error("the token secret may not contain ':' or whitespace")]
    BadSecret,
}

/// A parsed token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// SHA-256 hex of the cluster CA certificate PEM (None for a bare secret).
    pub ca_hash: Option<String>,
    /// `server` or `node` in full tokens.
    pub user: Option<String>,
    pub secret: String,
}

// The secret must not end up in logs through `{:?}`.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ca_hash", &self.ca_hash)
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// Parses `K10<hash>::<user>:<secret>`, `K10<hash>::<secret>` or a bare secret.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TokenError::Empty);
        }
        if let Some(rest) = s.strip_prefix(PREFIX)
            && let Some((hash, creds)) = rest.split_once("::")
        {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TokenError::BadHash);
            }
            let (user, secret) = match creds.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), p),
                None => (None, creds),
            };
            if secret.is_empty() {
                return Err(TokenError::NoSecret);
            }
            check_secret(secret)?;
            return Ok(Self {
                ca_hash: Some(hash.to_ascii_lowercase()),
                user,
                secret: secret.to_string(),
            });
        }
        check_secret(s)?;
        Ok(Self {
            ca_hash: None,
            user: None,
            secret: s.to_string(),
        })
    }

    /// A full server token for the CA whose certificate PEM is `ca_pem`.
    pub fn server(ca_pem: &str, secret: &str) -> Self {
        Self {
            ca_hash: Some(ca_hash(ca_pem)),
            user: Some(SERVER_USER.into()),
            secret: secret.to_string(),
        }
    }

    /// Whether this token was made for the CA with certificate `ca_pem`
    /// (a bare secret fits any CA).
    pub fn matches_ca(&self, ca_pem: &str) -> bool {
        self.ca_hash.as_deref().is_none_or(|h| h == ca_hash(ca_pem))
    }

    /// Whether `given` is this token's secret, compared in constant time so
    /// the comparison does not leak how much of a guess was right.
    pub fn secret_matches(&self, given: &str) -> bool {
        let (a, b) = (self.secret.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The text form (`K10...` or the bare secret). This is the secret itself:
/// write it to 0600 files only.
impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.ca_hash, &self.user) {
            (Some(h), Some(u)) => write!(f, "{PREFIX}{h}::{u}:{}", self.secret),
            (Some(h), None) => write!(f, "{PREFIX}{h}::{}", self.secret),
            _ => f.write_str(&self.secret),
        }
    }
}

fn check_secret(s: &str) -> Result<(), TokenError> {
    if s.contains(':') || s.chars().any(char::is_whitespace) {
        return Err(TokenError::BadSecret);
    }
    Ok(())
}

/// SHA-256 of the CA certificate PEM, lower-case hex (what K3s puts after K10).
pub fn ca_hash(ca_pem: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes()).as_ref())
}

/// A new random secret: 32 hex characters (128 bits).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn full_token_round_trips() {
        let t = Token::server(CA, "0123456789abcdef0123456789abcdef");
        let text = t.to_string();
        assert!(text.starts_with("K10"), "{text}");
        assert!(text.ends_with("::server:0123456789abcdef0123456789abcdef"));
        assert_eq!(text.len(), 3 + 64 + 2 + 6 + 1 + 32);
        let back = Token::parse(&text).unwrap();
        assert_eq!(back, t);
        assert!(back.matches_ca(CA));
        assert!(!back.matches_ca("another CA"));
    }

    #[test]
    fn hash_is_sha256_of_the_pem() {
        // sha256("abc")
        assert_eq!(
            ca_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bare_and_userless_forms() {
        let t = Token::parse("  mysecret\n").unwrap();
        assert_eq!(t.ca_hash, None);
        assert_eq!(t.secret, "mysecret");
        assert!(t.matches_ca(CA));
        assert_eq!(t.to_string(), "mysecret");

        let h = ca_hash(CA);
        let t = Token::parse(&format!("K10{h}::s3cr3t")).unwrap();
        assert_eq!(t.user, None);
        assert_eq!(t.secret, "s3cr3t");
        assert_eq!(t.to_string(), format!("K10{h}::s3cr3t"));

        let t = Token::parse(&format!("K10{h}::node:abc")).unwrap();
        assert_eq!(t.user.as_deref(), Some("node"));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        assert_eq!(Token::parse(""), Err(TokenError::Empty));
        assert_eq!(Token::parse("K10abc::server:x"), Err(TokenError::BadHash));
        let h = ca_hash(CA);
        assert_eq!(
            Token::parse(&format!("K10{h}::server:")),
            Err(TokenError::NoSecret)
        );
        assert_eq!(Token::parse("a b"), Err(TokenError::BadSecret));
        assert_eq!(Token::parse("user:pass"), Err(TokenError::BadSecret));
    }

    #[test]
    fn generated_secrets_are_32_hex_and_differ() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn secrets_compare() {
        let t = Token::parse("topsecret").unwrap();
        assert!(t.secret_matches("topsecret"));
        assert!(!t.secret_matches("topsecreT"));
        assert!(!t.secret_matches("topsecret2"));
        assert!(!t.secret_matches(""));
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = Token::parse("topsecret").unwrap();
        assert!(!format!("{t:?}").contains("topsecret"));
    }
}
