//! Placeholder for the runtime.
use crate::config::Config;
use crate::error::Error;
/// Runs the server until SIGINT/SIGTERM. Blocks the calling thread.
pub fn run(_cfg: Config) -> Result<(), Error> { Ok(()) }
