//! Publish lines of a legacy stream, spread over the workers that own their channels.
//!
//! The reading worker does not read every line through: for a line that looks like a publish
//! it only finds the channel ([`fast::route`]), and
//! * when it owns the channel itself, it runs the line on the spot and appends the reply to
//!   its own replies;
//! * otherwise it copies the raw line into a batch for the channel's owner.
//!
//! Consecutive lines taken this way form a group: one reply slot for all of them, however
//! many lines and owners (no slot, clock reading or message per line). The group closes when
//! the chunk being read is done, or before a line of the general path. Then each batch leaves
//! as one message; its owner reads each line ([`fast::publish`], or the general decoder),
//! executes it, writes the batch's replies into one buffer and sends it back as one message
//! (the group's part from that worker). Once every part is in, the replies are put together
//! in the lines' order ([`Group::merge`]) and the slot is ready. A group with no line of
//! another worker is a ready piece at once.
//!
//! Lines of one channel always take the same way to the same owner, in order, so their
//! publications keep the request's order. Anything else (other methods, lines the quick scan
//! cannot place, the Redis engine, whose publishes run on the reading worker anyway) takes the
//! general path of one command at a time; the group before such a command is closed and its
//! batches sent first, so that it cannot overtake them.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::out::{ConnOut, Group};
use crate::api::parse::{self, decode_line};
use crate::api::{encode, fast, Method, Reply};
use crate::exec;
use crate::metrics::{self, Protocol};
use crate::push::Fanout;
use crate::runtime::worker::{Msg, Worker};
use crate::shard::{owner_of, ShardOp};

/// Raw lines for one owner, from one group of the reading worker.
pub struct LineBatch {
    origin: u16,
    conn: u32,
    gen: u32,
    /// The group's reply slot (set when the group closes).
    seq: u64,
    /// The lines, one after the other.
    buf: Vec<u8>,
    /// Per line: where it ends in `buf`, and whether its reply starts with the newline that
    /// separates it from the previous one.
    lines: Vec<(u32, bool)>,
}

/// Per-request state of the spreading (see the module docs).
pub struct Pipe {
    conn: u32,
    gen: u32,
    /// Whether lines are spread (the memory engine; with Redis the reading worker runs
    /// publishes itself).
    spread: bool,
    /// Replies of the open group's lines run here, and where each ends.
    run: Vec<u8>,
    run_ends: Vec<u32>,
    run_stats: RunStats,
    /// The open group's lines in order, as runs of (worker, lines).
    order: Vec<(u16, u32)>,
    /// Bytes of the open group's lines sent to other workers.
    batched: usize,
    batches: Vec<Option<LineBatch>>,
}

/// Lines run together: one clock reading for all, their metrics recorded at once, and the
/// pushes of their publishes sent at once (consecutive publications to one channel then reach
/// each subscriber together, see `Hub::deliver_all`).
struct RunStats {
    started: Instant,
    lines: u64,
    errors: Vec<u32>,
    fanout: Vec<Fanout>,
}

impl RunStats {
    fn new() -> RunStats {
        RunStats { started: Instant::now(), lines: 0, errors: Vec::new(), fanout: Vec::new() }
    }

    /// Sends the pushes of the lines run so far (before a line of another kind runs, and at the
    /// end of the run).
    fn fan_out(&mut self, w: &Worker) {
        if !self.fanout.is_empty() {
            w.fan_out_all(std::mem::take(&mut self.fanout));
        }
    }

    /// Ends the run: its pushes leave, its metrics are recorded.
    fn record(&mut self, w: &Worker) {
        self.fan_out(w);
        if self.lines > 0 || !self.errors.is_empty() {
            metrics::api_commands(Protocol::Http, Method::Publish, self.started.elapsed(), self.lines, &self.errors);
        }
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
            run_ends: Vec::new(),
            run_stats: RunStats::new(),
            order: Vec::new(),
            batched: 0,
            batches: (0..w.workers).map(|_| None).collect(),
        }
    }

    /// Takes a line if it is a publish this path runs. `sep`: the reply follows another one.
    pub fn line(&mut self, w: &Rc<Worker>, line: &[u8], sep: bool) -> Line {
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
                Ran::Replied => {}
                // Not a single-channel command owned here (another method, or a channel that
                // is not the one the scan found): it goes the general way, after the lines
                // before it.
                Ran::Elsewhere(l) => return Line::General(l),
            }
            if w.workers > 1 {
                self.run_ends.push(self.run.len() as u32);
            }
        } else {
            let b = self.batches[owner].get_or_insert_with(|| LineBatch {
                origin: w.id as u16,
                conn: self.conn,
                gen: self.gen,
                seq: 0,
                buf: Vec::with_capacity(16 * 1024),
                lines: Vec::with_capacity(64),
            });
            b.buf.extend_from_slice(line);
            b.lines.push((b.buf.len() as u32, sep));
            self.batched += line.len();
        }
        if w.workers > 1 {
            match self.order.last_mut() {
                Some((o, n)) if *o as usize == owner => *n += 1,
                _ => self.order.push((owner as u16, 1)),
            }
        }
        Line::Taken
    }

    /// Closes the open group: its replies go to the output (at once when all its lines ran
    /// here, else as a group slot), its batches to their owners. Called when a chunk is done,
    /// and before a line takes the general path.
    pub fn flush(&mut self, w: &Worker, out: &ConnOut) {
        self.run_stats.record(w);
        let waiting = self.batches.iter().flatten().count();
        if waiting == 0 {
            self.order.clear();
            self.run_ends.clear();
            if !self.run.is_empty() {
                out.push_piece(Bytes::from(std::mem::take(&mut self.run)));
            }
            return;
        }
        let mut g = Group::new(std::mem::take(&mut self.order), w.workers, waiting);
        if self.run.is_empty() {
            self.run_ends.clear();
        } else {
            g.add(w.id, std::mem::take(&mut self.run), std::mem::take(&mut self.run_ends));
        }
        let seq = out.push_group(g, std::mem::take(&mut self.batched));
        for (to, b) in self.batches.iter_mut().enumerate() {
            if let Some(mut b) = b.take() {
                b.seq = seq;
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
        Some(f) => match publish_here(w, &f, stats) {
            Some(reply) => (f.id, Some(Method::Publish), reply),
            None => return Ran::Elsewhere(None),
        },
        None => {
            // A command of another kind sees the publishes before it delivered.
            stats.fan_out(w);
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
fn publish_here(w: &Worker, f: &fast::Publish<'_>, stats: &mut RunStats) -> Option<Reply> {
    let opts = match exec::check_channel(&w.cfg, f.channel) {
        Ok(opts) => opts,
        Err(e) => return Some(Err(e)),
    };
    if owner_of(f.channel, w.workers) != w.id {
        return None;
    }
    let void = w.shard.borrow().publish_void(f.channel, opts.history_enabled() && !f.skip_history);
    Some(void.unwrap_or_else(|| w.exec_local_into(ShardOp::Publish(f.to_publish()), stats.started, &mut stats.fanout)))
}

/// The owner's side: runs a batch and sends its replies home in one message. A line that is
/// not a single-channel command owned here (the quick scan was fooled by an odd line) runs as
/// a task of its own, and the part leaves once its reply is in.
fn run_batch(w: &Rc<Worker>, b: LineBatch) {
    let mut replies = Vec::with_capacity(b.lines.len() * 16);
    let mut ends = Vec::with_capacity(b.lines.len());
    let mut odd = Vec::new();
    let mut stats = RunStats::new();
    let mut start = 0usize;
    for (k, &(end, sep)) in b.lines.iter().enumerate() {
        let line = &b.buf[start..end as usize];
        start = end as usize;
        if let Ran::Elsewhere(decoded) = run_line(w, line, sep, &mut replies, &mut stats) {
            odd.push((k, decoded.unwrap_or_else(|| decode_line(line)), sep));
        }
        ends.push(replies.len() as u32);
    }
    stats.record(w);
    if odd.is_empty() {
        send_part(w, &b, replies, ends);
        return;
    }
    let w = w.clone();
    monoio::spawn(async move {
        let mut late = Vec::with_capacity(odd.len());
        for (k, l, sep) in odd {
            let reply = match l.command {
                Err(e) => Err(e),
                Ok(cmd) => exec::run(w.clone(), cmd).await,
            };
            let mut v = Vec::with_capacity(64);
            if sep {
                v.push(b'\n');
            }
            encode::legacy_reply(&mut v, l.id, &reply);
            late.push((k, v));
        }
        let (replies, ends) = splice(&replies, &ends, late);
        send_part(&w, &b, replies, ends);
    });
}

/// A part's replies with the late ones (line index, reply) put in their lines' places, which
/// are empty in `replies`.
fn splice(replies: &[u8], ends: &[u32], late: Vec<(usize, Vec<u8>)>) -> (Vec<u8>, Vec<u32>) {
    let extra: usize = late.iter().map(|(_, v)| v.len()).sum();
    let mut out = Vec::with_capacity(replies.len() + extra);
    let mut new_ends = Vec::with_capacity(ends.len());
    let mut late = late.into_iter().peekable();
    let mut start = 0usize;
    for (k, &end) in ends.iter().enumerate() {
        out.extend_from_slice(&replies[start..end as usize]);
        start = end as usize;
        if let Some((_, v)) = late.next_if(|(at, _)| *at == k) {
            out.extend_from_slice(&v);
        }
        new_ends.push(out.len() as u32);
    }
    (out, new_ends)
}

/// Sends a batch's part to the group on the reading worker.
fn send_part(w: &Rc<Worker>, b: &LineBatch, replies: Vec<u8>, ends: Vec<u32>) {
    let (conn, gen, seq, from) = (b.conn, b.gen, b.seq, w.id);
    let fill = move |w: &Rc<Worker>| {
        if let Some(sink) = w.sink(conn, gen) {
            sink.fill_part(seq, from, replies, ends);
        }
    };
    if b.origin as usize == w.id {
        fill(w);
    } else {
        w.send(b.origin as usize, Msg::Job(Box::new(fill)));
    }
}

#[cfg(test)]
mod tests {
    use super::splice;
    use crate::http::out::Group;

    #[test]
    fn late_replies_take_their_lines_places() {
        // Lines 0 and 2 replied at once, 1 and 3 late.
        let (r, e) = splice(b"a\nc", &[1, 1, 3, 3], vec![(1, b"\nb".to_vec()), (3, b"\nd".to_vec())]);
        assert_eq!(r, b"a\nb\nc\nd");
        assert_eq!(e, [1, 3, 5, 7]);
    }

    #[test]
    fn a_group_puts_its_parts_in_the_lines_order() {
        // Lines: w0, w1, w1, w0, w2, w0 (worker 0 reads; 1 and 2 answer later).
        let mut g = Group::new(vec![(0, 1), (1, 2), (0, 1), (2, 1), (0, 1)], 3, 2);
        g.add(0, b"a\nd\nf".to_vec(), vec![1, 3, 5]);
        assert!(!g.arrive(2, b"\ne".to_vec(), vec![2]));
        assert!(g.arrive(1, b"\nb\nc".to_vec(), vec![2, 4]));
        assert_eq!(&g.merge()[..], b"a\nb\nc\nd\ne\nf");
    }

    #[test]
    fn a_group_of_one_worker_is_its_part() {
        let mut g = Group::new(vec![(1, 3)], 2, 1);
        assert!(g.arrive(1, b"a\nb\nc".to_vec(), vec![1, 3, 5]));
        assert_eq!(&g.merge()[..], b"a\nb\nc");
    }
}
