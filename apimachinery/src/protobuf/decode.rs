//! The table-driven decoder: walks protobuf bytes of a message and builds
//! the JSON that Go's `encoding/json` would produce for the Go value that
//! gogo-protobuf's generated `Unmarshal` would have built from those bytes.
//!
//! The Go rules reproduced here:
//! * a field absent from the bytes holds its Go zero value;
//! * `omitempty` drops "", 0, false, nil/empty slices and maps and nil
//!   pointers, but never a struct and never a non-nil pointer;
//! * fields without `omitempty` are always written (`null` for nil);
//! * inline (embedded) structs merge their fields into the parent, the
//!   parent's own fields winning on a name clash;
//! * a repeated proto field with no elements is a nil Go slice;
//! * `[]byte` is base64 (std, padded); map keys become JSON object keys;
//! * `metav1.Time`, `MicroTime`, `Duration`, `resource.Quantity`,
//!   `intstr.IntOrString`, `runtime.RawExtension`, `FieldsV1` and
//!   `GroupVersion` have their own `MarshalJSON`.

use serde_json::{Map, Number, Value};

use super::table::{Body, Elem, Field, Message, Scalar, Special, Table};
use super::wire::{self, Reader, Tag};
use super::{MAX_DEPTH, ProtobufError};

/// A piece of a message's encoding with the absolute offset of its first
/// byte. A singular message field that occurs several times is decoded as
/// the concatenation of its occurrences (protobuf merge semantics, which is
/// what gogo's generated `Unmarshal` does when called repeatedly).
pub(crate) type Chunk<'a> = (&'a [u8], usize);

pub(crate) struct Decoder {
    pub table: &'static Table,
}

/// What was read for one field of a struct message.
enum Slot<'a> {
    Unset,
    Scalar(Value),
    Chunks(Vec<Chunk<'a>>),
    Items(Vec<Value>),
    Map(Map<String, Value>),
}

impl Decoder {
    /// Decodes a message (by table index) from its chunks; no chunks means
    /// the Go zero value of the type.
    pub(crate) fn message(
        &self,
        idx: usize,
        chunks: &[Chunk<'_>],
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        if depth > MAX_DEPTH {
            return Err(ProtobufError::TooDeep { limit: MAX_DEPTH });
        }
        let Some(msg) = self.table.messages.get(idx) else {
            return Err(ProtobufError::Table(format!(
                "message index {idx} out of range"
            )));
        };
        match &msg.body {
            Body::Struct { fields, .. } => self.structure(msg, fields, chunks, depth),
            Body::List(elem) => self.list(msg, *elem, chunks, depth),
            Body::Special(s) => self.special(msg, *s, chunks, depth),
        }
    }

    fn structure(
        &self,
        msg: &Message,
        fields: &[Field],
        chunks: &[Chunk<'_>],
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        let mut slots: Vec<Slot<'_>> = fields.iter().map(|_| Slot::Unset).collect();
        for &(buf, base) in chunks {
            let mut r = Reader::new(buf, base);
            while let Some(tag) = r.tag()? {
                let Some(fi) = field_index(msg, tag.number) else {
                    r.skip(tag, depth)?;
                    continue;
                };
                let f = &fields[fi];
                if let Some(key) = f.map_key {
                    expect_wire(msg, f, tag, wire::LEN)?;
                    let (entry, off) = r.len_delimited()?;
                    let (k, v) = self.map_entry(msg, f, key, (entry, off), depth)?;
                    if !matches!(slots[fi], Slot::Map(_)) {
                        slots[fi] = Slot::Map(Map::new());
                    }
                    if let Slot::Map(m) = &mut slots[fi] {
                        m.insert(k, v);
                    }
                } else if f.repeated {
                    if !matches!(slots[fi], Slot::Items(_)) {
                        slots[fi] = Slot::Items(Vec::new());
                    }
                    if let Slot::Items(items) = &mut slots[fi] {
                        match f.elem {
                            Elem::Scalar(sc) => {
                                read_repeated_scalar(&mut r, msg, f, sc, tag, items)?
                            }
                            Elem::Message(m) => {
                                expect_wire(msg, f, tag, wire::LEN)?;
                                let chunk = r.len_delimited()?;
                                items.push(self.message(m, &[chunk], depth + 1)?);
                            }
                        }
                    }
                } else {
                    match f.elem {
                        Elem::Scalar(sc) => {
                            expect_wire(msg, f, tag, sc.wire_type())?;
                            slots[fi] = Slot::Scalar(read_scalar(&mut r, msg, f, sc)?);
                        }
                        Elem::Message(m) => {
                            expect_wire(msg, f, tag, wire::LEN)?;
                            let chunk = r.len_delimited()?;
                            // Time and MicroTime replace their value on each
                            // Unmarshal; everything else merges.
                            let replaces = matches!(
                                self.table.messages.get(m).map(|m| &m.body),
                                Some(Body::Special(Special::Time | Special::MicroTime))
                            );
                            match &mut slots[fi] {
                                Slot::Chunks(v) if !replaces => v.push(chunk),
                                s => *s = Slot::Chunks(vec![chunk]),
                            }
                        }
                    }
                }
            }
        }

        let mut out = Map::new();
        for (f, slot) in fields.iter().zip(slots) {
            if f.inline {
                let Elem::Message(m) = f.elem else { continue };
                let chunks = match slot {
                    Slot::Chunks(c) => c,
                    _ if f.pointer => continue, // nil embedded pointer: no fields
                    _ => Vec::new(),
                };
                if let Value::Object(inner) = self.message(m, &chunks, depth + 1)? {
                    for (k, v) in inner {
                        let shadowed = fields.iter().any(|o| !o.inline && *o.json == *k);
                        if !shadowed && !out.contains_key(&k) {
                            out.insert(k, v);
                        }
                    }
                }
                continue;
            }
            // `None` is a nil Go value (nil slice, map or pointer).
            let value: Option<Value> = match slot {
                Slot::Map(m) => Some(Value::Object(m)),
                // (an empty packed run leaves gogo's slice nil too)
                Slot::Items(items) if items.is_empty() => None,
                Slot::Items(items) => Some(Value::Array(items)),
                Slot::Unset if f.map_key.is_some() || f.repeated => None,
                Slot::Scalar(v) => Some(v),
                Slot::Unset if f.pointer => None,
                Slot::Unset => match f.elem {
                    Elem::Scalar(sc) => Some(zero_scalar(sc)),
                    Elem::Message(m) => Some(self.message(m, &[], depth + 1)?),
                },
                Slot::Chunks(c) => match f.elem {
                    Elem::Message(m) => Some(self.message(m, &c, depth + 1)?),
                    Elem::Scalar(_) => None, // not produced for scalars
                },
            };
            match value {
                None if f.omitempty => {}
                None => {
                    out.insert(f.json.to_string(), Value::Null);
                }
                Some(v) => {
                    if f.omitempty && !f.pointer && self.is_empty(f, &v) {
                        continue;
                    }
                    out.insert(f.json.to_string(), v);
                }
            }
        }
        Ok(Value::Object(out))
    }

    /// Go's `isEmptyValue` for a non-pointer field's value: structs are
    /// never empty, slices/maps/strings by length, numbers and bools by zero.
    fn is_empty(&self, f: &Field, v: &Value) -> bool {
        if f.map_key.is_none()
            && !f.repeated
            && let Elem::Message(m) = f.elem
            && !matches!(
                self.table.messages.get(m).map(|m| &m.body),
                Some(Body::List(_))
            )
        {
            return false; // a struct
        }
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty() && f.map_key.is_some(),
        }
    }

    fn map_entry(
        &self,
        msg: &Message,
        f: &Field,
        key_type: Scalar,
        (buf, base): Chunk<'_>,
        depth: usize,
    ) -> Result<(String, Value), ProtobufError> {
        let mut r = Reader::new(buf, base);
        let mut key: Option<Value> = None;
        let mut scalar: Option<Value> = None;
        let mut chunk: Option<Chunk<'_>> = None;
        while let Some(tag) = r.tag()? {
            match tag.number {
                1 => {
                    expect_wire(msg, f, tag, key_type.wire_type())?;
                    key = Some(read_scalar(&mut r, msg, f, key_type)?);
                }
                2 => match f.elem {
                    Elem::Scalar(sc) => {
                        expect_wire(msg, f, tag, sc.wire_type())?;
                        scalar = Some(read_scalar(&mut r, msg, f, sc)?);
                    }
                    Elem::Message(_) => {
                        expect_wire(msg, f, tag, wire::LEN)?;
                        // gogo decodes each value into a fresh struct.
                        chunk = Some(r.len_delimited()?);
                    }
                },
                _ => r.skip(tag, depth)?,
            }
        }
        let key = match key.unwrap_or_else(|| zero_scalar(key_type)) {
            Value::String(s) => s,
            Value::Null => String::new(), // bytes key absent
            other => other.to_string(),
        };
        let value = match f.elem {
            // gogo starts map byte values as `[]byte{}`, so absent is "".
            Elem::Scalar(Scalar::Bytes) => scalar.unwrap_or_else(|| Value::String(String::new())),
            Elem::Scalar(sc) => scalar.unwrap_or_else(|| zero_scalar(sc)),
            Elem::Message(m) => {
                let chunks: &[Chunk<'_>] = match &chunk {
                    Some(c) => std::slice::from_ref(c),
                    None => &[],
                };
                self.message(m, chunks, depth + 1)?
            }
        };
        Ok((key, value))
    }

    /// A named Go slice (`ExtraValue`, `Verbs`): field 1 holds the items.
    fn list(
        &self,
        msg: &Message,
        elem: Elem,
        chunks: &[Chunk<'_>],
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        let item_field = Field {
            number: 1,
            json: Box::from("items"),
            elem,
            map_key: None,
            repeated: true,
            pointer: false,
            omitempty: false,
            inline: false,
        };
        let mut items = Vec::new();
        for &(buf, base) in chunks {
            let mut r = Reader::new(buf, base);
            while let Some(tag) = r.tag()? {
                if tag.number != 1 {
                    r.skip(tag, depth)?;
                    continue;
                }
                match elem {
                    Elem::Scalar(sc) => {
                        read_repeated_scalar(&mut r, msg, &item_field, sc, tag, &mut items)?
                    }
                    Elem::Message(m) => {
                        expect_wire(msg, &item_field, tag, wire::LEN)?;
                        let chunk = r.len_delimited()?;
                        items.push(self.message(m, &[chunk], depth + 1)?);
                    }
                }
            }
        }
        Ok(if items.is_empty() {
            Value::Null // a nil slice
        } else {
            Value::Array(items)
        })
    }

    fn special(
        &self,
        msg: &Message,
        kind: Special,
        chunks: &[Chunk<'_>],
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        match kind {
            Special::Time | Special::MicroTime => {
                // Time.Unmarshal: empty data is the zero time (JSON null).
                let Some(&(buf, base)) = chunks.last() else {
                    return Ok(Value::Null);
                };
                if buf.is_empty() {
                    return Ok(Value::Null);
                }
                let mut seconds: i64 = 0;
                let mut nanos: i32 = 0;
                let mut r = Reader::new(buf, base);
                while let Some(tag) = r.tag()? {
                    match tag.number {
                        1 => {
                            expect_special_wire(msg, "seconds", tag, wire::VARINT)?;
                            seconds = r.varint()? as i64;
                        }
                        2 => {
                            expect_special_wire(msg, "nanos", tag, wire::VARINT)?;
                            nanos = r.varint()? as i32;
                        }
                        _ => r.skip(tag, depth)?,
                    }
                }
                if kind == Special::Time {
                    // metav1.Time keeps whole seconds only.
                    Ok(time_json(seconds, None))
                } else {
                    // MicroTime truncates to microseconds, then time.Unix
                    // normalises nanoseconds outside [0, 1e9).
                    let ns = i64::from(nanos) - i64::from(nanos) % 1000;
                    let sec = seconds.wrapping_add(ns.div_euclid(1_000_000_000));
                    let ns = ns.rem_euclid(1_000_000_000);
                    Ok(time_json(sec, Some((ns / 1000) as u32)))
                }
            }
            Special::Duration => {
                let mut ns: i64 = 0;
                for_each_field(chunks, depth, |r, tag| {
                    if tag.number == 1 {
                        expect_special_wire(msg, "duration", tag, wire::VARINT)?;
                        ns = r.varint()? as i64;
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                })?;
                Ok(Value::String(go_duration(ns)))
            }
            Special::Quantity => {
                let mut s: Option<String> = None;
                for_each_field(chunks, depth, |r, tag| {
                    if tag.number == 1 {
                        expect_special_wire(msg, "string", tag, wire::LEN)?;
                        let (b, off) = r.len_delimited()?;
                        if b.is_empty() {
                            return Err(ProtobufError::InvalidValue {
                                message: msg.name.to_string(),
                                offset: off,
                                reason: "empty quantity string".into(),
                            });
                        }
                        s = Some(go_string(b));
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                })?;
                // The zero Quantity marshals as "0".
                Ok(Value::String(s.unwrap_or_else(|| "0".into())))
            }
            Special::IntOrString => {
                let (mut ty, mut int_val, mut str_val) = (0i64, 0i32, String::new());
                let mut at = chunks.first().map_or(0, |c| c.1);
                for_each_field(chunks, depth, |r, tag| {
                    match tag.number {
                        1 => {
                            expect_special_wire(msg, "type", tag, wire::VARINT)?;
                            at = tag.offset;
                            ty = r.varint()? as i64;
                        }
                        2 => {
                            expect_special_wire(msg, "intVal", tag, wire::VARINT)?;
                            int_val = r.varint()? as i32;
                        }
                        3 => {
                            expect_special_wire(msg, "strVal", tag, wire::LEN)?;
                            str_val = go_string(r.len_delimited()?.0);
                        }
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                match ty {
                    0 => Ok(Value::from(int_val)),
                    1 => Ok(Value::String(str_val)),
                    _ => Err(ProtobufError::InvalidValue {
                        message: msg.name.to_string(),
                        offset: at,
                        reason: format!("impossible IntOrString type {ty}"),
                    }),
                }
            }
            Special::RawExtension | Special::FieldsV1 => {
                let mut raw: Option<&[u8]> = None;
                for_each_field(chunks, depth, |r, tag| {
                    if tag.number == 1 {
                        expect_special_wire(msg, "raw", tag, wire::LEN)?;
                        raw = Some(r.len_delimited()?.0);
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                })?;
                Ok(match raw {
                    // nil Raw marshals as null; so does an empty one here
                    // (Go would fail to marshal it).
                    None | Some([]) => Value::Null,
                    Some(b) => {
                        serde_json::from_slice(b).unwrap_or_else(|_| Value::String(base64(b)))
                    }
                })
            }
            Special::GroupVersion => {
                let (mut group, mut version) = (String::new(), String::new());
                for_each_field(chunks, depth, |r, tag| {
                    let target = match tag.number {
                        1 => &mut group,
                        2 => &mut version,
                        _ => return Ok(false),
                    };
                    expect_special_wire(msg, "group/version", tag, wire::LEN)?;
                    *target = go_string(r.len_delimited()?.0);
                    Ok(true)
                })?;
                Ok(Value::String(if group.is_empty() {
                    version
                } else {
                    format!("{group}/{version}")
                }))
            }
        }
    }
}

/// Runs `f` for every field of every chunk; `f` returns whether it consumed
/// the value (otherwise it is skipped).
fn for_each_field<'a>(
    chunks: &[Chunk<'a>],
    depth: usize,
    mut f: impl FnMut(&mut Reader<'a>, Tag) -> Result<bool, ProtobufError>,
) -> Result<(), ProtobufError> {
    for &(buf, base) in chunks {
        let mut r = Reader::new(buf, base);
        while let Some(tag) = r.tag()? {
            if !f(&mut r, tag)? {
                r.skip(tag, depth)?;
            }
        }
    }
    Ok(())
}

fn field_index(msg: &Message, number: u32) -> Option<usize> {
    match &msg.body {
        Body::Struct { by_number, .. } => by_number
            .binary_search_by_key(&number, |&(n, _)| n)
            .ok()
            .map(|i| by_number[i].1),
        _ => None,
    }
}

fn field_label(f: &Field) -> String {
    if f.inline {
        format!("#{}", f.number)
    } else {
        f.json.to_string()
    }
}

fn expect_wire(msg: &Message, f: &Field, tag: Tag, want: u8) -> Result<(), ProtobufError> {
    if tag.wire == want {
        return Ok(());
    }
    Err(ProtobufError::WrongWireType {
        message: msg.name.to_string(),
        field: field_label(f),
        number: tag.number,
        expected: wire::wire_type_name(want),
        got: wire::wire_type_name(tag.wire),
        offset: tag.offset,
    })
}

fn expect_special_wire(msg: &Message, name: &str, tag: Tag, want: u8) -> Result<(), ProtobufError> {
    if tag.wire == want {
        return Ok(());
    }
    Err(ProtobufError::WrongWireType {
        message: msg.name.to_string(),
        field: name.to_string(),
        number: tag.number,
        expected: wire::wire_type_name(want),
        got: wire::wire_type_name(tag.wire),
        offset: tag.offset,
    })
}

fn zero_scalar(sc: Scalar) -> Value {
    match sc {
        Scalar::String => Value::String(String::new()),
        Scalar::Bytes => Value::Null, // a nil []byte
        Scalar::Bool => Value::Bool(false),
        Scalar::Double | Scalar::Float => Value::from(0.0),
        _ => Value::from(0),
    }
}

/// Reads one scalar whose wire type has been checked.
fn read_scalar(
    r: &mut Reader<'_>,
    msg: &Message,
    f: &Field,
    sc: Scalar,
) -> Result<Value, ProtobufError> {
    Ok(match sc {
        Scalar::String => Value::String(go_string(r.len_delimited()?.0)),
        Scalar::Bytes => Value::String(base64(r.len_delimited()?.0)),
        Scalar::Bool => Value::Bool(r.varint()? != 0),
        Scalar::Int32 => Value::from(r.varint()? as i32),
        Scalar::Int64 => Value::from(r.varint()? as i64),
        Scalar::Uint32 => Value::from(r.varint()? as u32),
        Scalar::Uint64 => Value::from(r.varint()?),
        Scalar::Double | Scalar::Float => {
            let at = r.offset();
            let x = if sc == Scalar::Double {
                f64::from_bits(r.fixed64()?)
            } else {
                f64::from(f32::from_bits(r.fixed32()?))
            };
            Value::Number(
                Number::from_f64(x).ok_or_else(|| ProtobufError::InvalidValue {
                    message: msg.name.to_string(),
                    offset: at,
                    reason: format!("{} is {x}, which JSON cannot hold", field_label(f)),
                })?,
            )
        }
    })
}

/// One element of a repeated scalar field, or a packed run of them.
fn read_repeated_scalar(
    r: &mut Reader<'_>,
    msg: &Message,
    f: &Field,
    sc: Scalar,
    tag: Tag,
    items: &mut Vec<Value>,
) -> Result<(), ProtobufError> {
    let packable = !matches!(sc, Scalar::String | Scalar::Bytes);
    if packable && tag.wire == wire::LEN {
        let (buf, base) = r.len_delimited()?;
        let mut p = Reader::new(buf, base);
        while !p.at_end() {
            items.push(read_scalar(&mut p, msg, f, sc)?);
        }
        return Ok(());
    }
    expect_wire(msg, f, tag, sc.wire_type())?;
    items.push(read_scalar(r, msg, f, sc)?);
    Ok(())
}

/// Go's JSON encoder turns each invalid UTF-8 byte into U+FFFD.
pub(crate) fn go_string(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut out = String::with_capacity(b.len() + 8);
            let mut rest = b;
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        out.push_str(s);
                        break;
                    }
                    Err(e) => {
                        let good = e.valid_up_to();
                        // Safe: the prefix was just validated.
                        out.push_str(std::str::from_utf8(&rest[..good]).unwrap_or_default());
                        let bad = e.error_len().unwrap_or(rest.len() - good);
                        for _ in 0..bad {
                            out.push('\u{FFFD}');
                        }
                        rest = &rest[good + bad..];
                    }
                }
            }
            out
        }
    }
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`.
pub(crate) fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Unix seconds of Go's zero `time.Time` (0001-01-01T00:00:00Z).
const ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// `metav1.Time` / `MicroTime` JSON: null for the zero time, else RFC 3339
/// in UTC, with exactly six fractional digits for `MicroTime`.
fn time_json(seconds: i64, micros: Option<u32>) -> Value {
    if seconds == ZERO_TIME_UNIX && micros.unwrap_or(0) == 0 {
        return Value::Null;
    }
    Value::String(format_rfc3339(seconds, micros))
}

pub(crate) fn format_rfc3339(seconds: i64, micros: Option<u32>) -> String {
    let days = seconds.div_euclid(86_400);
    let sod = seconds.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let year = if y < 0 {
        format!("-{:04}", y.unsigned_abs())
    } else {
        format!("{y:04}")
    };
    let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    match micros {
        Some(us) => format!("{year}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z"),
        None => format!("{year}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Go's `time.Duration.String()`: "1h0m0s", "1.5s", "300ms", "0s".
pub(crate) fn go_duration(ns: i64) -> String {
    let neg = ns < 0;
    let mut u = ns.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        if u == 0 {
            return "0s".into();
        }
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (frac, whole) = frac_digits(u, prec);
        out.push_str(&whole.to_string());
        out.push_str(&frac);
        out.push_str(unit);
    } else {
        let (frac, secs) = frac_digits(u, 9);
        u = secs;
        let s = u % 60;
        u /= 60;
        let body = if u > 0 {
            let m = u % 60;
            u /= 60;
            if u > 0 {
                format!("{u}h{m}m{s}{frac}s")
            } else {
                format!("{m}m{s}{frac}s")
            }
        } else {
            format!("{s}{frac}s")
        };
        out.push_str(&body);
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// Splits `v` into v / 10^prec and its fraction as ".ddd" without trailing
/// zeros (empty when the fraction is zero), like Go's `fmtFrac`.
fn frac_digits(mut v: u64, prec: u32) -> (String, u64) {
    let mut digits = Vec::new();
    let mut print = false;
    for _ in 0..prec {
        let d = (v % 10) as u8;
        print = print || d != 0;
        if print {
            digits.push(b'0' + d);
        }
        v /= 10;
    }
    if !print {
        return (String::new(), v);
    }
    digits.push(b'.');
    digits.reverse();
    (String::from_utf8(digits).unwrap_or_default(), v)
}
