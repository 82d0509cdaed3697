//! What the threads of one run share: the phase clock, the publishers' counters, one slot per
//! event-loop thread for what its subscribers receive, the first fatal error; plus the `/proc`
//! readers for the server's RSS and CPU time and the final table.
//!
//! The receive path touches nothing another thread writes: each thread counts into its own
//! slot (single-writer counters, a plain load and store, no locked instruction) and records
//! latencies into a histogram of its own ([`Local`]), which it adds to its slot every few
//! milliseconds. The main thread sums the slots and takes their histograms once a second.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::payload::{self, Track};

/// Clients are being opened; nothing is published.
pub const CONNECT: u8 = 0;
/// Publishing, not counted.
pub const WARMUP: u8 = 1;
/// Publishing and counted.
pub const MEASURE: u8 = 2;
/// Publishers stop sending; in-flight messages still arrive.
pub const STOP: u8 = 3;
/// Subscribers settle their final counts.
pub const DONE: u8 = 4;

/// Monotonic clock in ns, comparable across threads and processes of this machine (the send
/// time travels inside the payload).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and output struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A latency histogram in ns, 1 ns .. 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Counters and clocks of one run.
pub struct Shared {
    pub phase: AtomicU8,
    /// Send times in `[measure_start, measure_end)` are counted.
    pub measure_start: AtomicU64,
    pub measure_end: AtomicU64,
    /// Clients ready (connected and, where asked, subscribed) and clients that failed.
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    /// Acknowledged publishes: all, and those sent in the measured window.
    pub published: AtomicU64,
    pub published_window: AtomicU64,
    pub publish_errors: AtomicU64,
    /// Deliveries the acknowledged publishes should cause (for the drain wait).
    pub expected: AtomicU64,
    /// One per event-loop thread: what its clients received.
    pub slots: Vec<Slot>,
    /// Final counts, settled by the threads at the end.
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub disconnects: AtomicU64,
    pub reconnects: AtomicU64,
    /// Last sequence sent by publisher p to channel c at `[p * channels + c]`.
    pub sent_seq: Vec<AtomicU64>,
    pub threads_done: AtomicUsize,
    pub fatal: Mutex<Option<String>>,
    /// Non-fatal events (disconnects, failed connects): the first few are printed.
    notes: Mutex<(usize, Option<String>)>,
}

impl Shared {
    /// `slots`: one per event-loop thread (and per subscriber process, see [`crate::procs`]).
    pub fn new(slots: usize, publishers: usize, channels: usize) -> Shared {
        Shared {
            phase: AtomicU8::new(CONNECT),
            measure_start: AtomicU64::new(u64::MAX),
            measure_end: AtomicU64::new(u64::MAX),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            published_window: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            slots: (0..slots).map(|_| Slot::default()).collect(),
            lost: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            sent_seq: (0..publishers * channels).map(|_| AtomicU64::new(0)).collect(),
            threads_done: AtomicUsize::new(0),
            fatal: Mutex::new(None),
            notes: Mutex::new((0, None)),
        }
    }

    pub fn phase(&self) -> u8 {
        self.phase.load(Relaxed)
    }

    /// Whether a message sent at `t` belongs to the measured window.
    pub fn in_window(&self, t: u64) -> bool {
        t >= self.measure_start.load(Relaxed) && t < self.measure_end.load(Relaxed)
    }

    /// Records the first fatal error (later ones are usually consequences of it).
    pub fn set_fatal(&self, msg: String) {
        let mut f = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(msg);
        }
    }

    /// Reports a non-fatal event on stderr; past the first few only counts them, so 10,000
    /// clients failing the same way print a handful of lines.
    pub fn note(&self, msg: String) {
        const SHOWN: usize = 5;
        let mut n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        n.0 += 1;
        if n.0 <= SHOWN {
            eprintln!("gyre-bench: {msg}");
        } else if n.0 == SHOWN + 1 {
            eprintln!("gyre-bench: (further such messages suppressed)");
        }
        if n.1.is_none() {
            n.1 = Some(msg);
        }
    }

    pub fn first_note(&self) -> Option<String> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Deliveries over all threads.
    pub fn delivered(&self) -> u64 {
        self.slots.iter().map(|s| s.delivered.load(Relaxed)).sum()
    }

    /// Deliveries of messages sent in the measured window, over all threads.
    pub fn delivered_window(&self) -> u64 {
        self.slots.iter().map(|s| s.delivered_window.load(Relaxed)).sum()
    }

    /// Gaps and repeats seen so far (the final counts add what never arrived).
    pub fn seen_lost_dup(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |a, s| (a.0 + s.lost.load(Relaxed), a.1 + s.duplicated.load(Relaxed)))
    }

    /// Takes what the threads recorded since the last call: (deliveries, acknowledgements).
    pub fn take_hists(&self) -> (Histogram<u64>, Histogram<u64>) {
        let (mut del, mut ack) = (histogram(), histogram());
        for s in &self.slots {
            let mut h = s.hists.lock().unwrap_or_else(|e| e.into_inner());
            let _ = del.add(&h.0);
            let _ = ack.add(&h.1);
            h.0.reset();
            h.1.reset();
        }
        (del, ack)
    }
}

/// What one event-loop thread received, readable by the main thread. The counters have one
/// writer (the thread) and are padded apart so threads never share a cache line.
#[repr(align(128))]
pub struct Slot {
    pub delivered: AtomicU64,
    pub delivered_window: AtomicU64,
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    /// Latencies not yet taken by the main thread: publish→deliver, and command→reply.
    hists: Mutex<(Histogram<u64>, Histogram<u64>)>,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            delivered: AtomicU64::new(0),
            delivered_window: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            hists: Mutex::new((histogram(), histogram())),
        }
    }
}

/// The payloads of one read of one client (see [`Local::batch`]).
pub struct Batch<'a> {
    slot: &'a Slot,
    now: u64,
    start: u64,
    end: u64,
    lost0: u64,
    dup0: u64,
    track: &'a mut Track,
    hist: std::cell::RefMut<'a, Histogram<u64>>,
    n: u64,
    in_window: u64,
}

impl Batch<'_> {
    /// Counts the payloads in `data`; returns how many were found.
    pub fn scan(&mut self, data: &[u8]) -> usize {
        let (now, start, end) = (self.now, self.start, self.end);
        let (track, hist, in_window) = (&mut *self.track, &mut *self.hist, &mut self.in_window);
        let n = payload::scan(data, |s| {
            track.observe(s.p, s.s);
            if s.t >= start && s.t < end {
                *in_window += 1;
                hist.saturating_record(now.saturating_sub(s.t).max(1));
            }
        });
        self.n += n as u64;
        n
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.n == 0 {
            return;
        }
        let slot = self.slot;
        bump(&slot.delivered, self.n);
        if self.in_window > 0 {
            bump(&slot.delivered_window, self.in_window);
        }
        if self.track.lost != self.lost0 {
            bump(&slot.lost, self.track.lost - self.lost0);
        }
        if self.track.duplicated != self.dup0 {
            bump(&slot.duplicated, self.track.duplicated - self.dup0);
        }
    }
}

impl Slot {
    /// Sets the counters of a subscriber process, as it reported them.
    pub fn set(&self, delivered: u64, delivered_window: u64, lost: u64, duplicated: u64) {
        self.delivered.store(delivered, Relaxed);
        self.delivered_window.store(delivered_window, Relaxed);
        self.lost.store(lost, Relaxed);
        self.duplicated.store(duplicated, Relaxed);
    }

    /// Adds publish→deliver latencies a subscriber process reported.
    pub fn add_delivery_latencies(&self, h: &Histogram<u64>) {
        let _ = self.hists.lock().unwrap_or_else(|e| e.into_inner()).0.add(h);
    }
}

/// Adds `n` to a counter only this thread writes: no locked read-modify-write.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed) + n, Relaxed);
}

/// The receiving side of one event-loop thread: its slot and its own histograms.
pub struct Local {
    pub sh: Arc<Shared>,
    pub thread: usize,
    /// Publish→deliver latencies and command→reply round trips, not yet in the slot.
    del: RefCell<Histogram<u64>>,
    ack: RefCell<Histogram<u64>>,
}

impl Local {
    pub fn new(sh: Arc<Shared>, thread: usize) -> Local {
        Local { sh, thread, del: RefCell::new(histogram()), ack: RefCell::new(histogram()) }
    }

    fn slot(&self) -> &Slot {
        &self.sh.slots[self.thread]
    }

    /// Counts the payloads in `data` (received now by a client of this thread): sequences into
    /// `track`, latency of those sent in the measured window into the thread's histogram.
    /// Returns how many were found.
    pub fn deliver(&self, track: &mut Track, data: &[u8]) -> usize {
        let mut b = self.batch(track);
        b.scan(data)
    }

    /// Starts counting what one read brought to one client: the clock is read once, the
    /// histogram borrowed once, and the slot's counters are written once when it ends.
    pub fn batch<'a>(&'a self, track: &'a mut Track) -> Batch<'a> {
        let sh = &*self.sh;
        Batch {
            slot: self.slot(),
            now: now_ns(),
            start: sh.measure_start.load(Relaxed),
            end: sh.measure_end.load(Relaxed),
            lost0: track.lost,
            dup0: track.duplicated,
            track,
            hist: self.del.borrow_mut(),
            n: 0,
            in_window: 0,
        }
    }

    /// Records the round trip of `n` commands answered now that were written at `sent`.
    pub fn ack(&self, sent: u64, n: u64) {
        if n > 0 {
            self.ack.borrow_mut().saturating_record_n(now_ns().saturating_sub(sent).max(1), n);
        }
    }

    /// Moves the histograms recorded since the last call into the slot.
    pub fn flush(&self) {
        let (mut del, mut ack) = (self.del.borrow_mut(), self.ack.borrow_mut());
        if del.is_empty() && ack.is_empty() {
            return;
        }
        let mut h = self.slot().hists.lock().unwrap_or_else(|e| e.into_inner());
        let _ = h.0.add(&*del);
        let _ = h.1.add(&*ack);
        del.reset();
        ack.reset();
    }
}

/// Latency percentiles in µs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let r = |v: f64| (v * 10.0).round() / 10.0;
        serde_json::json!({
            "count": self.count, "p50": r(self.p50), "p90": r(self.p90), "p99": r(self.p99),
            "p999": r(self.p999), "max": r(self.max), "mean": r(self.mean),
        })
    }
}

/// A duration in µs as a short human string.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// A count with thousands separators.
pub fn fmt_n(n: f64) -> String {
    let v = n.round() as i128;
    let s = v.unsigned_abs().to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        out.insert(0, '-');
    }
    out
}

/// One reading of a process's `/proc` files.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub rss_kb: u64,
    /// utime + stime, seconds.
    pub cpu_s: f64,
}

/// Reads `VmRSS` and utime+stime of `pid` (`None`: this process); `None` if it is gone.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    };
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come field 3 (state) onwards: utime is field 14, stime 15.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ProcSample { rss_kb, cpu_s: ticks as f64 / hz })
}

/// This process and its child processes `children`, summed.
pub fn sample_tool(children: &[u32]) -> Option<ProcSample> {
    children.iter().try_fold(sample(None)?, |sum, &p| {
        let s = sample(Some(p))?;
        Some(ProcSample { rss_kb: sum.rss_kb + s.rss_kb, cpu_s: sum.cpu_s + s.cpu_s })
    })
}

/// The sum over the server processes `pids` (the nodes of a cluster and what they share);
/// `None` when there are none or one is gone.
pub fn sample_servers(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(ProcSample::default(), |sum, &p| {
        let s = sample(Some(p))?;
        Some(ProcSample { rss_kb: sum.rss_kb + s.rss_kb, cpu_s: sum.cpu_s + s.cpu_s })
    })
}

/// Server and client resource use over the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub start: ProcSample,
    pub end: ProcSample,
    pub rss_max_kb: u64,
}

impl Usage {
    /// CPU seconds used between the samples.
    pub fn cpu_s(&self) -> f64 {
        self.end.cpu_s - self.start.cpu_s
    }

    /// The table's CPU row over a run of `secs`: `1.23 s (45% of one core)`.
    pub fn cpu_row(&self, secs: f64) -> String {
        let cpu = self.cpu_s();
        format!("{cpu:.2} s ({:.0}% of one core)", cpu / secs * 100.0)
    }

    /// The table's memory row: `start / end / max` RSS in MiB.
    pub fn rss_row(&self) -> String {
        let mib = |kb: u64| kb as f64 / 1024.0;
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            mib(self.start.rss_kb),
            mib(self.end.rss_kb),
            mib(self.rss_max_kb.max(self.end.rss_kb))
        )
    }

    pub fn json(&self, secs: f64) -> serde_json::Value {
        let cpu = self.cpu_s().max(0.0);
        serde_json::json!({
            "rss_start_kb": self.start.rss_kb, "rss_end_kb": self.end.rss_kb,
            "rss_max_kb": self.rss_max_kb.max(self.end.rss_kb),
            "cpu_s": (cpu * 100.0).round() / 100.0,
            "cpu_pct": if secs > 0.0 { (cpu / secs * 1000.0).round() / 10.0 } else { 0.0 },
        })
    }
}

/// Prints `rows` as a two-column table.
pub fn table(title: &str, rows: &[(String, String)], to_stderr: bool) {
    let w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut s = format!("\n{title}\n{}\n", "-".repeat(title.chars().count()));
    for (k, v) in rows {
        s.push_str(&format!("  {k:<w$}  {v}\n"));
    }
    if to_stderr {
        eprint!("{s}");
    } else {
        print!("{s}");
    }
}

/// Keeps this thread's event loop from sleeping until the run is done (`--spin`): a task
/// that is always ready again (behind the other ready tasks: `gyre::io::yield_now`), so the
/// loop polls its sockets without waiting between turns. While a task is ready the loop does
/// not look at its timers, so every millisecond (the timer wheel's tick) the spinner waits on
/// a timer that is due by then: with nothing else ready the loop then polls with no wait and
/// fires every timer due.
pub async fn spin_until_done(sh: Arc<Shared>) {
    use std::task::Poll;
    while sh.phase() < DONE {
        // Polled once, so registered now: due at the end of this millisecond tick.
        let mut due = Box::pin(monoio::time::sleep(Duration::ZERO));
        let _ = std::future::poll_fn(|cx| Poll::Ready(std::future::Future::poll(due.as_mut(), cx))).await;
        let until = Instant::now() + Duration::from_millis(1);
        while Instant::now() < until {
            gyre::io::yield_now().await;
        }
        due.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_n(1234567.0), "1,234,567");
        assert_eq!(fmt_n(12.0), "12");
        assert_eq!(fmt_us(1500.0), "1.50 ms");
        assert_eq!(fmt_us(15.0), "15 µs");
    }

    #[test]
    fn samples_self() {
        let s = sample(None).expect("/proc/self readable");
        assert!(s.rss_kb > 0);
        let me = std::process::id();
        let two = sample_servers(&[me, me]).expect("/proc/self readable by pid");
        assert!(two.rss_kb > 0 && two.cpu_s >= 0.0);
        assert!(sample_servers(&[]).is_none());
    }
}
