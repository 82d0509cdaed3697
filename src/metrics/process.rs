//! `process_*`: the process figures the Prometheus Go client exports on Linux (and so
//! Centrifugo), parsed from the text of `/proc` files. The caller reads the files
//! (`http::ops`, once per scrape); parsing and rendering here are pure.

use std::fmt::Write;

/// What the `/proc` files and `sysconf` said; a file that could not be read is empty (its
/// families are left out, as the Go client leaves them out).
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    /// `/proc/self/stat`.
    pub stat: &'a str,
    /// `/proc/stat` (for `btime`, the boot time).
    pub system_stat: &'a str,
    /// `/proc/self/limits`.
    pub limits: &'a str,
    /// `/proc/self/net/netstat`.
    pub netstat: &'a str,
    /// Entries of `/proc/self/fd`.
    pub open_fds: Option<u64>,
    /// `sysconf(_SC_PAGESIZE)` and `sysconf(_SC_CLK_TCK)`.
    pub page_size: u64,
    pub clock_ticks: u64,
}

/// The process's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    start_time: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    virtual_max_bytes: Option<u64>,
    net_receive: Option<u64>,
    net_transmit: Option<u64>,
}

/// A soft limit of `/proc/self/limits` (`unlimited` reads as `u64::MAX`, as in the Go client).
fn limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// `IpExt` `field` of `/proc/self/net/netstat` (a header line of names, then one of values).
fn ip_ext(netstat: &str, field: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("IpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

impl Stats {
    /// Parses what was read; fields whose source is missing or malformed stay out.
    pub fn parse(s: &Sources) -> Stats {
        let mut out = Stats { open_fds: s.open_fds, ..Default::default() };
        // The command name (field 2) may hold spaces and parentheses: fields count from the
        // last ')'. After it: state is field 3, utime 14, stime 15, starttime 22, vsize 23,
        // rss 24.
        if let Some(rest) = s.stat.rfind(')').map(|i| &s.stat[i + 1..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
            let ticks = s.clock_ticks.max(1) as f64;
            if let (Some(u), Some(st)) = (field(14), field(15)) {
                out.cpu_seconds = Some((u + st) as f64 / ticks);
            }
            out.virtual_bytes = field(23);
            out.resident_bytes = field(24).map(|p| p * s.page_size);
            let btime = s.system_stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok());
            if let (Some(start), Some(boot)) = (field(22), btime) {
                out.start_time = Some(boot as f64 + start as f64 / ticks);
            }
        }
        out.max_fds = limit(s.limits, "Max open files");
        out.virtual_max_bytes = limit(s.limits, "Max address space");
        out.net_receive = ip_ext(s.netstat, "InOctets");
        out.net_transmit = ip_ext(s.netstat, "OutOctets");
        out
    }

    /// Appends the families that have a value.
    pub fn render(&self, o: &mut String) {
        let mut one = |name: &str, help: &str, kind: &str, v: Option<String>| {
            if let Some(v) = v {
                let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
            }
        };
        let int = |v: Option<u64>| v.map(|v| v.to_string());
        let float = |v: Option<f64>| v.map(|v| v.to_string());
        one(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            float(self.cpu_seconds),
        );
        one("process_max_fds", "Maximum number of open file descriptors.", "gauge", int(self.max_fds));
        one(
            "process_network_receive_bytes_total",
            "Number of bytes received by the process over the network.",
            "counter",
            int(self.net_receive),
        );
        one(
            "process_network_transmit_bytes_total",
            "Number of bytes sent by the process over the network.",
            "counter",
            int(self.net_transmit),
        );
        one("process_open_fds", "Number of open file descriptors.", "gauge", int(self.open_fds));
        one("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", int(self.resident_bytes));
        one(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            float(self.start_time),
        );
        one("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", int(self.virtual_bytes));
        one(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            "gauge",
            int(self.virtual_max_bytes),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (gyre (w) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                        18 0 123400 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
                          Max cpu time              unlimited            unlimited            seconds   \n\
                          Max open files            65536                1048576              files     \n\
                          Max address space         unlimited            unlimited            bytes     \n";
    const NETSTAT: &str = "TcpExt: SyncookiesSent SyncookiesRecv\nTcpExt: 0 0\n\
                           IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts OutBcastPkts InOctets OutOctets\n\
                           IpExt: 0 0 0 0 0 0 5000 7000\n";

    #[test]
    fn parses_and_renders_proc_files() {
        let s = Stats::parse(&Sources {
            stat: STAT,
            system_stat: "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n",
            limits: LIMITS,
            netstat: NETSTAT,
            open_fds: Some(12),
            page_size: 4096,
            clock_ticks: 100,
        });
        let mut o = String::new();
        s.render(&mut o);
        for line in [
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 3",
            "process_resident_memory_bytes 8388608",
            "process_virtual_memory_bytes 987654321",
            "process_virtual_memory_max_bytes 18446744073709551615",
            "process_start_time_seconds 1700001234",
            "process_open_fds 12",
            "process_max_fds 65536",
            "process_network_receive_bytes_total 5000",
            "process_network_transmit_bytes_total 7000",
        ] {
            assert!(o.lines().any(|l| l == line), "missing {line:?} in:\n{o}");
        }
    }

    #[test]
    fn missing_or_malformed_sources_leave_families_out() {
        let s = Stats::parse(&Sources { stat: "garbage", limits: "Max open files  x", ..Default::default() });
        assert_eq!(s, Stats::default());
        let mut o = String::new();
        s.render(&mut o);
        assert_eq!(o, "");
    }
}
