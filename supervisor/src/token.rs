//! Join tokens: the format lives in `k3rs_common::token`, shared with the
//! API server (which checks node secrets) and the node agent (which checks
//! the CA it downloads against the token's hash).

pub use k3rs_common::token::*;
