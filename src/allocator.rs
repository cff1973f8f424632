//! The global allocator of the binary (and of the benchmark's HTTP ceiling): mimalloc, asked the
//! way `malloc` is asked wherever that gives the alignment a layout needs.
//!
//! The `mimalloc` crate hands every allocation to `mi_malloc_aligned`. In mimalloc 3 that path
//! is slower than `mi_malloc` for any alignment, and once a size class has no free block at hand
//! it over-allocates sizes that are not a power of two (a 24-byte block becomes a 32-byte one
//! with the pointer moved up): a cached GET made 29 allocations at 60 instructions each on
//! average (callgrind, BENCHMARKS.md "Issue 27"). `mi_malloc` returns blocks aligned to 16 bytes
//! from 16 bytes up (its size classes are multiples of 16 there) and to 8 below, so a layout
//! whose alignment is at most 16 and at most its size gets what it needs from it, as std's
//! system allocator reasons for `malloc`. Every other layout goes to the aligned calls.

use std::{
    alloc::{GlobalAlloc, Layout},
    ffi::c_void,
};

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// The alignment `mi_malloc` gives every block of at least this many bytes.
const PLAIN_ALIGN: usize = 16;

/// mimalloc, by its plain calls where they suffice. See the module's documentation.
pub struct Allocator;

fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every call is mimalloc's, which returns null on failure; a pointer from any of its
// allocation calls may be freed or reallocated by any of them.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: mimalloc's allocation calls take any size and (aligned) a power-of-two alignment.
        unsafe { if plain(align, size) { mi_malloc(size) } else { mi_malloc_aligned(size, align) }.cast() }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as for `alloc`.
        unsafe { if plain(align, size) { mi_zalloc(size) } else { mi_zalloc_aligned(size, align) }.cast() }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        let ptr = ptr.cast::<c_void>();
        // SAFETY: `ptr` came from this allocator; the new block keeps `layout`'s alignment.
        unsafe {
            if plain(align, new_size) {
                mi_realloc(ptr, new_size)
            } else {
                mi_realloc_aligned(ptr, new_size, align)
            }
            .cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_has_the_alignment_its_layout_asks_for() {
        let allocator = Allocator;
        for size in [1usize, 7, 8, 9, 15, 16, 17, 24, 40, 100, 1_000, 1_100, 5_000, 70_000] {
            for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // Many, so that some come from a size class's fresh or refilled page.
                let blocks: Vec<*mut u8> = (0..200).map(|_| unsafe { allocator.alloc(layout) }).collect();
                for &p in &blocks {
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "size {size} align {align}: {p:?}"
                    );
                    let grown = unsafe { allocator.realloc(p, layout, size * 3) };
                    assert!(
                        !grown.is_null() && (grown as usize).is_multiple_of(align),
                        "grown {size} align {align}"
                    );
                    unsafe { allocator.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap()) };
                }
                let zeroed = unsafe { allocator.alloc_zeroed(layout) };
                assert!(
                    (zeroed as usize).is_multiple_of(align)
                        && (0..size).all(|i| unsafe { *zeroed.add(i) } == 0)
                );
                unsafe { allocator.dealloc(zeroed, layout) };
            }
        }
    }
}
