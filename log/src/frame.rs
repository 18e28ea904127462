//! Frames: a record body behind its length and checksum, as segments hold
//! them, written into a caller's buffer and read back from a file.

use crate::LogError;
use crate::record::{NewRecord, body_timestamp, encode_body};
use std::io::{self, Read};

/// Bytes before a record's body: its length and its checksum.
pub(crate) const FRAME_HEADER: usize = 8;

/// Appends `record` to `out` as a frame; refuses bodies over `max_body`.
pub(crate) fn put_frame(
    record: &NewRecord<'_>,
    out: &mut Vec<u8>,
    max_body: usize,
) -> Result<(), LogError> {
    let at = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    if let Err(e) = encode_body(record, out) {
        out.truncate(at);
        return Err(LogError::Encode(e.to_string()));
    }
    let body = &out[at + FRAME_HEADER..];
    if body.len() > max_body {
        let size = body.len();
        out.truncate(at);
        return Err(LogError::RecordTooLarge {
            size,
            limit: max_body,
        });
    }
    let len = (body.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(body).to_le_bytes();
    out[at..at + 4].copy_from_slice(&len);
    out[at + 4..at + FRAME_HEADER].copy_from_slice(&crc);
    Ok(())
}

/// A frame read back.
pub(crate) struct Frame {
    pub(crate) body: Vec<u8>,
    /// Bytes the frame takes on disk.
    pub(crate) len: u64,
}

/// Why a frame could not be read.
pub(crate) enum FrameError {
    Io(io::Error),
    /// The frame at this byte is incomplete or fails its checksum.
    Torn(String),
}

/// Fills `buf` from `reader`; `Ok(false)` at a clean end before the first byte.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> Result<bool, io::Error> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads a frame's header: (body length, checksum); `None` at a clean end.
fn read_header(
    reader: &mut impl Read,
    max_body: usize,
    at: u64,
) -> Result<Option<(usize, u32)>, FrameError> {
    let mut header = [0u8; FRAME_HEADER];
    match fill(reader, &mut header) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Torn(format!(
                "a record header at byte {at} is cut short"
            )));
        }
        Err(e) => return Err(FrameError::Io(e)),
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if len > max_body {
        return Err(FrameError::Torn(format!(
            "a record at byte {at} claims {len} bytes, over the limit"
        )));
    }
    Ok(Some((len, u32::from_le_bytes([c0, c1, c2, c3]))))
}

/// Reads the frame at the reader's position (`at` bytes into the file); `None` at a clean end.
pub(crate) fn read_frame(
    reader: &mut impl Read,
    max_body: usize,
    at: u64,
) -> Result<Option<Frame>, FrameError> {
    let Some((len, crc)) = read_header(reader, max_body, at)? else {
        return Ok(None);
    };
    let mut body = vec![0u8; len];
    if let Err(e) = reader.read_exact(&mut body) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Err(FrameError::Torn(format!(
                "the record at byte {at} is cut short"
            ))),
            _ => Err(FrameError::Io(e)),
        };
    }
    if crc32fast::hash(&body) != crc {
        return Err(FrameError::Torn(format!(
            "the record at byte {at} fails its checksum"
        )));
    }
    Ok(Some(Frame {
        body,
        len: (FRAME_HEADER + len) as u64,
    }))
}

/// Reads only the timestamp of the frame at the reader's position and skips its
/// body: (timestamp, bytes the frame takes). The checksum is not checked.
pub(crate) fn skim_frame(
    reader: &mut io::BufReader<std::fs::File>,
    max_body: usize,
    at: u64,
) -> Result<Option<(i64, u64)>, FrameError> {
    let Some((len, _)) = read_header(reader, max_body, at)? else {
        return Ok(None);
    };
    // A timestamp is a varint of at most 10 bytes.
    let mut start = [0u8; 10];
    let take = len.min(start.len());
    if let Err(e) = reader.read_exact(&mut start[..take]) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Err(FrameError::Torn(format!(
                "the record at byte {at} is cut short"
            ))),
            _ => Err(FrameError::Io(e)),
        };
    }
    let timestamp = body_timestamp(&start[..take])
        .ok_or_else(|| FrameError::Torn(format!("the record at byte {at} has no timestamp")))?;
    // Within the buffer where it can, so that skimming reads the file once.
    reader
        .seek_relative((len - take) as i64)
        .map_err(FrameError::Io)?;
    Ok(Some((timestamp, (FRAME_HEADER + len) as u64)))
}
