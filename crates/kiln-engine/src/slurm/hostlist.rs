//! Slurm's compact lists: host lists (`n[1-3,5],gpu01`) and task counts per node
//! (`2(x3),1`). Slurm prints both in every environment and every `--json`; kiln needs
//! them one entry per node to place tasks and to name nodes.

use crate::EngineError;

/// More hosts than any cluster has: a list that expands past this is a typo or an
/// attack, and expanding it would only eat memory.
const MAX_HOSTS: usize = 1 << 17;

fn syntax(what: &'static str, value: &str, why: impl Into<String>) -> EngineError {
    EngineError::SlurmSyntax {
        what,
        value: value.to_string(),
        why: why.into(),
    }
}

/// Expands a Slurm host list, in Slurm's order: `n[1-3,5],gpu01` → n1 n2 n3 n5 gpu01.
/// A range keeps the width of its lower bound (`n[01-10]` → n01 … n10), and several
/// brackets in one name multiply (`r[1-2]n[1-2]` → r1n1 r1n2 r2n1 r2n2). Empty and
/// `(null)` lists are empty.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, EngineError> {
    let list = list.trim();
    let mut hosts = Vec::new();
    if list.is_empty() || list == "(null)" {
        return Ok(hosts);
    }
    for item in split_top(list, '[', ']') {
        if item.is_empty() {
            return Err(syntax("host list", list, "it has an empty name"));
        }
        let mut names = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            match rest.find('[') {
                None => {
                    if rest.contains(']') {
                        return Err(syntax("host list", list, "a ']' has no '['"));
                    }
                    names.iter_mut().for_each(|n| n.push_str(rest));
                    rest = "";
                }
                Some(open) => {
                    let lit = &rest[..open];
                    if lit.contains(']') {
                        return Err(syntax("host list", list, "a ']' has no '['"));
                    }
                    let close = rest[open..]
                        .find(']')
                        .map(|c| open + c)
                        .ok_or_else(|| syntax("host list", list, "a '[' is not closed"))?;
                    let numbers = expand_ranges(&rest[open + 1..close])
                        .map_err(|why| syntax("host list", list, why))?;
                    let mut next = Vec::with_capacity(names.len() * numbers.len());
                    for n in &names {
                        for num in &numbers {
                            next.push(format!("{n}{lit}{num}"));
                        }
                    }
                    if next.len() + hosts.len() > MAX_HOSTS {
                        return Err(syntax("host list", list, "it names too many hosts"));
                    }
                    names = next;
                    rest = &rest[close + 1..];
                }
            }
        }
        hosts.extend(names);
    }
    Ok(hosts)
}

/// Splits at commas outside brackets or parentheses (`open`/`close`).
pub(crate) fn split_top(s: &str, open: char, close: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.saturating_sub(1);
        } else if c == ',' && depth == 0 {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `1-3,5` or `01-10` → the numbers as strings, each range padded to the width of its
/// lower bound, as Slurm writes them.
fn expand_ranges(ranges: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for r in ranges.split(',') {
        let (lo, hi) = r.split_once('-').unwrap_or((r, r));
        let width = lo.len();
        let lo_n = number(lo)?;
        let hi_n = number(hi)?;
        if hi_n < lo_n {
            return Err(format!("the range {r} runs backwards"));
        }
        if (hi_n - lo_n) as usize + out.len() >= MAX_HOSTS {
            return Err(format!("the range {r} is too long"));
        }
        out.extend((lo_n..=hi_n).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

fn number(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number"));
    }
    s.parse().map_err(|_| format!("{s} is too large"))
}

/// Numbers such as GPU indices (`0-1`, `0,2-3`); `N/A` and the empty string are none.
pub(crate) fn expand_numbers(list: &str) -> Result<Vec<u32>, String> {
    let list = list.trim();
    if list.is_empty() || list == "N/A" {
        return Ok(Vec::new());
    }
    expand_ranges(list)?
        .iter()
        .map(|n| n.parse().map_err(|_| format!("{n} is too large")))
        .collect()
}

/// The shortest list that [`expand_hostlist`] turns back into `hosts`, in the same
/// order: runs of consecutive numbers under one prefix share a bracket. For messages
/// ("starting on n[1-2]") and for `--nodelist`.
pub fn compress_hostlist<S: AsRef<str>>(hosts: &[S]) -> String {
    let mut groups: Vec<Group> = Vec::new();
    for h in hosts {
        let h = h.as_ref();
        let digits = h.len() - h.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let parsed = (digits > 0 && digits < 19)
            .then(|| h[h.len() - digits..].parse::<u64>().ok())
            .flatten();
        let Some(n) = parsed else {
            groups.push(Group::Plain(h));
            continue;
        };
        let prefix = &h[..h.len() - digits];
        if let Some(Group::Numbered {
            prefix: p,
            width,
            runs,
        }) = groups.last_mut()
        {
            // Joins only if the bracket would print this very name back.
            if *p == prefix && format!("{n:0w$}", w = *width) == h[prefix.len()..] {
                match runs.last_mut() {
                    Some((_, last)) if *last + 1 == n => *last = n,
                    _ => runs.push((n, n)),
                }
                continue;
            }
        }
        groups.push(Group::Numbered {
            prefix,
            width: digits,
            runs: vec![(n, n)],
        });
    }
    let parts: Vec<String> = groups.iter().map(Group::render).collect();
    parts.join(",")
}

/// Consecutive names of one prefix and width, as runs of numbers; or a name without
/// a number.
enum Group<'a> {
    Plain(&'a str),
    Numbered {
        prefix: &'a str,
        width: usize,
        runs: Vec<(u64, u64)>,
    },
}

impl Group<'_> {
    fn render(&self) -> String {
        match self {
            Group::Plain(h) => (*h).to_string(),
            Group::Numbered {
                prefix,
                width: w,
                runs,
            } => {
                if let [(a, b)] = runs.as_slice() {
                    if a == b {
                        return format!("{prefix}{a:0w$}");
                    }
                }
                let inner: Vec<String> = runs
                    .iter()
                    .map(|(a, b)| {
                        if a == b {
                            format!("{a:0w$}")
                        } else {
                            format!("{a:0w$}-{b:0w$}")
                        }
                    })
                    .collect();
                format!("{prefix}[{}]", inner.join(","))
            }
        }
    }
}

/// Expands `SLURM_TASKS_PER_NODE`: `2(x3),1` → 2 2 2 1, one count per node of the
/// job's host list.
pub fn expand_tasks_per_node(s: &str) -> Result<Vec<u32>, EngineError> {
    let what = "task counts per node";
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    for item in s.trim().split(',') {
        let (count, times) = match item.split_once('(') {
            None => (item, "1"),
            Some((count, rep)) => {
                let times = rep
                    .strip_prefix('x')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| syntax(what, s, format!("{item} is not N or N(xM)")))?;
                (count, times)
            }
        };
        let count = number(count).map_err(|why| syntax(what, s, why))?;
        let times = number(times).map_err(|why| syntax(what, s, why))?;
        let count = u32::try_from(count).map_err(|_| syntax(what, s, "a count is too large"))?;
        if times as usize + out.len() > MAX_HOSTS {
            return Err(syntax(what, s, "it counts too many nodes"));
        }
        out.extend(std::iter::repeat_n(count, times as usize));
    }
    Ok(out)
}

/// The inverse of [`expand_tasks_per_node`], written as Slurm writes it.
pub fn compress_tasks_per_node(counts: &[u32]) -> String {
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for &c in counts {
        match runs.last_mut() {
            Some((last, n)) if *last == c => *n += 1,
            _ => runs.push((c, 1)),
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .map(|&(c, n)| {
            if n == 1 {
                c.to_string()
            } else {
                format!("{c}(x{n})")
            }
        })
        .collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hosts(list: &str) -> Vec<String> {
        expand_hostlist(list).unwrap()
    }

    #[test]
    fn expands_host_lists_as_slurm_writes_them() {
        let cases: &[(&str, &[&str])] = &[
            ("n1", &["n1"]),
            ("n[1-3,5],gpu01", &["n1", "n2", "n3", "n5", "gpu01"]),
            ("n[1-2]", &["n1", "n2"]),
            ("n[08-10]", &["n08", "n09", "n10"]),
            ("n[9-11]", &["n9", "n10", "n11"]),
            ("a[1-2]b[1-2]", &["a1b1", "a1b2", "a2b1", "a2b2"]),
            ("rack1-n[1,3]", &["rack1-n1", "rack1-n3"]),
            ("vm", &["vm"]),
            ("", &[]),
            ("(null)", &[]),
        ];
        for (list, want) in cases {
            assert_eq!(hosts(list), *want, "{list}");
        }
    }

    #[test]
    fn refuses_broken_host_lists() {
        for bad in [
            "n[1-",
            "n[3-1]",
            "n[a-b]",
            "n]1[",
            "n1,,n2",
            "n[1-99999999]",
            "n[]",
        ] {
            let err = expand_hostlist(bad).unwrap_err().to_string();
            assert!(err.contains("host list"), "{bad}: {err}");
        }
    }

    #[test]
    fn compresses_in_order() {
        let cases: &[(&[&str], &str)] = &[
            (&["n1", "n2", "n3", "n5", "gpu01"], "n[1-3,5],gpu01"),
            (&["n08", "n09", "n10"], "n[08-10]"),
            (&["n9", "n10"], "n[9-10]"),
            (&["n2", "n1"], "n[2,1]"),
            (&["vm", "vm"], "vm,vm"),
            (&["n01"], "n01"),
        ];
        for (list, want) in cases {
            assert_eq!(compress_hostlist(list), *want);
        }
    }

    #[test]
    fn expands_task_counts() {
        assert_eq!(expand_tasks_per_node("2(x3),1").unwrap(), [2, 2, 2, 1]);
        assert_eq!(expand_tasks_per_node("1(x2)").unwrap(), [1, 1]);
        assert_eq!(expand_tasks_per_node("2,3").unwrap(), [2, 3]);
        assert_eq!(expand_tasks_per_node("").unwrap(), Vec::<u32>::new());
        for bad in ["2(3)", "x", "2(x3", "-1", "1(x99999999)"] {
            assert!(expand_tasks_per_node(bad).is_err(), "{bad}");
        }
        assert_eq!(compress_tasks_per_node(&[2, 2, 2, 1]), "2(x3),1");
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            ("[a-c]{1,2}([0-9]-)?", 0u64..40, 0usize..4)
                .prop_map(|(p, n, w)| format!("{p}{n:0w$}")),
            "[a-c]{1,4}",
        ]
    }

    proptest! {
        #[test]
        fn host_lists_round_trip(list in prop::collection::vec(host(), 0..30)) {
            prop_assert_eq!(hosts(&compress_hostlist(&list)), list);
        }

        #[test]
        fn any_text_is_read_or_refused(s in "\\PC{0,24}") {
            let _ = expand_hostlist(&s);
            let _ = expand_tasks_per_node(&s);
            let _ = expand_numbers(&s);
        }

        #[test]
        fn task_counts_round_trip(counts in prop::collection::vec(1u32..4, 0..30)) {
            let s = compress_tasks_per_node(&counts);
            prop_assert_eq!(expand_tasks_per_node(&s).unwrap(), counts);
        }
    }
}
