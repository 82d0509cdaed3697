//! The once-a-second progress line of a run on stderr: clients, rates, p99, disconnects and
//! the server's memory (which it also tracks for the report).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::output::Outputs;
use crate::stats::{self, fmt_n, fmt_us, Shared};
use crate::Fail;

/// The once-a-second progress line on stderr.
pub struct Progress {
    quiet: bool,
    server_pids: Vec<u32>,
    start: Instant,
    last: Instant,
    last_pub: u64,
    last_del: u64,
    pub rss_max_kb: u64,
}

impl Progress {
    /// The progress line of a run with these outputs (`-q`, `--server-pid`).
    pub fn new(out: &Outputs) -> Progress {
        Progress {
            quiet: out.quiet,
            server_pids: out.server_pid.clone(),
            start: Instant::now(),
            last: Instant::now(),
            last_pub: 0,
            last_del: 0,
            rss_max_kb: 0,
        }
    }

    /// Waits until `want` clients are ready or have failed, or until `limit` (then notes how
    /// many `noun`s are still `still`), printing progress as `phase`; fails when the run did
    /// (a thread could not start, a publisher failed). Returns how long it waited.
    pub fn wait_ready(
        &mut self,
        sh: &Shared,
        want: usize,
        limit: Duration,
        (phase, still, noun): (&str, &str, &str),
    ) -> Result<Duration, Fail> {
        let t0 = Instant::now();
        loop {
            if let Some(f) = sh.fatal() {
                return Err(Fail::run(f));
            }
            let done = sh.ready.load(Relaxed) + sh.failed.load(Relaxed);
            if done >= want {
                break;
            }
            if t0.elapsed() > limit {
                sh.note(format!("{} {noun}s still {still} after {:.0} s", want - done, limit.as_secs_f64()));
                break;
            }
            self.tick(sh, phase, None);
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(t0.elapsed())
    }

    /// Prints a line if a second has passed since the last one (`p99`: of the run so far, µs).
    pub fn tick(&mut self, sh: &Shared, phase: &str, p99: Option<f64>) {
        let dt = self.last.elapsed().as_secs_f64();
        if dt < 1.0 {
            return;
        }
        self.last = Instant::now();
        let server = stats::sample_servers(&self.server_pids);
        if let Some(s) = server {
            self.rss_max_kb = self.rss_max_kb.max(s.rss_kb);
        }
        let (p, d) = (sh.published.load(Relaxed), sh.delivered());
        let (dp, dd) = ((p - self.last_pub) as f64 / dt, (d - self.last_del) as f64 / dt);
        (self.last_pub, self.last_del) = (p, d);
        if self.quiet {
            return;
        }
        let mut line = format!(
            "[{:>4.0}s] {phase:<8} clients {}/{}  published {}/s  delivered {}/s",
            self.start.elapsed().as_secs_f64(),
            fmt_n(sh.ready.load(Relaxed) as f64),
            fmt_n((sh.ready.load(Relaxed) + sh.failed.load(Relaxed)) as f64),
            fmt_n(dp),
            fmt_n(dd)
        );
        if let Some(p99) = p99.filter(|v| *v > 0.0) {
            line.push_str(&format!("  p99 {}", fmt_us(p99)));
        }
        let disc = sh.disconnects.load(Relaxed);
        if disc > 0 {
            line.push_str(&format!("  disconnects {disc}"));
        }
        if let Some(s) = server {
            line.push_str(&format!("  server rss {:.1} MiB", s.rss_kb as f64 / 1024.0));
        }
        eprintln!("{line}");
    }
}
