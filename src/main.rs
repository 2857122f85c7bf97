//! The `keel` binary: everything is in the library; this file picks the allocator.

/// mimalloc instead of glibc's malloc: a profile of the daemon under load spent
/// about 38% of its CPU in glibc's allocator (chunk unlinking, consolidation)
/// across tokio's worker threads, and glibc kept the heap at its high-water mark
/// after a burst.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keel::cli::main()
}
