//! Bounds on what one layer may expand to.
//!
//! A few megabytes of gzip can decompress to terabytes (a "gzip bomb"), and a tar header can
//! claim any size. Every byte the tar reader consumes passes through a [`MeteredReader`], which
//! refuses to go past the configured total, and past [`MAX_METADATA_BYTES`] while the reader is
//! between two entries: the `tar` crate buffers GNU long names and PAX records in memory, so an
//! unbounded one would be a memory bomb rather than a disk bomb.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// How much one layer may unpack to. Exceeding either bound fails the unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes of the uncompressed tar stream (headers, content, padding, trailer).
    pub max_bytes: u64,
    /// Tar entries (files, directories, links, whiteouts…).
    pub max_entries: u64,
}

/// 16 GiB: bigger than any layer a node should run, small enough to stop a bomb before it
/// fills an ordinary disk.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 16 << 30;
/// One million entries: an order of magnitude above large distribution images.
pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 1_000_000;
/// Bytes the tar reader may consume while looking for the next entry: its header, GNU long
/// name and link records and PAX records. Paths are at most 4 KiB and xattrs 64 KiB each, so
/// 1 MiB is generous; the bound keeps what the `tar` crate buffers small.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: DEFAULT_MAX_LAYER_BYTES,
            max_entries: DEFAULT_MAX_LAYER_ENTRIES,
        }
    }
}

/// Which bound a stream crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Breach {
    /// The whole stream is over [`UnpackLimits::max_bytes`].
    Bytes,
    /// One entry's headers are over [`MAX_METADATA_BYTES`].
    Metadata,
}

/// Byte counts shared between the reader and the extraction loop.
#[derive(Debug, Default)]
struct Counters {
    total: Cell<u64>,
    /// `Some(bytes so far)` while the tar reader looks for the next entry.
    metadata: Cell<Option<u64>>,
    breach: Cell<Option<Breach>>,
}

/// The extraction loop's view of the counts.
#[derive(Debug, Clone)]
pub(super) struct Meter {
    max_bytes: u64,
    counters: Rc<Counters>,
}

impl Meter {
    pub(super) fn new(max_bytes: u64) -> Self {
        Meter {
            max_bytes,
            counters: Rc::default(),
        }
    }

    /// Wraps the decompressed stream so every byte read is counted against the limits.
    pub(super) fn reader<R: Read>(&self, inner: R) -> MeteredReader<R> {
        MeteredReader {
            inner,
            meter: self.clone(),
        }
    }

    /// From now on, reads are an entry's headers (bounded by [`MAX_METADATA_BYTES`]).
    pub(super) fn start_metadata(&self) {
        self.counters.metadata.set(Some(0));
    }

    /// From now on, reads are entry content (bounded only by the total).
    pub(super) fn start_content(&self) {
        self.counters.metadata.set(None);
    }

    /// Bytes the stream may still yield.
    pub(super) fn remaining(&self) -> u64 {
        self.max_bytes.saturating_sub(self.counters.total.get())
    }

    /// The bound crossed, if any: after a breach every later error is a consequence of it.
    pub(super) fn breach(&self) -> Option<Breach> {
        self.counters.breach.get()
    }
}

/// Counts the bytes passing through and fails once a bound is crossed.
#[derive(Debug)]
pub(super) struct MeteredReader<R> {
    inner: R,
    meter: Meter,
}

impl<R: Read> Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let counters = &self.meter.counters;
        // Ask for at most one byte past each bound: enough to see it crossed, and no bomb is
        // decompressed further than that.
        let mut room = self.meter.remaining();
        if let Some(used) = counters.metadata.get() {
            room = room.min(MAX_METADATA_BYTES.saturating_sub(used));
        }
        let want = usize::try_from(room.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        let total = counters.total.get() + n as u64;
        counters.total.set(total);
        if total > self.meter.max_bytes {
            counters.breach.set(Some(Breach::Bytes));
            return Err(io::Error::other("layer size limit exceeded"));
        }
        if let Some(used) = counters.metadata.get() {
            let used = used + n as u64;
            counters.metadata.set(Some(used));
            if used > MAX_METADATA_BYTES {
                counters.breach.set(Some(Breach::Metadata));
                return Err(io::Error::other("tar header size limit exceeded"));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endless stream of zeros that counts what was asked of it.
    struct Zeros {
        produced: u64,
    }

    impl Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(0);
            self.produced += buf.len() as u64;
            Ok(buf.len())
        }
    }

    #[test]
    fn the_total_bound_stops_the_stream_one_byte_past_it() {
        let meter = Meter::new(10_000);
        let mut reader = meter.reader(Zeros { produced: 0 });
        let err = io::copy(&mut reader, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert_eq!(meter.breach(), Some(Breach::Bytes));
        assert_eq!(
            reader.inner.produced, 10_001,
            "nothing decompressed past the bound"
        );
        assert_eq!(meter.remaining(), 0);
    }

    #[test]
    fn a_stream_within_the_bound_reads_whole() {
        let meter = Meter::new(100);
        let mut out = Vec::new();
        meter.reader(&[7u8; 100][..]).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 100);
        assert_eq!(meter.breach(), None);
        assert_eq!(meter.remaining(), 0);
    }

    #[test]
    fn metadata_is_bounded_only_between_entries() {
        let meter = Meter::new(u64::MAX);
        let mut reader = meter.reader(Zeros { produced: 0 });
        let mut chunk = vec![0u8; 64 * 1024];
        // Content: far more than the metadata bound is fine.
        meter.start_content();
        for _ in 0..(2 * MAX_METADATA_BYTES / chunk.len() as u64) {
            reader.read_exact(&mut chunk).unwrap();
        }
        meter.start_metadata();
        let err = io::copy(&mut reader, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert_eq!(meter.breach(), Some(Breach::Metadata));
        assert_eq!(reader.inner.produced, 3 * MAX_METADATA_BYTES + 1);
    }
}
