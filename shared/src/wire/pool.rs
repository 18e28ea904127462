//! Buffers kept for reuse across batches: decoded payloads here, request
//! frames at the aggregator.

/// Byte buffers kept for reuse: a frame or payload is about half a megabyte, and a
/// fresh allocation of that size costs page faults and zeroing every time.
#[derive(Debug)]
pub struct BufferPool {
    kept: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Buffers kept, at most.
    most: usize,
    /// The largest buffer kept; a larger one is let go.
    largest: usize,
}

impl BufferPool {
    /// A pool keeping up to `most` buffers of at most `largest` bytes.
    pub const fn new(most: usize, largest: usize) -> BufferPool {
        BufferPool {
            kept: std::sync::Mutex::new(Vec::new()),
            most,
            largest,
        }
    }

    /// An empty buffer: a kept one when there is one.
    pub fn take(&self) -> Vec<u8> {
        self.kept
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_default()
    }

    /// Gives `buffer` back for reuse (emptied), unless the pool is full or it is too large.
    pub fn put(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > self.largest {
            return;
        }
        buffer.clear();
        if let Ok(mut kept) = self.kept.lock()
            && kept.len() < self.most
        {
            kept.push(buffer);
        }
    }
}

/// Decoded payloads (a batch of 500 events of 1 KB is about half a megabyte). An
/// aggregator under load holds a dozen or more batches at once; with eight kept, the
/// rest were fresh allocations, and ingest was slower than copying each event.
pub(super) static PAYLOADS: BufferPool = BufferPool::new(32, 2 << 20);

/// A payload buffer that goes back to [`PAYLOADS`] once the last event sharing it is dropped.
pub(super) struct Payload(pub(super) Vec<u8>);

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        PAYLOADS.put(std::mem::take(&mut self.0));
    }
}
