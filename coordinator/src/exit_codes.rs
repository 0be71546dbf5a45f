//! Every exit status `powerpool` uses, in one place. The README's table is this file.

/// Everything asked for was done.
pub const OK: u8 = 0;
/// The run failed after it started: a worker fault that could not be recovered, an output that
/// could not be written. Output already written is an exact prefix; a `--output` file is not
/// created.
pub const FAILURE: u8 = 1;
/// Bad input, refused before any work started: an unknown flag or task, a malformed range, an
/// unwritable output, a worker command that does not exist. One line on stderr says which.
pub const USAGE: u8 = 2;
/// The work itself finished, but a fetch failed (`fetch`: some URL did not answer 2xx; `map
/// --fetch`: some fetch failed while the map's output is complete and exact).
pub const FETCH_FAILED: u8 = 3;
/// `map`: an input still failed after its retries, so the run stopped before it (`run
/// --halt-on-error`: a job failed, so the run stopped after writing its output). Every result
/// before that input was written (stdout) or nothing was (`--output`); stderr names the input,
/// the failure and the worker's pid.
pub const ITEM_FAILED: u8 = 4;
/// `map --keep-going`: the run finished, but some inputs failed and their results are missing;
/// stderr lists them (`run`: every job ran, and the failed ones are listed).
pub const PARTIAL: u8 = 5;
/// Stopped by SIGINT (Ctrl-C): 128 + 2, as shells report it.
pub const SIGINT: u8 = 130;
/// Stopped by SIGTERM: 128 + 15.
pub const SIGTERM: u8 = 143;
/// Stopped by SIGHUP (the terminal went away): 128 + 1.
pub const SIGHUP: u8 = 129;
/// Stopped by SIGQUIT: 128 + 3.
pub const SIGQUIT: u8 = 131;
/// Stopped by SIGUSR1: 128 + 10.
pub const SIGUSR1: u8 = 138;
/// Stopped by SIGUSR2: 128 + 12.
pub const SIGUSR2: u8 = 140;
