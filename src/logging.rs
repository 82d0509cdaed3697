//! The process's log output, as Centrifugo writes it: with `log.file` set, JSON lines appended
//! to that file; otherwise console lines on stdout when stdout is a terminal, and JSON lines
//! on stderr when it is not (a pipe, a file, a container's log). A JSON line has zerolog's
//! shape, `{"level":"info",<fields>,"time":"2006-01-02T15:04:05Z","message":"..."}`, so log
//! pipelines built for Centrifugo read Gyre's. A console line reads
//! `2006-01-02 15:04:05 [INF] message key=value`. Called once, by `gyre` at start-up.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A field's value as the event gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// An event's message and other fields, in the order they were written.
#[derive(Debug, Default)]
pub struct Fields {
    pub message: String,
    pub fields: Vec<(&'static str, FieldValue)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name(), FieldValue::Str(text)));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push((field.name(), FieldValue::Str(value.to_owned())));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), FieldValue::I64(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), FieldValue::U64(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), FieldValue::F64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), FieldValue::Bool(value)));
    }
}

/// Wall-clock time split into local calendar fields, with the zone's offset in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub offset: i64,
}

impl Stamp {
    /// Now, in the local time zone (UTC when it cannot be read).
    pub fn now() -> Stamp {
        let t = unsafe { libc::time(std::ptr::null_mut()) };
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            return Stamp { year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0, offset: 0 };
        }
        Stamp {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec.min(59) as u32,
            offset: tm.tm_gmtoff,
        }
    }

    /// RFC 3339, as zerolog writes `time`: `2006-01-02T15:04:05Z` or `...+03:00`.
    pub fn rfc3339(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.offset == 0 {
            s.push('Z');
        } else {
            let (sign, off) = if self.offset < 0 { ('-', -self.offset) } else { ('+', self.offset) };
            let _ = write!(s, "{sign}{:02}:{:02}", off / 3600, off % 3600 / 60);
        }
        s
    }

    /// `2006-01-02 15:04:05`, the console's time.
    pub fn console(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// One JSON line (without the newline).
pub fn json_line(level: &Level, f: &Fields, time: &Stamp) -> String {
    let mut out = String::with_capacity(96 + f.message.len());
    out.push_str("{\"level\":\"");
    out.push_str(level_name(level));
    out.push('"');
    for (name, value) in &f.fields {
        out.push(',');
        push_json_str(&mut out, name);
        out.push(':');
        match value {
            FieldValue::Str(s) => push_json_str(&mut out, s),
            FieldValue::I64(n) => out.push_str(&n.to_string()),
            FieldValue::U64(n) => out.push_str(&n.to_string()),
            FieldValue::F64(n) if n.is_finite() => out.push_str(&n.to_string()),
            FieldValue::F64(n) => push_json_str(&mut out, &n.to_string()),
            FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push_str(",\"time\":\"");
    out.push_str(&time.rfc3339());
    out.push_str("\",\"message\":");
    push_json_str(&mut out, &f.message);
    out.push('}');
    out
}

/// One console line (without the newline): fields sorted by name, `error` first.
pub fn console_line(level: &Level, f: &Fields, time: &Stamp, color: bool) -> String {
    let paint = |text: &str, code: &str| if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() };
    let label = match *level {
        Level::TRACE => paint("TRC", "34"),
        Level::DEBUG => paint("DBG", "35"),
        Level::INFO => paint("INF", "32"),
        Level::WARN => paint("WRN", "33"),
        Level::ERROR => paint("ERR", "31"),
    };
    let mut out = format!("{} [{label}] {}", paint(&time.console(), "90"), f.message);
    let mut fields: Vec<&(&str, FieldValue)> = f.fields.iter().collect();
    fields.sort_by_key(|(name, _)| (*name != "error", *name));
    for (name, value) in fields {
        let text = match value {
            FieldValue::Str(s) if s.is_empty() || s.contains([' ', '"', '=']) => {
                serde_json::to_string(s).unwrap_or_default()
            }
            FieldValue::Str(s) => s.clone(),
            FieldValue::I64(n) => n.to_string(),
            FieldValue::U64(n) => n.to_string(),
            FieldValue::F64(n) => n.to_string(),
            FieldValue::Bool(b) => b.to_string(),
        };
        let _ = write!(out, " {}{text}", paint(&format!("{name}="), "36"));
    }
    out
}

/// The event formatter: JSON or console lines.
struct Lines {
    json: bool,
    color: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = event.metadata().level();
        let now = Stamp::now();
        let line = if self.json { json_line(level, &f, &now) } else { console_line(level, &f, &now, self.color) };
        writeln!(w, "{line}")
    }
}

/// The filter of a `log.level` (`none` and unknown levels log nothing).
pub fn level_filter(level: &str) -> LevelFilter {
    match level {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warn" => LevelFilter::WARN,
        "error" | "fatal" => LevelFilter::ERROR,
        _ => LevelFilter::OFF,
    }
}

/// Installs the process's logger for `log.level` and `log.file` (see the module docs).
/// Returns whether anything is logged; an error when the file cannot be opened.
pub fn init(level: &str, file: &str) -> Result<bool, String> {
    let filter = level_filter(level);
    let builder = tracing_subscriber::fmt().with_max_level(filter);
    if !file.is_empty() {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(file)
            .map_err(|e| format!("log.file: cannot open {file}: {e}"))?;
        builder.event_format(Lines { json: true, color: false }).with_writer(Arc::new(f)).init();
    } else if std::io::stdout().is_terminal() {
        builder.event_format(Lines { json: false, color: true }).with_writer(std::io::stdout).init();
    } else {
        builder.event_format(Lines { json: true, color: false }).with_writer(std::io::stderr).init();
    }
    Ok(filter != LevelFilter::OFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields {
            message: "using config file \"x\"".into(),
            fields: vec![
                ("path", FieldValue::Str("/etc/a b.json".into())),
                ("pid", FieldValue::U64(7)),
                ("error", FieldValue::Str("boom".into())),
                ("ok", FieldValue::Bool(true)),
                ("delta", FieldValue::I64(-3)),
            ],
        }
    }

    const NOON: Stamp = Stamp { year: 2025, month: 3, day: 4, hour: 12, minute: 5, second: 6, offset: 0 };

    #[test]
    fn json_lines_have_zerologs_shape() {
        let line = json_line(&Level::INFO, &fields(), &NOON);
        assert_eq!(
            line,
            r#"{"level":"info","path":"/etc/a b.json","pid":7,"error":"boom","ok":true,"delta":-3,"time":"2025-03-04T12:05:06Z","message":"using config file \"x\""}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], "using config file \"x\"");
        let east = Stamp { offset: 3 * 3600 + 1800, ..NOON };
        assert!(json_line(&Level::WARN, &Fields::default(), &east)
            .contains(r#""level":"warn","time":"2025-03-04T12:05:06+03:30""#));
        assert!(Stamp { offset: -7200, ..NOON }.rfc3339().ends_with("-02:00"));
    }

    #[test]
    fn console_lines() {
        assert_eq!(
            console_line(&Level::ERROR, &fields(), &NOON, false),
            r#"2025-03-04 12:05:06 [ERR] using config file "x" error=boom delta=-3 ok=true path="/etc/a b.json" pid=7"#
        );
        let colored = console_line(&Level::INFO, &Fields { message: "m".into(), fields: vec![] }, &NOON, true);
        assert_eq!(colored, "\x1b[90m2025-03-04 12:05:06\x1b[0m [\x1b[32mINF\x1b[0m] m");
    }

    #[test]
    fn now_is_a_calendar_time() {
        let s = Stamp::now();
        assert!(s.year >= 2024 && (1..=12).contains(&s.month) && (1..=31).contains(&s.day) && s.hour < 24);
        assert_eq!(s.rfc3339().len(), if s.offset == 0 { 20 } else { 25 });
        assert_eq!(level_filter("fatal"), LevelFilter::ERROR);
        assert_eq!(level_filter("none"), LevelFilter::OFF);
    }
}
