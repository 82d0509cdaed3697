//! Publish lines of a legacy stream, spread over the workers that own their channels.
//!
//! The reading worker does not read every line through: for a line that looks like a publish
//! it only finds the channel ([`fast::route`]), and
//! * when it owns the channel itself, it runs the line on the spot and appends the reply to a
//!   run of replies that become one piece of the response (no reply slot per line);
//! * otherwise it copies the raw line into a batch for the channel's owner and reserves the
//!   line's reply slot. Batches leave when the chunk being read is done (one message per
//!   owner per chunk); the owner reads each line ([`fast::publish`], or the general decoder),
//!   executes it, writes all the batch's replies into one buffer and sends it back as one
//!   message, whose slices fill the slots.
//!
//! Lines of one channel always take the same way to the same owner, in order, so their
//! publications keep the request's order. Anything else (other methods, lines the quick scan
//! cannot place, the Redis engine, whose publishes run on the reading worker anyway) takes the
//! general path of one command at a time; pending batches are sent before such a command so
//! that it cannot overtake them.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::out::ConnOut;
use crate::api::parse::{self, decode_line};
use crate::api::{encode, fast, Method, Reply};
use crate::exec;
use crate::metrics::{self, Protocol};
use crate::runtime::worker::{Msg, Worker};
use crate::shard::{owner_of, ShardOp};

/// Raw lines for one owner, with the reply slots they fill on the reading worker.
pub struct LineBatch {
    origin: u16,
    conn: u32,
    gen: u32,
    /// The lines, one after the other.
    buf: Vec<u8>,
    /// Per line: its reply slot, where it ends in `buf`, and whether its reply starts with
    /// the newline that separates it from the previous one.
    lines: Vec<(u64, u32, bool)>,
}

/// Per-request state of the spreading (see the module docs).
pub struct Pipe {
    conn: u32,
    gen: u32,
    /// Whether lines are spread (the memory engine; with Redis the reading worker runs
    /// publishes itself).
    spread: bool,
    /// Replies of lines run here, not yet handed to the output, and what they were.
    run: Vec<u8>,
    run_stats: RunStats,
    batches: Vec<Option<LineBatch>>,
}

/// Lines run together: one clock reading for all, their metrics recorded at once.
struct RunStats {
    started: Instant,
    lines: u64,
    errors: Vec<u32>,
}

impl RunStats {
    fn new() -> RunStats {
        RunStats { started: Instant::now(), lines: 0, errors: Vec::new() }
    }

    fn record(&mut self) {
        metrics::api_commands(Protocol::Http, Method::Publish, self.started.elapsed(), self.lines, &self.errors);
        self.lines = 0;
        self.errors.clear();
    }
}

/// What became of a line.
pub enum Line {
    /// Its reply is written (locally, or in a batch for another worker).
    Taken,
    /// Not a publish this path takes: the general path gets it (already decoded when this
    /// path read it).
    General(Option<parse::Line>),
}

impl Pipe {
    pub fn new(w: &Worker, conn: u32, gen: u32) -> Pipe {
        Pipe {
            conn,
            gen,
            spread: w.bus().is_none(),
            run: Vec::new(),
            run_stats: RunStats::new(),
            batches: (0..w.workers).map(|_| None).collect(),
        }
    }

    /// Takes a line if it is a publish this path runs. `sep`: the reply follows another one.
    pub fn line(&mut self, w: &Rc<Worker>, out: &ConnOut, line: &[u8], sep: bool) -> Line {
        if !self.spread {
            return Line::General(None);
        }
        // With one worker every channel is owned here: no need to find it first.
        let owner = if w.workers == 1 {
            w.id
        } else {
            let Some(channel) = fast::route(line) else { return Line::General(None) };
            owner_of(channel, w.workers)
        };
        if owner == w.id {
            if self.run.is_empty() {
                self.run_stats.started = Instant::now();
            }
            match run_line(w, line, sep, &mut self.run, &mut self.run_stats) {
                Ran::Replied => Line::Taken,
                // Not a single-channel command owned here (another method, or a channel that
                // is not the one the scan found): it goes the general way, after the replies
                // before it.
                Ran::Elsewhere(l) => Line::General(l),
            }
        } else {
            self.end_run(out);
            let seq = out.push_pending_line(sep, Method::Publish, line.len());
            let b = self.batches[owner].get_or_insert_with(|| LineBatch {
                origin: w.id as u16,
                conn: self.conn,
                gen: self.gen,
                buf: Vec::with_capacity(16 * 1024),
                lines: Vec::with_capacity(64),
            });
            b.buf.extend_from_slice(line);
            b.lines.push((seq, b.buf.len() as u32, sep));
            Line::Taken
        }
    }

    /// Hands the run of local replies to the output as one piece.
    pub fn end_run(&mut self, out: &ConnOut) {
        if !self.run.is_empty() {
            self.run_stats.record();
            out.push_piece(Bytes::from(std::mem::take(&mut self.run)));
        }
    }

    /// Everything taken so far leaves: local replies to the output, batches to their owners.
    /// Called when a chunk is done, and before a line takes the general path.
    pub fn flush(&mut self, w: &Worker, out: &ConnOut) {
        self.end_run(out);
        for (to, b) in self.batches.iter_mut().enumerate() {
            if let Some(b) = b.take() {
                w.send(to, Msg::Job(Box::new(move |w| run_batch(w, b))));
            }
        }
    }
}

enum Ran {
    Replied,
    /// The line, decoded, when it is a command of another kind (to be run as it is).
    Elsewhere(Option<parse::Line>),
}

/// Reads and runs one line on the worker that owns its channel, appending the reply (with its
/// separator) to `out`; `Elsewhere` when it is not a single-channel command owned here.
fn run_line(w: &Worker, line: &[u8], sep: bool, out: &mut Vec<u8>, stats: &mut RunStats) -> Ran {
    let (id, method, reply) = match fast::publish(line) {
        Some(f) => match publish_here(w, &f, stats.started) {
            Some(reply) => (f.id, Some(Method::Publish), reply),
            None => return Ran::Elsewhere(None),
        },
        None => {
            let l = parse::decode_line_general(line);
            // Lines that fail to decode are not counted as commands (as on the general path).
            let method = l.command.as_ref().ok().map(|c| c.method());
            let reply = match l.command.map(|cmd| exec::single(&w.cfg, cmd)) {
                Err(e) | Ok(Err(e)) => Err(e),
                // A single-channel command owned here runs in its place, whatever its method
                // (a line whose `method` follows `params` looks like a publish to the scan).
                Ok(Ok(Ok(op))) if owner_of(op.channel(), w.workers) == w.id => w.exec_local_at(op, stats.started),
                Ok(Ok(Ok(_))) => return Ran::Elsewhere(None),
                Ok(Ok(Err(cmd))) => return Ran::Elsewhere(Some(parse::Line { id: l.id, command: Ok(cmd) })),
            };
            (l.id, method, reply)
        }
    };
    let error = reply.as_ref().err().map(|e| e.code);
    match method {
        Some(Method::Publish) => {
            stats.lines += 1;
            stats.errors.extend(error);
        }
        Some(m) => metrics::api_command(Protocol::Http, m, stats.started.elapsed(), error),
        None => {}
    }
    if sep {
        out.push(b'\n');
    }
    encode::legacy_reply(out, id, &reply);
    Ran::Replied
}

/// Runs a publish line the hand-written reader read, when its channel is owned here (`None`
/// otherwise): the channel check of [`exec::single`], then, for a channel that keeps and
/// delivers nothing (no history, no subscribers: the usual case of publishes nobody listens
/// to), the answer without building the publication or copying the line's data; else the
/// publish applied in place.
fn publish_here(w: &Worker, f: &fast::Publish<'_>, now: Instant) -> Option<Reply> {
    let opts = match exec::check_channel(&w.cfg, f.channel) {
        Ok(opts) => opts,
        Err(e) => return Some(Err(e)),
    };
    if owner_of(f.channel, w.workers) != w.id {
        return None;
    }
    let void = w.shard.borrow().publish_void(f.channel, opts.history_enabled() && !f.skip_history);
    Some(void.unwrap_or_else(|| w.exec_local_at(ShardOp::Publish(f.to_publish()), now)))
}

/// The owner's side: runs a batch and sends the replies home in one message.
fn run_batch(w: &Rc<Worker>, b: LineBatch) {
    let mut replies = Vec::with_capacity(b.lines.len() * 16);
    let mut ends = Vec::with_capacity(b.lines.len());
    let mut stats = RunStats::new();
    let mut start = 0usize;
    for &(seq, end, sep) in &b.lines {
        let line = &b.buf[start..end as usize];
        start = end as usize;
        match run_line(w, line, sep, &mut replies, &mut stats) {
            Ran::Replied => ends.push((seq, replies.len() as u32)),
            Ran::Elsewhere(_) => elsewhere(w, &b, seq, line, sep),
        }
    }
    stats.record();
    if ends.is_empty() {
        return;
    }
    let (conn, gen) = (b.conn, b.gen);
    let replies = Bytes::from(replies);
    let fill = move |w: &Rc<Worker>| {
        let Some(sink) = w.sink(conn, gen) else { return };
        let mut start = 0usize;
        for (seq, end) in ends {
            sink.fill_ready(seq, replies.slice(start..end as usize));
            start = end as usize;
        }
    };
    if b.origin as usize == w.id {
        fill(w);
    } else {
        w.send(b.origin as usize, Msg::Job(Box::new(fill)));
    }
}

/// A batched line that is not a single-channel command owned here (the quick scan was fooled
/// by an odd line): run as a task of its own (so it may finish after lines that follow it),
/// its reply sent home on its own.
fn elsewhere(w: &Rc<Worker>, b: &LineBatch, seq: u64, line: &[u8], sep: bool) {
    let l = decode_line(line);
    let (origin, conn, gen, id) = (b.origin as usize, b.conn, b.gen, l.id);
    let w = w.clone();
    monoio::spawn(async move {
        let reply = match l.command {
            Err(e) => Err(e),
            Ok(cmd) => exec::run(w.clone(), cmd).await,
        };
        let mut v = Vec::with_capacity(64);
        if sep {
            v.push(b'\n');
        }
        encode::legacy_reply(&mut v, id, &reply);
        let v = Bytes::from(v);
        w.send(
            origin,
            Msg::Job(Box::new(move |w| {
                if let Some(sink) = w.sink(conn, gen) {
                    sink.fill_ready(seq, v);
                }
            })),
        );
    });
}
