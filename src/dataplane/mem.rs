//! Memory hints for the shard tables: transparent huge pages and prefetch.
//!
//! ## Huge pages
//!
//! A connection table of millions of entries is read at random addresses;
//! with 4 KiB pages almost every lookup also misses the TLB, and the page
//! walk itself misses the cache (the engine bench measures both). The
//! tables reserve their memory up front and touch it as they fill, so
//! advising the reservations with `MADV_HUGEPAGE` before the first packet
//! makes the kernel back them with 2 MiB pages as they are touched (when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` or `always`,
//! Debian's default being `madvise`). Nothing else changes: it is a hint,
//! and with THP off the tables work exactly as before on 4 KiB pages.
//!
//! ## Prefault
//!
//! The tables reserve their capacity but the kernel backs a page only when it
//! is first written: while a table grows, about one new connection in 30
//! takes a page fault (zeroing a page, charging it to the memory cgroup),
//! ~1 µs on this VM, on the data path. [`populate`] faults the reservations
//! in at start instead (`MADV_POPULATE_WRITE`, Linux 5.14), so memory is
//! claimed once, before the first packet, and a machine that cannot afford
//! the configured capacities finds out at start. With huge pages advised
//! first, the kernel's compaction for them happens then too.
//!
//! ## Prefetch
//!
//! The shard engine names the addresses an RX batch's lookups will read
//! (`Engine::warm_batch`); [`prefetch`] starts those cache misses without
//! waiting for them, so a batch's misses overlap instead of following one
//! another. A plain load would also start the miss, but it holds its place
//! in the CPU's reorder window until the data arrives, which limits the
//! overlap to a few packets.

use std::ops::Range;

/// Huge page size on x86-64 and arm64 (4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// The 2 MiB-aligned part of `r` (only whole huge pages can be advised).
pub fn aligned_part(r: &Range<usize>) -> Option<Range<usize>> {
    inner_aligned(r, HUGE_PAGE)
}

/// The part of `r` made of whole `align`-sized, `align`-aligned blocks
/// (`align` a power of two); `None` when there is none.
fn inner_aligned(r: &Range<usize>, align: usize) -> Option<Range<usize>> {
    let start = r.start.checked_add(align - 1)? & !(align - 1);
    let end = r.end & !(align - 1);
    (end > start).then_some(start..end)
}

/// Advise the 2 MiB-aligned part of each address range (allocations owned
/// by the caller, e.g. from [`crate::shard::engine::Engine::memory_regions`])
/// to be backed by transparent huge pages. Returns the bytes advised; ranges
/// smaller than a huge page, or a kernel that refuses, count 0.
pub fn advise_hugepages(regions: &[Range<usize>]) -> usize {
    let mut advised = 0;
    for r in regions.iter().filter_map(aligned_part) {
        let len = r.end - r.start;
        // SAFETY: MADV_HUGEPAGE only changes the kernel's page-size policy
        // for the range; it never changes the contents or the validity of
        // the mapping, so it cannot break any Rust reference into it. The
        // range is page-aligned; if part of it were not mapped, the call
        // fails with ENOMEM and nothing happens.
        let rc = unsafe { libc::madvise(r.start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        if rc == 0 {
            advised += len;
        }
    }
    advised
}

/// Base page size (x86-64 and arm64 as configured by Debian).
const PAGE: usize = 4096;

/// The whole pages inside `r` (a partial page at either end is left to be
/// faulted in by use: it may belong to another allocation's mapping).
fn whole_pages(r: &Range<usize>) -> Option<Range<usize>> {
    inner_aligned(r, PAGE)
}

/// Fault in every whole page of each range now (`MADV_POPULATE_WRITE`), as
/// if it had been written, without changing its contents. Returns the bytes
/// populated, or the first error (`EINVAL`: a kernel older than 5.14;
/// `ENOMEM`: out of memory).
pub fn populate(regions: &[Range<usize>]) -> std::io::Result<usize> {
    let mut done = 0;
    for r in regions.iter().filter_map(whole_pages) {
        let len = r.end - r.start;
        // SAFETY: MADV_POPULATE_WRITE only makes the kernel back the pages
        // of the range with writable memory now instead of at the first
        // write; it never changes their contents (pages already present are
        // left alone, new anonymous pages read as zero either way), so no
        // Rust value in or around the range changes. The range is
        // page-aligned and inside an allocation the caller owns; an
        // unmapped part fails with ENOMEM and nothing else happens.
        let rc =
            unsafe { libc::madvise(r.start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        done += len;
    }
    Ok(done)
}

/// What the kernel's transparent-huge-page settings mean for advised
/// tables, as a warning to log (None: fine). `enabled` and `defrag` are the
/// contents of `/sys/kernel/mm/transparent_hugepage/{enabled,defrag}`.
pub fn thp_warning(enabled: &str, defrag: &str) -> Option<String> {
    let selected = |s: &str| {
        s.split_whitespace()
            .find(|w| w.starts_with('[') && w.ends_with(']'))
            .map(|w| w.trim_matches(['[', ']']).to_string())
    };
    match selected(enabled).as_deref() {
        Some("madvise" | "always") => {}
        other => {
            return Some(format!(
                "transparent huge pages are {}: the tables stay on 4 KiB pages",
                other.unwrap_or("unavailable")
            ))
        }
    }
    match selected(defrag).as_deref() {
        Some(d @ ("madvise" | "always")) => Some(format!(
            "transparent_hugepage/defrag is \"{d}\": a page fault in the tables may compact \
             memory synchronously and stall a shard for milliseconds; set it to \
             \"defer+madvise\""
        )),
        _ => None,
    }
}

/// [`thp_warning`] for this machine.
pub fn thp_warning_here() -> Option<String> {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/kernel/mm/transparent_hugepage/{f}"))
            .unwrap_or_default()
    };
    thp_warning(&read("enabled"), &read("defrag"))
}

/// Start loading the cache line at `addr` into all cache levels; returns at
/// once. Any address is allowed (a prefetch never faults). A no-op on
/// targets other than x86-64.
#[inline(always)]
pub fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint with no architectural effect: it does not
    // fault, even on an unmapped address, and reads nothing into the
    // program. SSE, which provides it, is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::reservation;

    #[test]
    fn thp_settings_that_stall_or_disable_are_warned_about() {
        let on = "always [madvise] never";
        assert_eq!(
            thp_warning(on, "always defer [defer+madvise] madvise never"),
            None
        );
        assert_eq!(
            thp_warning(on, "always defer defer+madvise madvise [never]"),
            None
        );
        let w = thp_warning(on, "always defer defer+madvise [madvise] never").unwrap();
        assert!(
            w.contains("\"madvise\"") && w.contains("defer+madvise"),
            "{w}"
        );
        assert!(thp_warning("[always] madvise never", "[always] defer").is_some());
        let off = thp_warning("always madvise [never]", "[madvise]").unwrap();
        assert!(off.contains("never") && off.contains("4 KiB"), "{off}");
        assert!(thp_warning("", "").unwrap().contains("unavailable"));
    }

    /// Resident bytes of the mapping that contains `addr` (/proc/self/smaps).
    fn rss_kib(addr: usize) -> Option<u64> {
        smaps_field(addr, "Rss:")
    }

    /// A populated reservation is resident before anything is written to
    /// it, and what was in it already is unchanged.
    #[test]
    fn populated_reservation_is_resident_and_unchanged() {
        let mut v: Vec<u64> = Vec::with_capacity(8 << 20); // 64 MiB
        v.extend(0..1000);
        let r = reservation(&v);
        let before = rss_kib(r.start).unwrap();
        let n = populate(std::slice::from_ref(&r)).expect("MADV_POPULATE_WRITE (Linux 5.14+)");
        assert!(n >= (64 << 20) - 2 * PAGE, "{n}");
        let after = rss_kib(r.start).unwrap();
        assert!(
            after >= before + (60 << 10),
            "resident {before} KiB before populate, {after} KiB after"
        );
        assert!(v.iter().copied().eq(0..1000));
        assert_eq!(populate(&[]).unwrap(), 0);
    }

    #[test]
    fn whole_pages_leaves_partial_pages_out() {
        assert_eq!(whole_pages(&(0..PAGE)), Some(0..PAGE));
        assert_eq!(whole_pages(&(1..3 * PAGE + 5)), Some(PAGE..3 * PAGE));
        assert_eq!(whole_pages(&(1..PAGE + 5)), None);
        assert_eq!(whole_pages(&(usize::MAX - 3..usize::MAX)), None);
    }

    #[test]
    fn aligned_part_keeps_whole_huge_pages_only() {
        let h = HUGE_PAGE;
        assert_eq!(aligned_part(&(0..h)), Some(0..h));
        assert_eq!(aligned_part(&(1..2 * h + 5)), Some(h..2 * h));
        assert_eq!(aligned_part(&(1..h + 5)), None);
        assert_eq!(aligned_part(&(h..h)), None);
        assert_eq!(aligned_part(&(usize::MAX - 3..usize::MAX)), None);
    }

    /// `AnonHugePages` of the mapping that contains `addr`, from
    /// /proc/self/smaps (per mapping, so other tests cannot disturb it).
    fn anon_huge_kib(addr: usize) -> Option<u64> {
        smaps_field(addr, "AnonHugePages:")
    }

    /// A field (in kB) of the mapping that contains `addr`.
    fn smaps_field(addr: usize, field: &str) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = head.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix(field) {
                    return v.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    #[test]
    fn advised_reservation_is_backed_by_huge_pages() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if !thp.contains("[madvise]") && !thp.contains("[always]") {
            eprintln!("SKIP: transparent huge pages are off on this kernel ({thp:?})");
            return;
        }
        let mut v: Vec<u64> = Vec::with_capacity(8 * HUGE_PAGE / 8);
        assert!(advise_hugepages(&[reservation(&v)]) >= 6 * HUGE_PAGE);
        v.resize(v.capacity(), 1);
        let kib = anon_huge_kib(v.as_ptr() as usize + 4 * HUGE_PAGE).unwrap_or(0);
        // The kernel may be short of free 2 MiB blocks; it then falls back
        // to small pages, which is allowed but should not happen on a test
        // machine with memory to spare.
        assert!(
            kib >= 2048,
            "no huge page behind the advised vector ({kib} KiB)"
        );
        assert!(v.iter().all(|&x| x == 1));
    }
}
