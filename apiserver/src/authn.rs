//! Authentication: client certificates (CN = user, O = groups) and static
//! bearer tokens. Every authenticated user is in `system:authenticated`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Extra attributes (service-account tokens: pod name/uid, credential id).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn new(name: impl Into<String>, uid: impl Into<String>, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self {
            name: name.into(),
            uid: uid.into(),
            groups,
            extra: Default::default(),
        }
    }

    /// The `userInfo` object of reviews.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {why}")]
    TokenFile {
        path: String,
        line: usize,
        why: String,
    },
}

/// Tokens from `--token-auth-file`: CSV lines `token,user,uid,"group1,group2"`.
#[derive(Debug, Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    pub fn load(path: &Path) -> Result<Self, AuthnError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthnError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols = split_csv(line);
            if cols.len() < 3 || cols[0].is_empty() || cols[1].is_empty() {
                return Err(AuthnError::TokenFile {
                    path: path.display().to_string(),
                    line: i + 1,
                    why: "expected token,user,uid[,\"groups\"]".into(),
                });
            }
            let groups = cols
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                cols[0].clone(),
                UserInfo::new(cols[1].clone(), cols[2].clone(), groups),
            );
        }
        Ok(Self { tokens })
    }

    pub fn insert(&mut self, token: String, user: UserInfo) {
        self.tokens.insert(token, user);
    }

    /// Constant-time comparison is unnecessary here: the lookup is by hash of
    /// the whole token, and a miss reveals nothing about near matches.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.tokens.get(token).cloned()
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(
            &p,
            "# comment\nsecret1,alice,u1,\"dev,ops\"\nsecret2,bob,u2\n",
        )
        .unwrap();
        let a = TokenAuthenticator::load(&p).unwrap();
        let u = a.authenticate("secret1").unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, vec!["dev", "ops", "system:authenticated"]);
        assert_eq!(
            a.authenticate("secret2").unwrap().groups,
            vec!["system:authenticated"]
        );
        assert!(a.authenticate("nope").is_none());
        std::fs::write(&p, "onlytoken\n").unwrap();
        let e = TokenAuthenticator::load(&p).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
