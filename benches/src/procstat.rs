//! A process's CPU time and memory, read from `/proc` (Linux).

use std::io;
use std::time::Duration;

/// One reading of `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User CPU time of every thread, in clock ticks.
    pub utime_ticks: u64,
    /// System CPU time of every thread, in clock ticks.
    pub stime_ticks: u64,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS), KiB.
    pub hwm_kib: u64,
    /// `Threads`.
    pub threads: u64,
    /// Time on CPU of the live threads, ns (sum of `/proc/PID/task/*/schedstat`):
    /// finer than the clock ticks of `stat`, but blind to exited threads.
    pub sched_ns: u64,
}

impl ProcSample {
    /// User + system CPU time.
    pub fn cpu(&self) -> Duration {
        ticks_to_duration(self.utime_ticks + self.stime_ticks)
    }

    /// Time on CPU from schedstat (ns resolution), when available; else [`Self::cpu`].
    pub fn cpu_fine(&self) -> Duration {
        if self.sched_ns > 0 {
            Duration::from_nanos(self.sched_ns)
        } else {
            self.cpu()
        }
    }

    /// User CPU time.
    pub fn user(&self) -> Duration {
        ticks_to_duration(self.utime_ticks)
    }

    /// System CPU time.
    pub fn system(&self) -> Duration {
        ticks_to_duration(self.stime_ticks)
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, normally 100).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let hz = clock_ticks_per_second();
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let mut s = parse_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        let field = |prefix: &str| -> Option<u64> {
            line.strip_prefix(prefix)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        if let Some(v) = field("VmRSS:") {
            s.rss_kib = v;
        } else if let Some(v) = field("VmHWM:") {
            s.hwm_kib = v;
        } else if let Some(v) = field("Threads:") {
            s.threads = v;
        }
    }
    s.sched_ns = sched_ns(pid);
    Ok(s)
}

/// Sum of the first field (ns on CPU) of every thread's `schedstat`; 0 when unreadable.
pub fn sched_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` line.
pub fn parse_stat(stat: &str) -> Option<ProcSample> {
    // The command name (field 2) is in parentheses and may contain spaces:
    // count fields from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field n is fields[n - 3].
    Some(ProcSample {
        utime_ticks: fields.get(11)?.parse().ok()?,
        stime_ticks: fields.get(12)?.parse().ok()?,
        ..ProcSample::default()
    })
}

/// This process's own user + system CPU time (`getrusage(RUSAGE_SELF)`).
pub fn self_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// `/proc/loadavg`'s three load averages, as text.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Raises this process's soft open-file limit to its hard limit (children
/// started afterwards inherit it). Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    // SAFETY: an all-zero rlimit is a valid value to be overwritten.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: `r` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(r.rlim_cur as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let line =
            "1234 (chat flow) S 1 1234 1234 0 -1 4194560 500 0 0 0 77 33 0 0 20 0 3 0 100 1000 200";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.utime_ticks, s.stime_ticks), (77, 33));
    }

    #[test]
    fn reads_own_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.threads >= 1);
        assert!(s.cpu_fine() > Duration::ZERO);
    }
}
