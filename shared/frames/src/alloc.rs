//! glibc malloc settings for jobs that decode large columns: keep freed memory in the process
//! instead of handing it back to the kernel and faulting it in again for the next file.
//!
//! By default glibc serves blocks over a moving threshold (from 128 KiB) with `mmap`, and trims
//! freed heap tops with `madvise(MADV_DONTNEED)`; a job that decodes one 350 KiB column after
//! another then spends a third of its CPU in page faults zeroing the same memory again
//! (measured on `aggregate`, tests/README.md). Setting the mmap threshold to its maximum (32 MiB)
//! and a high trim threshold keeps that memory warm; peak RSS grows by what was being returned.
//!
//! Arenas: glibc gives threads up to 8 per core, and memory freed in one is not reused by a
//! thread of another. A job whose units allocate on whichever blocking-pool thread runs them
//! (dozens, after a burst of small store reads) then faults in fresh memory for most units; one
//! arena per core keeps it to the memory of the units in flight (`aggregate`, 20 symbols: 223k →
//! 78k page faults, 0.98 → 0.76 s).
//!
//! Huge pages: the heaps are advised for transparent huge pages (what glibc's own
//! `glibc.malloc.hugetlb=1` tunable does, which a process cannot set for itself once started).
//! A 4 KiB fault costs ≈ 1.4 µs on the 2-core VM, and the exit ≈ 0.35 µs more per page to free:
//! touching 8 MiB took 2.95 ms in 4 KiB pages and 0.36 ms in 2 MiB ones, exiting 0.84 against
//! 0.20 ms. A one-symbol `aggregate` run faulted in ≈ 17 MB of buffers; with the heaps advised
//! here its page faults fell from 4,258 to 1,946 and its CPU by 5.6% (glibc's tunable itself:
//! 1,538 faults; tests/README.md, "Aggregate benchmark").

/// Apply the settings; call first thing in `main`. A no-op where glibc's `mallopt` is absent.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = crate::cores();
        // SAFETY: mallopt only changes allocator parameters; called before any threads start.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD as libc::c_int);
            libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int);
        }
        advise_heaps_huge(arenas);
    }
}

/// The main heap's growth step: it grows by this much at a time past what a request needs.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: usize = 64 << 20;

/// Advise every arena's heap for transparent huge pages, as `glibc.malloc.hugetlb=1` would: the
/// main arena's (grown now by [`TOP_PAD`], so that what the job allocates lies in the advised
/// range) and those of the other `arenas - 1`, made now by threads that each allocate while the
/// others are still alive (an exited thread's arena is handed to the next thread, not a new
/// one). A non-main heap is glibc's `HEAP_MAX_SIZE` (64 MiB on 64-bit) aligned to its size, which
/// is how glibc itself finds it from a pointer. Memory past these ranges (a heap grown beyond
/// them) keeps 4 KiB pages. Where THP is off (`never`), the advice does nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn advise_heaps_huge(arenas: usize) {
    const PAGE: usize = 4096;
    const HEAP_MAX: usize = 64 << 20;
    fn advise(from: usize, to: usize) {
        let from = from / PAGE * PAGE;
        if to > from {
            // SAFETY: MADV_HUGEPAGE changes no contents, only how this process's own anonymous
            // pages in the range are backed when next faulted in; unmapped parts of the range
            // make the call fail (ENOMEM), which is harmless.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
    // SAFETY: a block from malloc, freed once its address is read; sbrk(0) only reads the break.
    unsafe {
        let p = libc::malloc(2 << 20);
        if !p.is_null() {
            let top = libc::sbrk(0) as usize;
            // Served from the main heap (below the mmap threshold), the block's address is in
            // the range the heap just grew by; from there to the break is the heap's top.
            if (p as usize) < top {
                advise(p as usize, top);
            }
            libc::free(p);
        }
    }
    let others = arenas.saturating_sub(1);
    if others == 0 {
        return;
    }
    let barrier = std::sync::Barrier::new(others);
    std::thread::scope(|s| {
        for _ in 0..others {
            s.spawn(|| {
                // SAFETY: as above; the block is freed by the thread that took it.
                unsafe {
                    let p = libc::malloc(64);
                    // Every thread holds its arena until all have one: no arena is reused.
                    barrier.wait();
                    if !p.is_null() {
                        let base = p as usize / HEAP_MAX * HEAP_MAX;
                        advise(base, base + HEAP_MAX);
                        libc::free(p);
                    }
                }
            });
        }
    });
}
