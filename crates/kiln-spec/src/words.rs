//! Counted nouns in English messages: "1 GPU", "2 GPUs", "1 task". Every
//! message that puts a number before a noun goes through here, so no reader
//! sees "1 GPUs" or the hedge "task(s)".

/// `n` and the noun in the form that agrees with it: `count(1, "GPU")` is
/// "1 GPU", `count(2, "GPU")` is "2 GPUs". For nouns whose plural is not the
/// singular plus "s", use [`count_as`].
pub fn count(n: impl Into<u64>, one: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// Like [`count`] with the plural spelled out: `count_as(2, "retry", "retries")`.
pub fn count_as(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_everything_else_plural() {
        assert_eq!(count(1u32, "GPU"), "1 GPU");
        assert_eq!(count(0u32, "GPU"), "0 GPUs");
        assert_eq!(count(2u64, "task"), "2 tasks");
        assert_eq!(count(1u32, "CPU"), "1 CPU");
        assert_eq!(count_as(1u32, "retry", "retries"), "1 retry");
        assert_eq!(count_as(3u32, "retry", "retries"), "3 retries");
    }
}
