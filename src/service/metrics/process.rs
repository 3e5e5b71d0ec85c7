//! The process's own figures, read from `/proc/self` when scraped (Linux only; elsewhere nothing).

/// One reading of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub rss_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// The soft limit on open files, when known.
    pub max_fds: Option<u64>,
}

/// Reads `/proc/self`; None when it cannot be read.
pub fn sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe {
        (
            nix::libc::sysconf(nix::libc::_SC_CLK_TCK),
            nix::libc::sysconf(nix::libc::_SC_PAGESIZE),
        )
    };
    let (cpu_ticks, rss_pages) = parse_stat(&stat)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| parse_max_open_files(&limits));
    Some(Sample {
        rss_bytes: rss_pages * page.max(1) as u64,
        cpu_seconds: cpu_ticks as f64 / ticks.max(1) as f64,
        open_fds,
        max_fds,
    })
}

/// `utime + stime` (clock ticks) and `rss` (pages) from a `/proc/<pid>/stat` line. The command
/// name, in parentheses, may itself hold spaces and parentheses: fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14, stime 15, rss 24.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(24)?))
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits`.
fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "1234 (ax on) (x)) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 200000000 4000 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((300, 4000)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_open_files_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_max_open_files("Max open files unlimited unlimited files"),
            None
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let s = sample().expect("/proc/self");
        assert!(s.rss_bytes > 0 && s.open_fds > 0);
    }
}
