//! Process exit codes, following BSD `sysexits.h` where one fits.

/// Clean run or clean shutdown.
pub const OK: u8 = 0;
/// `keel task`: the task failed and was not restarted.
pub const TASK_FAILED: u8 = 1;
/// `keel run`: shut down, but something had to be killed (it did not drain
/// within its timeout or the shutdown deadline, or the process ended hard); the
/// log names what.
pub const NOT_DRAINED: u8 = 1;
/// `keel task`: interrupted by a signal before it finished; tasks are
/// resumable, so a service manager may simply run it again (`EX_TEMPFAIL`).
pub const INTERRUPTED: u8 = 75;
/// The command line names something that does not exist (`EX_USAGE`).
pub const USAGE: u8 = 64;
/// The supervisor gave up: restart intensity exceeded, or the tree could not run
/// (`EX_SOFTWARE`).
pub const SUPERVISOR_GAVE_UP: u8 = 70;
/// The configuration is unreadable or invalid (`EX_CONFIG`).
pub const BAD_CONFIG: u8 = 78;
