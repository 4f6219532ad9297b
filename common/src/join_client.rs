//! The one GET the join flows (agent and server) make against a server's
//! `/v1-k3rs/*` endpoints, with kube's HTTPS client.

use std::time::Duration;

/// Why a join request failed, worded for the person running the join.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    BadResponse(String),
    /// The server answered one of the caller's `refused` status codes.
    #[error("{0}")]
    Refused(String),
}

/// GETs `path` on `uri`. `ca_pem` None skips server verification (only for
/// fetching the CA itself, which the caller then checks against the token).
pub async fn get(
    uri: &http::Uri,
    ca_pem: Option<&str>,
    path: &str,
    headers: &[(&str, String)],
    refused: &[u16],
) -> Result<String, FetchError> {
    let mut cfg = kube::Config::new(uri.clone());
    match ca_pem {
        Some(pem) => {
            let certs = crate::tls::certs_from_pem(pem.as_bytes(), "cluster CA")
                .map_err(|e| FetchError::BadResponse(e.to_string()))?;
            cfg.root_cert = Some(certs.iter().map(|c| c.to_vec()).collect());
        }
        None => cfg.accept_invalid_certs = true,
    }
    cfg.connect_timeout = Some(Duration::from_secs(10));
    cfg.read_timeout = Some(Duration::from_secs(30));
    let client = kube::Client::try_from(cfg).map_err(|e| FetchError::Unreachable(e.to_string()))?;
    let mut req = http::Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(Vec::new())
        .map_err(|e| FetchError::BadResponse(e.to_string()))?;
    match client.request_text(req).await {
        Ok(text) => Ok(text),
        Err(kube::Error::Api(s)) if refused.contains(&s.code) => {
            Err(FetchError::Refused(match s.code {
                401 => "the token's secret is wrong (401 Unauthorized)".to_string(),
                404 => format!("{path} not found: is this a k3rs server?"),
                _ => s.message.clone(),
            }))
        }
        Err(e) => Err(FetchError::Unreachable(e.to_string())),
    }
}
