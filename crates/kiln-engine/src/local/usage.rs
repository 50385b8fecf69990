//! CPU time and resident memory of each task's process group, from /proc.
//! A task is its process group (the supervisor starts it with its own), so
//! one pass over /proc covers every task at once, children included.

use std::collections::HashMap;

/// What one process group used, summed over its processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupUsage {
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    /// Its processes, to find them among a GPU's.
    pub pids: Vec<u32>,
}

/// The process group, CPU ticks (utime + stime) and resident pages from a
/// `/proc/<pid>/stat` line. The command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<(i32, u64, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) ... rss(21)
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: i64 = f.get(21)?.parse().ok()?;
    Some((pgrp, utime + stime, rss.max(0) as u64))
}

/// The session id from a `/proc/<pid>/stat` line.
pub fn session_of(line: &str) -> Option<i32> {
    line[line.rfind(')')? + 1..]
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Usage of the process groups in `groups` (or of the sessions: a
/// container's processes share its init's session), from one scan of /proc.
pub fn scan(groups: &[i32]) -> HashMap<i32, GroupUsage> {
    let mut out: HashMap<i32, GroupUsage> = HashMap::new();
    if groups.is_empty() {
        return out;
    }
    let page = page_size();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Processes come and go during the scan; a vanished one is skipped.
        let Ok(text) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some((pgrp, ticks, pages)) = parse_stat(&text) {
            // A container's processes are known by their session instead.
            let key = if groups.contains(&pgrp) {
                Some(pgrp)
            } else {
                session_of(&text).filter(|s| groups.contains(s))
            };
            if let Some(key) = key {
                let u = out.entry(key).or_default();
                u.cpu_ticks += ticks;
                u.rss_bytes += pages * page;
                if let Ok(pid) = name.to_string_lossy().parse() {
                    u.pids.push(pid);
                }
            }
        }
    }
    out
}

/// Clock ticks per second, for turning ticks into CPU seconds.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names_parse() {
        let line = "4242 (python3 (train) x) R 1 4240 4240 0 -1 4194304 100 0 0 0 750 250 0 0 20 0 3 0 12345 1000000 2560 18446744073709551615";
        assert_eq!(parse_stat(line), Some((4240, 1000, 2560)));
        assert_eq!(session_of(line), Some(4240));
        assert_eq!(session_of("7 (sh) S 1 7 5 0"), Some(5));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1"), None);
    }

    #[test]
    fn this_process_group_is_seen_burning_cpu() {
        let me = unsafe { libc::getpgrp() };
        let start = scan(&[me]);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let end = scan(&[me]);
        let (a, b) = (&start[&me], &end[&me]);
        assert!(b.pids.contains(&std::process::id()), "{b:?}");
        assert!(b.cpu_ticks > a.cpu_ticks, "{a:?} → {b:?}");
        assert!(b.rss_bytes > 1 << 20);
    }
}
