//! Sizes, CPU counts and durations as people write them ("8Gi", "500m", "1h30m"),
//! converted to the integer units of the canonical model (MiB, cores, seconds).

const MIB: u128 = 1024 * 1024;

/// Unit suffixes of Kubernetes quantities, as a multiplier in bytes.
const BYTE_UNITS: &[(&str, u128)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
];

/// How a number without a unit is read: Kubernetes means bytes, kiln's own
/// format and OpenPAI mean MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareUnit {
    Bytes,
    Mebibytes,
}

/// Parses a memory size to MiB, rounding up (a request is never shrunk).
pub fn parse_memory_mib(text: &str, bare: BareUnit) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = split_number(t);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size; write e.g. 4096 (MiB), \"512Mi\" or \"8Gi\""
        ));
    }
    let mult = if unit.is_empty() {
        match bare {
            BareUnit::Bytes => 1,
            BareUnit::Mebibytes => MIB,
        }
    } else {
        BYTE_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                format!("{text:?} has unknown unit {unit:?}; use Ki, Mi, Gi, Ti, k, M, G or T")
            })?
    };
    let bytes = scaled(digits, mult).ok_or_else(|| format!("{text:?} is not a valid size"))?;
    let mib = bytes.div_ceil(MIB);
    u64::try_from(mib).map_err(|_| format!("{text:?} is too large"))
}

/// Formats MiB with the largest binary unit that divides it exactly.
pub fn format_memory_mib(mib: u64) -> String {
    for (unit, per) in [("Ti", 1u64 << 20), ("Gi", 1 << 10)] {
        if mib >= per && mib.is_multiple_of(per) {
            return format!("{}{unit}", mib / per);
        }
    }
    format!("{mib}Mi")
}

/// Parses a CPU quantity ("2", "1.5", "500m") to millicores.
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = split_number(t);
    let mult = match unit {
        "" => 1000,
        "m" => 1,
        _ => {
            return Err(format!(
                "{text:?} is not a CPU count; write e.g. 2 or \"500m\""
            ))
        }
    };
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a CPU count; write e.g. 2 or \"500m\""
        ));
    }
    let millis =
        scaled(digits, mult).ok_or_else(|| format!("{text:?} is not a valid CPU count"))?;
    u64::try_from(millis).map_err(|_| format!("{text:?} is too large"))
}

/// Parses "90", "90s", "30m", "2h", "1d", "1h30m" to seconds.
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let bad =
        || format!("{text:?} is not a duration; write e.g. 3600, \"90m\", \"2h\" or \"1d12h\"");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(secs);
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if end == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..end].parse().map_err(|_| bad())?;
        let unit = rest[end..].chars().next().ok_or_else(bad)?;
        let per = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(per)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = &rest[end + 1..];
    }
    Ok(total)
}

/// Formats seconds as the shortest `1d2h3m4s` form (`0s` for zero).
pub fn format_duration_secs(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = secs;
    for (unit, per) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= per {
            out.push_str(&format!("{}{unit}", left / per));
            left %= per;
        }
    }
    out
}

/// Splits "12.5Gi" into ("12.5", "Gi").
fn split_number(t: &str) -> (&str, &str) {
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    (&t[..end], &t[end..])
}

/// `digits` (a decimal, at most one '.') times `mult`, rounded up; None when
/// malformed or overflowing.
fn scaled(digits: &str, mult: u128) -> Option<u128> {
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int.checked_mul(mult)?;
    if !frac.is_empty() {
        let f: u128 = frac.parse().ok()?;
        let scale = 10u128.pow(frac.len() as u32);
        total = total.checked_add((f.checked_mul(mult)?).div_ceil(scale))?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory_mib("8Gi", BareUnit::Bytes), Ok(8192));
        assert_eq!(parse_memory_mib("512Mi", BareUnit::Bytes), Ok(512));
        assert_eq!(parse_memory_mib("1G", BareUnit::Bytes), Ok(954));
        assert_eq!(parse_memory_mib("1.5Gi", BareUnit::Bytes), Ok(1536));
        assert_eq!(parse_memory_mib("1048576", BareUnit::Bytes), Ok(1));
        assert_eq!(parse_memory_mib("1", BareUnit::Bytes), Ok(1));
        assert_eq!(parse_memory_mib("4096", BareUnit::Mebibytes), Ok(4096));
        assert!(parse_memory_mib("8GB", BareUnit::Bytes).is_err());
        assert!(parse_memory_mib("Gi", BareUnit::Bytes).is_err());
        assert!(parse_memory_mib("1.2.3Gi", BareUnit::Bytes).is_err());
        assert!(parse_memory_mib("99999999999999999999999999999999Pi", BareUnit::Bytes).is_err());
    }

    #[test]
    fn memory_formats_with_exact_units() {
        assert_eq!(format_memory_mib(8192), "8Gi");
        assert_eq!(format_memory_mib(1000), "1000Mi");
        assert_eq!(format_memory_mib(1 << 20), "1Ti");
        for mib in [1, 100, 1024, 1536, 4096, 123_456] {
            assert_eq!(
                parse_memory_mib(&format_memory_mib(mib), BareUnit::Bytes),
                Ok(mib)
            );
        }
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert!(parse_cpu_millis("2 cores").is_err());
        assert!(parse_cpu_millis("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("90m"), Ok(5400));
        assert_eq!(parse_duration_secs("1h30m"), Ok(5400));
        assert_eq!(parse_duration_secs("1d"), Ok(86_400));
        assert!(parse_duration_secs("1x").is_err());
        assert!(parse_duration_secs("h").is_err());
        assert!(parse_duration_secs("").is_err());
        assert!(parse_duration_secs("99999999999999999999d").is_err());
        assert_eq!(format_duration_secs(5400), "1h30m");
        assert_eq!(format_duration_secs(90_061), "1d1h1m1s");
        for s in [0, 1, 59, 60, 3600, 86_399, 1_000_000] {
            assert_eq!(parse_duration_secs(&format_duration_secs(s)), Ok(s));
        }
    }
}
