//! Dropping clean code pages: what an idle process keeps resident of its binary.
//!
//! Used by the monitor (one per container, so its idle size is multiplied by the number of
//! containers) and by skiffd after an image pull (the registry, TLS and unpacking code runs
//! rarely but would otherwise stay resident for the daemon's life).

/// The read-only, file-backed mappings of this process (code and constants) whose every
/// resident page is still a clean copy of the file, found once after start-up.
///
/// Code that ran once or now and then (start-up, control requests, a pull) stays mapped after
/// it ran; [`CleanPages::release`] drops it and the next event faults back in only what it
/// uses, from the page cache. Mappings with anonymous (copy-on-write) pages, such as the
/// relocated RELRO segment, are left alone: dropping those would lose the relocations.
pub struct CleanPages {
    ranges: Vec<(usize, usize)>,
}

impl CleanPages {
    /// Reads `/proc/self/smaps` for the mappings that are safe to drop.
    pub fn find() -> CleanPages {
        let ranges = std::fs::read_to_string("/proc/self/smaps")
            .map(|smaps| clean_read_only_ranges(&smaps))
            .unwrap_or_default();
        CleanPages { ranges }
    }

    /// Drops the resident pages of the mappings found; the kernel re-reads them from the page
    /// cache on next use.
    pub fn release(&self) {
        for &(start, end) in &self.ranges {
            // SAFETY: a private, read-only file mapping of this process with no anonymous
            // pages (checked by `find`): MADV_DONTNEED only discards clean copies of the file.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The `start..end` ranges in an smaps text of private read-only mappings of files (executable
/// or not) whose `Anonymous:` count is zero.
fn clean_read_only_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    // The mapping being read: its range, if it is a candidate.
    let mut candidate = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some(anon) = line.strip_prefix("Anonymous:") {
            let clean = anon.trim() == "0 kB";
            if let (true, Some(range)) = (clean, candidate.take()) {
                ranges.push(range);
            }
            continue;
        }
        if first.ends_with(':') {
            // Another field of the current mapping.
            continue;
        }
        // A mapping header: "start-end perms offset dev inode [path]".
        let perms = fields.next().unwrap_or("");
        let inode = fields.nth(2).unwrap_or("0");
        let path = fields.next().unwrap_or("");
        candidate = None;
        // inode 0: anonymous, [heap], [stack], [vdso], [vvar]... never file pages.
        if !matches!(perms, "r-xp" | "r--p") || inode == "0" || path.starts_with('[') {
            continue;
        }
        let Some((start, end)) = first.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) {
            candidate = Some((start, end));
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_released() {
        let smaps = "\
00400000-00410000 r--p 00000000 fe:01 123 /usr/bin/skiff-monitor
Size:                 64 kB
Anonymous:             0 kB
00410000-00500000 r-xp 00010000 fe:01 123 /usr/bin/skiff-monitor
Anonymous:             0 kB
00500000-00510000 r--p 00100000 fe:01 123 /usr/bin/skiff-monitor
Anonymous:            36 kB
00510000-00520000 rw-p 00110000 fe:01 123 /usr/bin/skiff-monitor
Anonymous:            16 kB
00600000-00700000 rw-p 00000000 00:00 0 [heap]
Anonymous:            52 kB
7ffc0000-7ffc2000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_read_only_ranges(smaps),
            vec![(0x400000, 0x410000), (0x410000, 0x500000)]
        );
    }

    #[test]
    fn the_code_of_this_process_is_found_and_runs_again_after_release() {
        let pages = CleanPages::find();
        let code = clean_read_only_ranges as *const () as usize;
        assert!(
            pages
                .ranges
                .iter()
                .any(|&(start, end)| (start..end).contains(&code)),
            "the mapping holding {code:#x} is not among {:x?}",
            pages.ranges
        );
        pages.release();
        // The released code faults back in from the file and still gives the same answer.
        let smaps = "00400000-00410000 r-xp 00000000 fe:01 1 /bin/x\nAnonymous: 0 kB\n";
        assert_eq!(clean_read_only_ranges(smaps), vec![(0x400000, 0x410000)]);
    }
}
