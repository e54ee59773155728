//! The CRI container log format, as kubelet and `crictl logs` read it.
//!
//! One record per line: `<RFC3339Nano UTC timestamp> <stdout|stderr> <F|P> <content>\n`.
//! `F` ends a line, `P` is a piece of one: a line longer than [`MAX_LOG_LINE`] is split into `P`
//! records followed by an `F`. Output that ends without a newline when the stream closes is
//! written as `P`, and a `\r` before the newline is dropped, as containerd does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest content of one record; containerd's default `max_container_log_line_size`.
pub const MAX_LOG_LINE: usize = 16 * 1024;

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Which container stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The container's stdout (and a pty's only output).
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl LogStream {
    /// The stream's name in the log format.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The timestamp as written.
    pub timestamp: String,
    /// The timestamp in nanoseconds since the Unix epoch.
    pub unix_nanos: i64,
    /// The stream the content came from.
    pub stream: LogStream,
    /// `true` for a `P` (partial) record, `false` for `F`.
    pub partial: bool,
    /// The content, without the record's newline.
    pub content: Vec<u8>,
}

impl LogRecord {
    /// The content as text (lossy for invalid UTF-8).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.content)
    }
}

/// Parses one log line (with or without its trailing newline); `None` when it is malformed.
pub fn parse_cri_log_line(line: impl AsRef<[u8]>) -> Option<LogRecord> {
    let line = line.as_ref();
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    // An empty full line is written as "<ts> stdout F " but tolerate a missing trailing space.
    let content = parts.next().unwrap_or_default().to_vec();
    Some(LogRecord {
        unix_nanos: parse_rfc3339_nano(timestamp)?,
        timestamp: timestamp.to_owned(),
        stream,
        partial,
        content,
    })
}

/// The current time in nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// Formats Unix nanoseconds as RFC 3339 in UTC with all nine fraction digits
/// (`2024-02-29T12:00:00.000000001Z`), which sorts as text and parses as Go's RFC3339Nano.
pub fn format_rfc3339_nano(unix_nanos: i64) -> String {
    let mut out = Vec::with_capacity(30);
    write_rfc3339_nano(&mut out, unix_nanos);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).expect("timestamp is ASCII")
}

/// Appends the [`format_rfc3339_nano`] form of `unix_nanos` to `out` without allocating.
pub(crate) fn write_rfc3339_nano(out: &mut Vec<u8>, unix_nanos: i64) {
    let secs = unix_nanos.div_euclid(NANOS_PER_SEC);
    let nanos = unix_nanos.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(SECS_PER_DAY);
    let secs_of_day = secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let mut digits = |value: i64, width: u32, sep: u8| {
        for i in (0..width).rev() {
            out.push(b'0' + (value / 10_i64.pow(i) % 10) as u8);
        }
        out.push(sep);
    };
    digits(year, 4, b'-');
    digits(month, 2, b'-');
    digits(day, 2, b'T');
    digits(secs_of_day / 3600, 2, b':');
    digits(secs_of_day / 60 % 60, 2, b':');
    digits(secs_of_day % 60, 2, b'.');
    digits(nanos, 9, b'Z');
}

/// Parses an RFC 3339 timestamp (any fraction length up to nine digits, `Z` or a `±hh:mm`
/// offset) into Unix nanoseconds.
pub fn parse_rfc3339_nano(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0_i64, |acc, d| acc * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut pos = 19;
    let mut nanos = 0_i64;
    if b[pos] == b'.' {
        let start = pos + 1;
        let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        let len = end - start;
        if len == 0 || len > 9 {
            return None;
        }
        nanos = num(start..end)? * 10_i64.pow((9 - len) as u32);
        pos = end;
    }
    let offset_secs = match b.get(pos..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(pos + 1..pos + 3)?, num(pos + 4..pos + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second
            - offset_secs;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Cuts one stream's bytes into log records, holding at most one unfinished line.
///
/// The buffer holds one byte more than [`MAX_LOG_LINE`] so that a line of exactly
/// `MAX_LOG_LINE` bytes followed by its newline is one `F` record, as containerd writes it.
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    len: usize,
}

impl LineSplitter {
    pub(crate) fn new() -> Self {
        // Untouched capacity costs address space, not RSS.
        LineSplitter {
            buf: vec![0; MAX_LOG_LINE + 1],
            len: 0,
        }
    }

    /// The free space to read new bytes into; never empty.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Takes `n` bytes just read into [`spare`](Self::spare), emitting `(content, partial)` for
    /// every finished line and for a piece of an over-long one.
    pub(crate) fn commit(&mut self, n: usize, mut emit: impl FnMut(&[u8], bool)) {
        let old = self.len;
        self.len += n;
        let mut start = 0;
        // Bytes before `old` were already scanned: they hold no newline.
        while let Some(i) = self.buf[old.max(start)..self.len]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = old.max(start) + i;
            let line = &self.buf[start..end];
            emit(line.strip_suffix(b"\r").unwrap_or(line), false);
            start = end + 1;
        }
        if self.len - start > MAX_LOG_LINE {
            emit(&self.buf[start..start + MAX_LOG_LINE], true);
            start += MAX_LOG_LINE;
        }
        self.buf.copy_within(start..self.len, 0);
        self.len -= start;
    }

    /// Emits what is left as a partial record; called when the stream ends.
    pub(crate) fn flush(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if self.len > 0 {
            emit(&self.buf[..self.len], true);
            self.len = 0;
        }
    }
}

/// The container's log file: records are appended with one `write` each, so a reader never
/// sees half a record, and the file can be swapped for a new one after rotation.
pub(crate) struct LogFile {
    path: PathBuf,
    file: File,
    record: Vec<u8>,
}

impl LogFile {
    /// Opens (creating it and its parent directory) the log file at `path`.
    pub(crate) fn open(path: &Path) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            file: open_append(path)?,
            record: Vec::new(),
        })
    }

    /// Opens the file at the log path again (after the old one was renamed by log rotation).
    /// On failure the old file stays in use, so no output is lost.
    pub(crate) fn reopen(&mut self) -> std::io::Result<()> {
        self.file = open_append(&self.path)?;
        Ok(())
    }

    /// Appends one record stamped with the current time. Write errors are returned so the
    /// caller can ignore them and keep draining the container's output.
    pub(crate) fn write(
        &mut self,
        stream: LogStream,
        partial: bool,
        content: &[u8],
    ) -> std::io::Result<()> {
        let rec = &mut self.record;
        rec.clear();
        write_rfc3339_nano(rec, now_unix_nanos());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_str().as_bytes());
        rec.extend_from_slice(if partial { b" P " } else { b" F " });
        rec.extend_from_slice(content);
        rec.push(b'\n');
        self.file.write_all(rec)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339_nano(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(format_rfc3339_nano(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            format_rfc3339_nano(1_709_208_000 * NANOS_PER_SEC + 1),
            "2024-02-29T12:00:00.000000001Z"
        );
        assert_eq!(
            format_rfc3339_nano(951_782_400 * NANOS_PER_SEC),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn parse_inverts_format() {
        // A cheap LCG walks instants across centuries and leap days.
        let mut x: i64 = 12345;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let t = x % (8_000_000_000 * NANOS_PER_SEC);
            let s = format_rfc3339_nano(t);
            assert_eq!(parse_rfc3339_nano(&s), Some(t), "{s}");
        }
    }

    #[test]
    fn parses_go_forms() {
        // Go's RFC3339Nano trims trailing zeros and may carry a local offset.
        assert_eq!(
            parse_rfc3339_nano("2023-11-14T22:13:20.1234Z"),
            Some(1_700_000_000_123_400_000)
        );
        assert_eq!(
            parse_rfc3339_nano("2023-11-14T22:13:20Z"),
            Some(1_700_000_000 * NANOS_PER_SEC)
        );
        assert_eq!(
            parse_rfc3339_nano("2023-11-15T00:13:20.5+02:00"),
            Some(1_700_000_000_500_000_000)
        );
        for bad in [
            "",
            "2023-11-14 22:13:20Z",
            "2023-02-29T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567890Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+0200",
        ] {
            assert_eq!(parse_rfc3339_nano(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_records() {
        let r = parse_cri_log_line("2023-11-14T22:13:20.123456789Z stderr P a b  c\n").unwrap();
        assert_eq!(r.stream, LogStream::Stderr);
        assert!(r.partial);
        assert_eq!(r.text(), "a b  c");
        assert_eq!(r.unix_nanos, 1_700_000_000_123_456_789);
        let empty = parse_cri_log_line("2023-11-14T22:13:20.123456789Z stdout F ").unwrap();
        assert!(!empty.partial && empty.content.is_empty());
        assert!(parse_cri_log_line("2023-11-14T22:13:20Z stdin F x").is_none());
        assert!(parse_cri_log_line("2023-11-14T22:13:20Z stdout X x").is_none());
        assert!(parse_cri_log_line("yesterday stdout F x").is_none());
    }

    /// Feeds `chunks` through a splitter and returns the records, flushed at the end.
    fn split(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for chunk in chunks {
            let mut chunk = *chunk;
            while !chunk.is_empty() {
                let spare = s.spare();
                let n = spare.len().min(chunk.len());
                spare[..n].copy_from_slice(&chunk[..n]);
                chunk = &chunk[n..];
                s.commit(n, |c, p| out.push((c.to_vec(), p)));
            }
        }
        s.flush(|c, p| out.push((c.to_vec(), p)));
        out
    }

    #[test]
    fn splits_lines_across_reads() {
        let got = split(&[b"one\ntw", b"o\r\n\nthr", b"ee"]);
        let want: Vec<(Vec<u8>, bool)> = vec![
            (b"one".to_vec(), false),
            (b"two".to_vec(), false),
            (b"".to_vec(), false),
            (b"three".to_vec(), true),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn splits_long_lines_like_containerd() {
        let exact = [vec![b'x'; MAX_LOG_LINE], b"\n".to_vec()].concat();
        assert_eq!(split(&[&exact]), vec![(vec![b'x'; MAX_LOG_LINE], false)]);

        let long = [vec![b'y'; 2 * MAX_LOG_LINE + 5], b"\nz".to_vec()].concat();
        let got = split(&[&long[..100], &long[100..]]);
        assert_eq!(
            got,
            vec![
                (vec![b'y'; MAX_LOG_LINE], true),
                (vec![b'y'; MAX_LOG_LINE], true),
                (vec![b'y'; 5], false),
                (b"z".to_vec(), true),
            ]
        );
    }

    #[test]
    fn log_file_reopens_after_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/c.log");
        let mut log = LogFile::open(&path).unwrap();
        log.write(LogStream::Stdout, false, b"old").unwrap();
        std::fs::rename(&path, dir.path().join("sub/c.log.1")).unwrap();
        log.write(LogStream::Stdout, false, b"still old").unwrap();
        log.reopen().unwrap();
        log.write(LogStream::Stderr, true, b"new").unwrap();
        let old = std::fs::read_to_string(dir.path().join("sub/c.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 2);
        let rec = parse_cri_log_line(new.lines().next().unwrap()).unwrap();
        assert_eq!(
            (rec.stream, rec.partial, rec.text().as_ref()),
            (LogStream::Stderr, true, "new")
        );
    }
}
