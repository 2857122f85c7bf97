//! The `keel` binary: everything is in the library; this file picks the allocator.

/// mimalloc instead of glibc's malloc: a profile of the daemon under load spent
/// about 38% of its CPU in glibc's allocator (chunk unlinking, consolidation)
/// across tokio's worker threads, and glibc kept the heap at its high-water mark
/// after a burst. Built with mimalloc's `no_thp`: on hosts where transparent
/// huge pages are `always` (common), mimalloc's eagerly committed arenas were
/// backed by 2 MiB pages, and at 20,000 trades/s 36 MiB of Keel's 79-97 MiB RSS
/// were huge pages; without them the peak is 57-62 MiB at the same CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keel::cli::main()
}
