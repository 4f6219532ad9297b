//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`) request
//! bodies → the JSON Go's `encoding/json` would produce for the same object.
//!
//! `kubectl`'s typed clients (`kubectl create deployment|secret|token|...`,
//! `kubectl run`, `kubectl drain`, `kubectl auth can-i`) send protobuf; the
//! API server turns the body into JSON with [`decode`] and then handles it
//! like any JSON body.
//!
//! The decoder is data-driven: `types.table`, generated from the Go types
//! and `generated.proto` files of k8s.io/api and k8s.io/apimachinery by
//! `scripts/gen-protobuf-table.py`, lists every message with its fields
//! (number, JSON name, wire type, pointer/omitempty/inline flags). The wire
//! format is walked by hand, guided by that table; no code per type.

mod decode;
mod table;
mod wire;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

/// The 4-byte prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Maximum nesting of messages (and of skipped groups) accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a protobuf body could not be decoded. Offsets are byte offsets into
/// the input given to [`decode`] / [`decode_message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    #[error("protobuf body does not start with the magic prefix \"k8s\\x00\"")]
    BadMagic,
    #[error("truncated varint at offset {offset}")]
    TruncatedVarint { offset: usize },
    #[error("varint longer than 10 bytes at offset {offset}")]
    VarintOverflow { offset: usize },
    #[error("truncated data at offset {offset}: need {need} bytes, only {left} left")]
    Truncated {
        offset: usize,
        need: usize,
        left: usize,
    },
    #[error("invalid length {length} at offset {offset}")]
    BadLength { offset: usize, length: u64 },
    #[error("illegal field number {number} at offset {offset}")]
    BadFieldNumber { offset: usize, number: u64 },
    #[error("illegal wire type {wire} at offset {offset}")]
    BadWireType { offset: usize, wire: u8 },
    #[error("unterminated group starting at offset {offset}")]
    UnterminatedGroup { offset: usize },
    #[error("unexpected end-group tag at offset {offset}")]
    UnexpectedEndGroup { offset: usize },
    #[error(
        "wrong wire type for field {field} ({number}) of message {message} at offset {offset}: expected {expected}, got {got}"
    )]
    WrongWireType {
        message: String,
        field: String,
        number: u32,
        expected: &'static str,
        got: &'static str,
        offset: usize,
    },
    #[error("invalid value in message {message} at offset {offset}: {reason}")]
    InvalidValue {
        message: String,
        offset: usize,
        reason: String,
    },
    #[error("messages nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("protobuf envelope has no kind (apiVersion {api_version:?})")]
    MissingKind { api_version: String },
    #[error("no protobuf type is known for kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("unknown protobuf message type {0:?}")]
    UnknownMessage(String),
    #[error("unsupported protobuf envelope content encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("unsupported protobuf envelope content type {0:?}")]
    UnsupportedContentType(String),
    #[error("internal protobuf type table is invalid: {0}")]
    Table(String),
}

fn table() -> Result<&'static table::Table, ProtobufError> {
    table::table().map_err(|e| ProtobufError::Table(e.to_string()))
}

/// Decodes a body `k8s\0` + runtime.Unknown{typeMeta{apiVersion,kind}, raw,
/// contentEncoding, contentType} into the JSON object, with apiVersion and
/// kind set.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let Some(rest) = body.strip_prefix(MAGIC.as_slice()) else {
        return Err(ProtobufError::BadMagic);
    };
    let env = envelope(rest, MAGIC.len())?;
    if !env.content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedEncoding(env.content_encoding));
    }
    if !env.content_type.is_empty() && env.content_type != "application/vnd.kubernetes.protobuf" {
        return Err(ProtobufError::UnsupportedContentType(env.content_type));
    }
    if env.kind.is_empty() {
        return Err(ProtobufError::MissingKind {
            api_version: env.api_version,
        });
    }
    let t = table()?;
    let Some(idx) = kind_index(t, &env.api_version, &env.kind) else {
        return Err(ProtobufError::UnknownKind {
            api_version: env.api_version,
            kind: env.kind,
        });
    };
    let chunk = (env.raw.0, env.raw.1);
    let dec = decode::Decoder { table: t };
    let value = dec.message(idx, &[chunk], 0)?;
    // Go writes TypeMeta (kind, apiVersion) first.
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(env.kind));
    out.insert("apiVersion".into(), Value::String(env.api_version));
    if let Value::Object(fields) = value {
        for (k, v) in fields {
            if k != "kind" && k != "apiVersion" {
                out.insert(k, v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes one message of a named type (e.g. "k8s.io.api.core.v1.Pod")
/// from raw protobuf bytes.
pub fn decode_message(type_name: &str, bytes: &[u8]) -> Result<Value, ProtobufError> {
    let t = table()?;
    let name = type_name.strip_prefix('.').unwrap_or(type_name);
    let Some(idx) = t.message(name) else {
        return Err(ProtobufError::UnknownMessage(type_name.to_string()));
    };
    decode::Decoder { table: t }.message(idx, &[(bytes, 0)], 0)
}

/// The protobuf message name for an apiVersion + kind, if known (e.g.
/// ("apps/v1","Deployment") -> "k8s.io.api.apps.v1.Deployment").
pub fn message_for(api_version: &str, kind: &str) -> Option<&'static str> {
    let t = table().ok()?;
    kind_index(t, api_version, kind).map(|i| &*t.messages[i].name)
}

/// Kinds of the apiVersion itself, then meta.k8s.io/v1 kinds (Status,
/// DeleteOptions, ...), which Kubernetes registers in every group version.
fn kind_index(t: &table::Table, api_version: &str, kind: &str) -> Option<usize> {
    t.kind(api_version, kind)
        .or_else(|| t.kind("meta.k8s.io/v1", kind))
}

struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: decode::Chunk<'a>,
    content_encoding: String,
    content_type: String,
}

/// Parses runtime.Unknown (`base` = offset of `buf` in the body).
fn envelope(buf: &[u8], base: usize) -> Result<Envelope<'_>, ProtobufError> {
    const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
    const TYPE_META: &str = "k8s.io.apimachinery.pkg.runtime.TypeMeta";
    let wrong =
        |message: &str, field: &str, tag: wire::Tag, expected: u8| ProtobufError::WrongWireType {
            message: message.into(),
            field: field.into(),
            number: tag.number,
            expected: wire::wire_type_name(expected),
            got: wire::wire_type_name(tag.wire),
            offset: tag.offset,
        };
    let mut env = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: (&[], base + buf.len()),
        content_encoding: String::new(),
        content_type: String::new(),
    };
    let mut r = wire::Reader::new(buf, base);
    while let Some(tag) = r.tag()? {
        let name = match tag.number {
            1 => "typeMeta",
            2 => "raw",
            3 => "contentEncoding",
            4 => "contentType",
            _ => {
                r.skip(tag, 0)?;
                continue;
            }
        };
        if tag.wire != wire::LEN {
            return Err(wrong(UNKNOWN, name, tag, wire::LEN));
        }
        let (bytes, off) = r.len_delimited()?;
        match tag.number {
            1 => {
                let mut tm = wire::Reader::new(bytes, off);
                while let Some(t) = tm.tag()? {
                    let field = match t.number {
                        1 => "apiVersion",
                        2 => "kind",
                        _ => {
                            tm.skip(t, 1)?;
                            continue;
                        }
                    };
                    if t.wire != wire::LEN {
                        return Err(wrong(TYPE_META, field, t, wire::LEN));
                    }
                    let s = decode::go_string(tm.len_delimited()?.0);
                    if t.number == 1 {
                        env.api_version = s;
                    } else {
                        env.kind = s;
                    }
                }
            }
            2 => env.raw = (bytes, off),
            3 => env.content_encoding = decode::go_string(bytes),
            _ => env.content_type = decode::go_string(bytes),
        }
    }
    Ok(env)
}
