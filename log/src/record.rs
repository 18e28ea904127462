//! Records, and their bodies in postcard: what a caller appends, and what a
//! reader gets back.

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_bytes::{ByteBuf, Bytes};

/// A record to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Record time, Unix milliseconds (an event's `meta.dt`).
    pub timestamp_ms: i64,
    /// Message key.
    pub key: Option<&'a [u8]>,
    /// Headers, as Kafka carries them.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The payload.
    pub value: &'a [u8],
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Position in its topic, from 0.
    pub offset: u64,
    /// Record time, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload.
    pub value: Vec<u8>,
}

impl LogRecord {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Header values go out as postcard bytes (a length, then the bytes at once),
/// not as a sequence of single bytes.
struct Headers<'a>(&'a [(&'a str, &'a [u8])]);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (name, value) in self.0 {
            seq.serialize_element(&(name, Bytes::new(value)))?;
        }
        seq.end()
    }
}

impl Serialize for NewRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut body = s.serialize_struct("Record", 4)?;
        body.serialize_field("timestamp_ms", &self.timestamp_ms)?;
        body.serialize_field("key", &self.key.map(Bytes::new))?;
        body.serialize_field("headers", &Headers(self.headers))?;
        body.serialize_field("value", Bytes::new(self.value))?;
        body.end()
    }
}

/// A body as it is read: the same four fields, owned.
#[derive(Deserialize)]
struct Body {
    timestamp_ms: i64,
    key: Option<ByteBuf>,
    headers: Vec<(String, ByteBuf)>,
    value: ByteBuf,
}

/// Appends the postcard body of `record` to `out`.
pub(crate) fn encode_body(record: &NewRecord<'_>, out: &mut Vec<u8>) -> postcard::Result<()> {
    postcard::serialize_with_flavor(record, AppendTo(out))
}

/// postcard output appended to a caller's `Vec`, byte strings copied whole
/// (postcard's own `Vec` output goes through `Extend`, an iterator per piece).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Lengths come as varints of a byte or a few: pushed, not handed to `memcpy`,
        // whose call costs more than the copy: 6% of an append of 1 KB records, counted
        // with callgrind.
        if data.len() <= 4 {
            data.iter().for_each(|&b| self.0.push(b));
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The record a body holds, at `offset` of its topic.
pub(crate) fn decode_body(body: &[u8], offset: u64) -> postcard::Result<LogRecord> {
    let b: Body = postcard::from_bytes(body)?;
    Ok(LogRecord {
        offset,
        timestamp_ms: b.timestamp_ms,
        key: b.key.map(ByteBuf::into_vec),
        headers: b
            .headers
            .into_iter()
            .map(|(k, v)| (k, v.into_vec()))
            .collect(),
        value: b.value.into_vec(),
    })
}

/// The timestamp a body starts with, read without decoding the rest.
pub(crate) fn body_timestamp(body_start: &[u8]) -> Option<i64> {
    let (ts, _): (i64, _) = postcard::take_from_bytes(body_start).ok()?;
    Some(ts)
}

/// The bytes of `record`'s body.
pub(crate) fn body_len(record: &NewRecord<'_>) -> usize {
    // Counting cannot fail: every field is plain data.
    postcard::experimental::serialized_size(record).unwrap_or(usize::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postcard's varint of `n`, written out by hand, to pin the format.
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    #[test]
    fn bodies_keep_the_documented_layout_and_read_back() {
        let long = vec![7u8; 300];
        let headers: [(&str, &[u8]); 2] = [("schema_uri", b"/a/b/1.0.0"), ("event_id", &long)];
        for (timestamp_ms, key, headers, value) in [
            (0i64, None, &headers[..0], &b""[..]),
            (-1, Some(&b"k"[..]), &headers[..1], &b"{}"[..]),
            (1_795_780_800_000, Some(&long[..]), &headers[..], &long[..]),
            (i64::MIN, None, &headers[..], &b"x"[..]),
            (i64::MAX, Some(&b""[..]), &headers[..], &long[..200]),
        ] {
            let r = NewRecord {
                timestamp_ms,
                key,
                headers,
                value,
            };
            let mut body = Vec::new();
            encode_body(&r, &mut body).unwrap();
            // The layout of the crate's top comment: zigzag timestamp, optional key,
            // counted headers of (string, bytes), then the value, lengths as varints.
            let mut want = Vec::new();
            varint(
                ((timestamp_ms << 1) ^ (timestamp_ms >> 63)) as u64,
                &mut want,
            );
            match key {
                None => want.push(0),
                Some(k) => {
                    want.push(1);
                    varint(k.len() as u64, &mut want);
                    want.extend_from_slice(k);
                }
            }
            varint(headers.len() as u64, &mut want);
            for (k, v) in headers {
                varint(k.len() as u64, &mut want);
                want.extend_from_slice(k.as_bytes());
                varint(v.len() as u64, &mut want);
                want.extend_from_slice(v);
            }
            varint(value.len() as u64, &mut want);
            want.extend_from_slice(value);
            assert_eq!(body, want);
            assert_eq!(body_len(&r), body.len());
            assert_eq!(body_timestamp(&body), Some(timestamp_ms));
            let back = decode_body(&body, 9).unwrap();
            assert_eq!(back.offset, 9);
            assert_eq!(back.timestamp_ms, timestamp_ms);
            assert_eq!(back.key.as_deref(), key);
            assert_eq!(back.headers.len(), headers.len());
            assert_eq!(back.value, value);
        }
    }
}
