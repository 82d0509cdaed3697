//! `log`: the level and the file of the process's log (written by the `logging` module).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Log {
    /// trace | debug | info | warn | error | fatal | none
    pub level: String,
    /// Logs are appended to this file (JSON lines) instead of going to stdout/stderr.
    pub file: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { level: "info".into(), file: String::new() }
    }
}
