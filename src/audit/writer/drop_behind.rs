//! Drop-behind: what the writer wrote more than `audit.page_cache_bytes` ago is handed to the
//! kernel to write back and then dropped from the page cache.
//!
//! An audit file is written once and read back rarely (a query, `audit verify`, a tailer that
//! fell behind), so keeping it cached buys little and costs three ways: the cache grows with
//! the trail and evicts pages that are read (charged, in a container, to the proxy's memory
//! cgroup); the writeback of everything dirty comes in one burst every 30 s; and every new
//! page is a fresh page of memory. That last one dominated the audit's cost on a fresh virtual
//! machine, whose memory the host backs on first touch: copying the lines into never-used page
//! cache took a fifth of the proxy's CPU under `redis-benchmark -P 16` (`docs/benchmarks.md`).
//! Pages dropped behind are reused for the next writes instead.

use std::fs::File;
use std::num::NonZeroU64;

/// The writer's drop-behind state for the active file.
#[derive(Debug)]
pub(super) struct DropBehind {
    /// Bytes at the end of the file left in the page cache (0: the kernel decides).
    keep: u64,
    /// How far the file grows between two advices.
    step: u64,
    /// The file's size at which the next advice is given.
    next_at: u64,
}

impl DropBehind {
    pub(super) fn new(keep: u64) -> Self {
        let step = (keep / 4).max(64 * 1024);
        Self { keep, step, next_at: keep.saturating_add(step) }
    }

    /// After a write that left `file` `size` bytes long: past each `step`, advises the kernel
    /// that everything but the last `keep` bytes will not be needed. Dirty pages are then
    /// written back (without waiting) and dropped at a later advice; clean ones are dropped.
    pub(super) fn wrote(&mut self, file: &File, size: u64) {
        if self.keep == 0 || size < self.next_at {
            return;
        }
        self.next_at = size.saturating_add(self.step);
        if let Some(behind) = NonZeroU64::new(size - self.keep) {
            advise_dont_need(file, behind);
        }
    }

    /// The active file was rotated: `closed` (`size` bytes) will not be written again.
    pub(super) fn rotated(&mut self, closed: &File, size: u64) {
        if self.keep == 0 {
            return;
        }
        if let Some(size) = NonZeroU64::new(size) {
            advise_dont_need(closed, size);
        }
        self.next_at = self.keep.saturating_add(self.step);
    }
}

/// Best effort: a file system that ignores the advice keeps its pages as before.
fn advise_dont_need(file: &File, len: NonZeroU64) {
    if let Err(error) = rustix::fs::fadvise(file, 0, Some(len), rustix::fs::Advice::DontNeed) {
        tracing::debug!(%error, "posix_fadvise(DONTNEED) on an audit file failed");
    }
}
