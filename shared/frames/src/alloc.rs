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

/// Apply the settings; call first thing in `main`. A no-op where glibc's `mallopt` is absent.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        libc::mallopt(libc::M_ARENA_MAX, crate::cores() as libc::c_int);
    }
}

/// Ask the kernel to back the spare capacity of `v` with transparent huge pages (where it is
/// enabled for `madvise`): a vector about to be filled with tens of MB is then faulted in 2 MiB
/// at a time instead of 4 KiB. Only whole 2 MiB pages inside the allocation are advised.
pub fn prefer_huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_mut_ptr() as usize + v.len() * std::mem::size_of::<T>();
        let end = v.as_mut_ptr() as usize + v.capacity() * std::mem::size_of::<T>();
        let (a, b) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if b > a {
            // SAFETY: [a, b) lies inside the vector's allocation; MADV_HUGEPAGE changes no
            // contents, only how untouched pages are later backed. Failure is harmless.
            unsafe {
                libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
            }
        }
    }
}
