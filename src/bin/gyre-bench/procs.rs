//! `fanout --procs N`: the subscribers in N child processes, the publishers in this one, for
//! when one process cannot receive more (threads of one process share its file table and
//! memory map in the kernel; processes share nothing).
//!
//! A child is this binary with the same options and `--child-range OFFSET:COUNT` (hidden): it
//! opens subscribers OFFSET..OFFSET+COUNT and publishes nothing. It reads commands on stdin —
//! `W <ns>` the measured window starts, `E <ns>` it ends, `D <seq,...>` publishing is over
//! (the last sequence of every publisher × channel, to count what never arrived) — and reports
//! on stdout every 20 ms: `S` and its counters, `H` and the latencies recorded since the last
//! `H` (value count pairs of its histogram), `READY` once its share is open, `F lost
//! duplicated` at the end. It exits when its stdin closes, so it never outlives the parent.
//!
//! In the parent, each child has a slot of the run's [`Shared`] like an event-loop thread, so
//! the per-second rows, the drain and the totals treat both alike.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::run::{self, Plan};
use crate::stats::{histogram, now_ns, Shared, DONE, STOP, WARMUP};
use crate::{target, Fail};

/// Runs this binary with the same options and `--child-range OFF:COUNT`, stdin and stdout
/// piped (the child's commands and reports), stderr shared; the child and its stdout.
pub fn start_child(off: usize, count: usize) -> Result<(Child, ChildStdout), Fail> {
    let exe = std::env::current_exe().map_err(|e| Fail::setup(format!("cannot find my own executable: {e}")))?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.extend(["--child-range".into(), format!("{off}:{count}")]);
    let mut child = Command::new(exe)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Fail::setup(format!("cannot start a child process: {e}")))?;
    let out = child.stdout.take().expect("piped stdout");
    Ok((child, out))
}

/// A child as the parent sees it.
pub struct Kid {
    child: Child,
    stdin: Mutex<Option<ChildStdin>>,
    finished: Arc<AtomicBool>,
    lost: Arc<AtomicU64>,
    duplicated: Arc<AtomicU64>,
}

/// The children of a run.
pub struct Kids(Vec<Kid>);

impl Kids {
    /// Starts `procs` children sharing the plan's subscribers; child k reports into slot
    /// `first_slot + k` of `sh`.
    pub fn spawn(plan: &Plan, sh: &Arc<Shared>, procs: usize, first_slot: usize) -> Result<Kids, Fail> {
        let n = plan.subscribers;
        let share = n.div_ceil(procs);
        let mut kids = Vec::new();
        for k in 0..procs {
            let (off, count) = (k * share, share.min(n.saturating_sub(k * share)));
            let (mut child, out) = start_child(off, count)?;
            let (finished, lost, duplicated) =
                (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let reader = Reader {
                sh: sh.clone(),
                slot: first_slot + k,
                finished: finished.clone(),
                lost: lost.clone(),
                duplicated: duplicated.clone(),
            };
            std::thread::spawn(move || reader.run(BufReader::new(out)));
            kids.push(Kid { stdin: Mutex::new(child.stdin.take()), child, finished, lost, duplicated });
        }
        Ok(Kids(kids))
    }

    /// Process ids, for the tool's CPU and memory.
    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|k| k.child.id()).collect()
    }

    fn send(&self, line: &str) {
        for k in &self.0 {
            if let Some(w) = k.stdin.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                let _ = w.write_all(line.as_bytes()).and_then(|_| w.flush());
            }
        }
    }

    /// Tells the children the window's bounds ahead of time, then waits until `at`: a message
    /// sent at or after `at` cannot reach a child before the child knows.
    pub fn announce(&self, what: char, at: u64) {
        self.send(&format!("{what} {at}\n"));
        let wait = at.saturating_sub(now_ns());
        std::thread::sleep(Duration::from_nanos(wait));
    }

    /// After the drain: sends the final sequences, waits (bounded) for the children's final
    /// counts and adds them to the run's.
    pub fn finish(&self, sh: &Shared) {
        let seqs: Vec<String> = sh.sent_seq.iter().map(|s| s.load(Relaxed).to_string()).collect();
        self.send(&format!("D {}\n", seqs.join(",")));
        let t = Instant::now();
        while !self.0.iter().all(|k| k.finished.load(Relaxed)) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        for k in &self.0 {
            sh.lost.fetch_add(k.lost.load(Relaxed), Relaxed);
            sh.duplicated.fetch_add(k.duplicated.load(Relaxed), Relaxed);
        }
    }
}

impl Drop for Kids {
    /// Closing their stdin ends the children.
    fn drop(&mut self) {
        for k in &mut self.0 {
            drop(k.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
        }
        let t = Instant::now();
        for k in &mut self.0 {
            while t.elapsed() < Duration::from_secs(2) && matches!(k.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
    }
}

/// Reads one child's reports into its slot and the run's shared counters.
struct Reader {
    sh: Arc<Shared>,
    slot: usize,
    finished: Arc<AtomicBool>,
    lost: Arc<AtomicU64>,
    duplicated: Arc<AtomicU64>,
}

impl Reader {
    fn run(self, out: impl BufRead) {
        let sh = &*self.sh;
        // Last reported ready, failed, disconnects, reconnects: the shared counters get deltas.
        let mut last = [0u64; 4];
        for line in out.lines() {
            let Ok(line) = line else { break };
            let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let nums = || rest.split(' ').filter_map(|v| v.parse::<u64>().ok()).collect::<Vec<u64>>();
            match tag {
                "S" => {
                    let v = nums();
                    if v.len() != 8 {
                        continue;
                    }
                    for (i, l) in last.iter_mut().enumerate() {
                        let d = v[i].saturating_sub(*l);
                        *l = v[i];
                        match i {
                            0 => sh.ready.fetch_add(d as usize, Relaxed),
                            1 => sh.failed.fetch_add(d as usize, Relaxed),
                            2 => sh.disconnects.fetch_add(d, Relaxed) as usize,
                            _ => sh.reconnects.fetch_add(d, Relaxed) as usize,
                        };
                    }
                    sh.slots[self.slot].set(v[4], v[5], v[6], v[7]);
                }
                "H" => {
                    let v = nums();
                    let mut h = histogram();
                    for pair in v.chunks_exact(2) {
                        h.saturating_record_n(pair[0], pair[1]);
                    }
                    sh.slots[self.slot].add_delivery_latencies(&h);
                }
                "F" => {
                    let v = nums();
                    self.lost.store(v.first().copied().unwrap_or(0), Relaxed);
                    self.duplicated.store(v.get(1).copied().unwrap_or(0), Relaxed);
                    self.finished.store(true, Relaxed);
                }
                "FATAL" => sh.set_fatal(rest.to_string()),
                _ => {}
            }
        }
        if !self.finished.load(Relaxed) && sh.phase() < DONE {
            sh.set_fatal("a subscriber process ended before the run did (see its messages above)".into());
        }
        self.finished.store(true, Relaxed);
    }
}

/// `--child-range OFF:COUNT` of a child process.
pub fn child_range(range: &str) -> Result<(usize, usize), Fail> {
    range
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .ok_or_else(|| Fail::setup(format!("bad --child-range {range:?}")))
}

/// A child: subscribers `off..off+count`, reports on stdout, commands on stdin.
pub fn child(mut plan: Plan, range: &str) -> Result<(), Fail> {
    let (off, count) = child_range(range)?;
    target::raise_nofile();
    plan.clients = off..off + count;
    plan.publish = false;
    let plan = Arc::new(plan);
    let sh = Arc::new(Shared::new(plan.threads, plan.publishers, plan.channels));
    run::start_threads(&plan, &sh);
    sh.phase.store(WARMUP, Relaxed);
    let sh2 = sh.clone();
    std::thread::spawn(move || {
        let sh = sh2;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match tag {
                "W" => sh.measure_start.store(rest.parse().unwrap_or(u64::MAX), Relaxed),
                "E" => sh.measure_end.store(rest.parse().unwrap_or(u64::MAX), Relaxed),
                "D" => {
                    for (slot, v) in sh.sent_seq.iter().zip(rest.split(',')) {
                        slot.store(v.parse().unwrap_or(0), Relaxed);
                    }
                    sh.phase.store(DONE, Relaxed);
                }
                _ => {}
            }
        }
        // The parent is gone.
        std::process::exit(0);
    });
    let mut out = std::io::stdout().lock();
    let mut announced = false;
    let report = |out: &mut std::io::StdoutLock, sh: &Shared| {
        let (lost, dup) = sh.seen_lost_dup();
        let _ = writeln!(
            out,
            "S {} {} {} {} {} {} {lost} {dup}",
            sh.ready.load(Relaxed),
            sh.failed.load(Relaxed),
            sh.disconnects.load(Relaxed),
            sh.reconnects.load(Relaxed),
            sh.delivered(),
            sh.delivered_window()
        );
        let (del, _) = sh.take_hists();
        if !del.is_empty() {
            let mut line = String::from("H");
            for v in del.iter_recorded() {
                line.push_str(&format!(" {} {}", v.value_iterated_to(), v.count_at_value()));
            }
            let _ = writeln!(out, "{line}");
        }
    };
    loop {
        if let Some(f) = sh.fatal() {
            let _ = writeln!(out, "FATAL {f}");
            let _ = out.flush();
            return Err(Fail::run(f));
        }
        report(&mut out, &sh);
        if !announced && sh.ready.load(Relaxed) + sh.failed.load(Relaxed) >= count {
            let _ = writeln!(out, "READY");
            announced = true;
        }
        let _ = out.flush();
        if sh.phase() >= DONE {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The threads settle their final counts (and flush their last latencies).
    let t = Instant::now();
    while sh.threads_done.load(Relaxed) < plan.threads && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    report(&mut out, &sh);
    let _ = writeln!(out, "F {} {}", sh.lost.load(Relaxed), sh.duplicated.load(Relaxed));
    let _ = out.flush();
    // Stay until the parent closes stdin (it reads the lines above first).
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) && sh.phase() >= STOP {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
