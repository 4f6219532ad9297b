//! Protobuf wire format reading: varints, fixed 32/64-bit values,
//! length-delimited fields and skipping of unknown fields.

use super::ProtobufError;

/// Wire types (the low three bits of a field tag).
pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const START_GROUP: u8 = 3;
pub(crate) const END_GROUP: u8 = 4;
pub(crate) const FIXED32: u8 = 5;

pub(crate) fn wire_type_name(w: u8) -> &'static str {
    match w {
        VARINT => "varint",
        FIXED64 => "64-bit",
        LEN => "length-delimited",
        START_GROUP => "start-group",
        END_GROUP => "end-group",
        FIXED32 => "32-bit",
        _ => "invalid",
    }
}

/// A cursor over one message's bytes. `base` is the offset of `buf[0]` in
/// the whole input, so errors report absolute offsets.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

/// One field tag read from the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tag {
    pub number: u32,
    pub wire: u8,
    /// Absolute offset of the tag.
    pub offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    /// Absolute offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, ProtobufError> {
        let start = self.offset();
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(ProtobufError::TruncatedVarint { offset: start });
            };
            self.pos += 1;
            // Like Go's decoder, bits past 64 are dropped.
            value |= u64::from(b & 0x7f).wrapping_shl(7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtobufError::VarintOverflow { offset: start })
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(ProtobufError::Truncated {
                offset: self.offset(),
                need: n,
                left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn fixed64(&mut self) -> Result<u64, ProtobufError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn fixed32(&mut self) -> Result<u32, ProtobufError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }

    /// A length-delimited payload (after its tag), with its absolute offset.
    pub(crate) fn len_delimited(&mut self) -> Result<(&'a [u8], usize), ProtobufError> {
        let at = self.offset();
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| ProtobufError::BadLength {
            offset: at,
            length: n,
        })?;
        if n > self.buf.len() - self.pos {
            return Err(ProtobufError::Truncated {
                offset: self.offset(),
                need: n,
                left: self.buf.len() - self.pos,
            });
        }
        let off = self.offset();
        Ok((self.take(n)?, off))
    }

    /// The next field tag, or `None` at the end of the message.
    pub(crate) fn tag(&mut self) -> Result<Option<Tag>, ProtobufError> {
        if self.at_end() {
            return Ok(None);
        }
        let offset = self.offset();
        let t = self.varint()?;
        let wire = (t & 7) as u8;
        let number = t >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(ProtobufError::BadFieldNumber { offset, number });
        }
        if wire > FIXED32 {
            return Err(ProtobufError::BadWireType { offset, wire });
        }
        Ok(Some(Tag {
            number: number as u32,
            wire,
            offset,
        }))
    }

    /// Skips the value of a field this decoder does not know.
    pub(crate) fn skip(&mut self, tag: Tag, depth: usize) -> Result<(), ProtobufError> {
        match tag.wire {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.take(8)?;
            }
            LEN => {
                self.len_delimited()?;
            }
            FIXED32 => {
                self.take(4)?;
            }
            START_GROUP => {
                if depth >= super::MAX_DEPTH {
                    return Err(ProtobufError::TooDeep {
                        limit: super::MAX_DEPTH,
                    });
                }
                loop {
                    let Some(t) = self.tag()? else {
                        return Err(ProtobufError::UnterminatedGroup { offset: tag.offset });
                    };
                    if t.wire == END_GROUP {
                        if t.number != tag.number {
                            return Err(ProtobufError::UnexpectedEndGroup { offset: t.offset });
                        }
                        break;
                    }
                    self.skip(t, depth + 1)?;
                }
            }
            _ => return Err(ProtobufError::UnexpectedEndGroup { offset: tag.offset }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut r = Reader::new(&[0x96, 0x01, 0x00, 0x7f], 0);
        assert_eq!(r.varint().unwrap(), 150);
        assert_eq!(r.varint().unwrap(), 0);
        assert_eq!(r.varint().unwrap(), 127);
        assert!(r.at_end());
        // -1 as int32/int64 is ten bytes.
        let neg = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&neg, 0).varint().unwrap() as i64, -1);
        let long = [0xff; 11];
        assert!(matches!(
            Reader::new(&long, 5).varint(),
            Err(ProtobufError::VarintOverflow { offset: 5 })
        ));
        assert!(matches!(
            Reader::new(&[0x80, 0x80], 3).varint(),
            Err(ProtobufError::TruncatedVarint { offset: 3 })
        ));
    }

    #[test]
    fn skips_unknown_fields_including_groups() {
        // field 1 varint, field 2 fixed64, field 3 len, group 4 {field 5
        // fixed32}, end group 4, then field 6 varint.
        let buf = [
            0x08, 0x01, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x1a, 0x02, b'h', b'i', 0x23, 0x2d, 1, 2, 3,
            4, 0x24, 0x30, 0x07,
        ];
        let mut r = Reader::new(&buf, 0);
        let mut seen = vec![];
        while let Some(t) = r.tag().unwrap() {
            seen.push(t.number);
            if t.number == 6 {
                assert_eq!(r.varint().unwrap(), 7);
            } else {
                r.skip(t, 0).unwrap();
            }
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 6]);
    }

    #[test]
    fn bad_tags() {
        assert!(matches!(
            Reader::new(&[0x00], 0).tag(),
            Err(ProtobufError::BadFieldNumber { .. })
        ));
        assert!(matches!(
            Reader::new(&[0x0e], 0).tag(),
            Err(ProtobufError::BadWireType { wire: 6, .. })
        ));
        let mut r = Reader::new(&[0x0a, 0x05, 1, 2], 0);
        let t = r.tag().unwrap().unwrap();
        assert!(matches!(
            r.skip(t, 0),
            Err(ProtobufError::Truncated {
                need: 5,
                left: 2,
                ..
            })
        ));
    }
}
