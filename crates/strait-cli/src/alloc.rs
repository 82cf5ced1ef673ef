//! The process's allocator: mimalloc, asked for an alignment only when a layout needs one.
//!
//! `mi_malloc_aligned`, which the `mimalloc` crate calls for every allocation, has a fast
//! path only for blocks up to 1 KiB: every larger one (hyper's and the relay's buffers) went
//! through an over-allocating slow path, about 200 instructions and five times per proxied
//! HTTP request (`scripts/callgrind.sh http`). A mimalloc block is aligned to 16 bytes, or to
//! its size below that, so layouts asking no more take plain `mi_malloc`.
//!
//! mimalloc asks the kernel for transparent huge pages on its arenas, so the first touch of
//! each 2 MiB region zeroes all of it: the first `GET /connections?per_page=500` with 9,900
//! sessions held took 66–308 ms instead of 2–5 ms, the echo backend dropped connections
//! while 9,900 opened, and resident memory grew in 2 MiB steps. [`no_huge_pages`] turns them
//! off for the process, as Redis does for the same reasons.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block of at least this size has.
const BLOCK_ALIGN: usize = 16;

pub struct Mimalloc;

/// Stops the kernel from backing this process's memory with transparent huge pages (the
/// page faults after this take 4 KiB pages). Call first thing in `main`; a kernel that cannot
/// is reported and left as it is.
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("warning: cannot turn transparent huge pages off for this process: {error}");
    }
}

/// Whether a plain allocation of `size` bytes is aligned enough for `align`.
fn plain(size: usize, align: usize) -> bool {
    align <= BLOCK_ALIGN && align <= size
}

// SAFETY: every pointer comes from mimalloc and goes back to it; `plain` only sends layouts
// to the unaligned calls whose alignment mimalloc's blocks already have.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's C functions take any size and power-of-two alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: `ptr` was allocated by mimalloc (above), aligned or not.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by mimalloc; the new block keeps the layout's alignment.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of every size and alignment up to a page come back aligned, keep their bytes
    /// through growing and shrinking, and are zeroed when asked.
    #[test]
    fn every_layout_is_honoured() {
        let heap = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 3, 8, 12, 16, 24, 100, 1000, 1025, 4100, 70_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    panic!("a layout of {size} bytes aligned to {align}");
                };
                // SAFETY: a non-zero layout, freed with the same allocator.
                unsafe {
                    let zeroed = heap.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "{size} aligned to {align}");
                    assert!((0..size).all(|i| *zeroed.add(i) == 0));
                    heap.dealloc(zeroed, layout);

                    let p = heap.alloc(layout);
                    assert_eq!(p as usize % align, 0, "{size} aligned to {align}");
                    p.write_bytes(0xA5, size);
                    let grown = heap.realloc(p, layout, size * 3);
                    assert_eq!(
                        grown as usize % align,
                        0,
                        "{size} grown, aligned to {align}"
                    );
                    assert!((0..size).all(|i| *grown.add(i) == 0xA5));
                    let half = size.div_ceil(2);
                    let (Ok(grown_layout), Ok(half_layout)) = (
                        Layout::from_size_align(size * 3, align),
                        Layout::from_size_align(half, align),
                    ) else {
                        panic!(
                            "layouts of {} and {half} bytes aligned to {align}",
                            size * 3
                        );
                    };
                    let shrunk = heap.realloc(grown, grown_layout, half);
                    assert_eq!(
                        shrunk as usize % align,
                        0,
                        "{size} shrunk, aligned to {align}"
                    );
                    assert!((0..half).all(|i| *shrunk.add(i) == 0xA5));
                    heap.dealloc(shrunk, half_layout);
                }
            }
        }
    }
}
