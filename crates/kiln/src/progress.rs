//! What `kiln files put|get` copied: sizes in words, and a progress bar
//! on stderr while a big transfer runs. The bar is drawn only at a
//! terminal, so logs and pipes get the one closing line and nothing else.

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// Transfers smaller than this finish before a bar would be worth reading.
const BIG: u64 = 8 << 20;
/// How often the bar is redrawn at most.
const EVERY: Duration = Duration::from_millis(100);
const WIDTH: u64 = 24;

/// `1536` → `1.5 KiB`; bytes below 1 KiB as they are.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `1 file`, `3 files`.
pub fn files(n: u64) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// A transfer of `total` bytes under way; the bar goes away when it is
/// dropped, also when the transfer fails.
pub struct Progress {
    verb: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
    show: bool,
}

impl Progress {
    /// `verb` is what the bar says it is doing ("uploading").
    pub fn new(verb: &'static str, total: u64) -> Progress {
        Progress {
            verb,
            total,
            done: 0,
            started: Instant::now(),
            drawn: None,
            show: total >= BIG && std::io::stderr().is_terminal(),
        }
    }

    /// Bytes copied so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if !self.show || self.drawn.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        let line = bar(self.verb, self.done, self.total, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        // The bar is a courtesy: a stderr that cannot be written to must
        // not fail the transfer.
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
        self.drawn = Some(Instant::now());
    }

    /// Wraps `inner` so that what is read through it counts here.
    pub fn reader<'a, R: Read>(&'a mut self, inner: R) -> Counting<'a, R> {
        Counting {
            inner,
            progress: self,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.drawn.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// One line of the bar: `uploading [#####-------]  42%  3.4 MiB of 8.0 MiB, 1.2 MiB/s`.
fn bar(verb: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let total = total.max(1);
    let done_capped = done.min(total);
    let filled = (done_capped * WIDTH / total) as usize;
    let pct = done_capped * 100 / total;
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    format!(
        "{verb} [{}{}] {pct:>3}%  {} of {}, {}/s",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        size(done),
        size(total),
        size(rate as u64)
    )
}

/// A reader that counts what passes through it into a [`Progress`].
pub struct Counting<'a, R> {
    inner: R,
    progress: &'a mut Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(12_700), "12.4 KiB");
        assert_eq!(size(20 << 20), "20.0 MiB");
        assert_eq!(files(1), "1 file");
        assert_eq!(files(0), "0 files");
    }

    #[test]
    fn the_bar_fills_with_the_transfer() {
        let half = bar("uploading", 4 << 20, 8 << 20, Duration::from_secs(2));
        assert_eq!(
            half,
            "uploading [############------------]  50%  4.0 MiB of 8.0 MiB, 2.0 MiB/s"
        );
        let full = bar("downloading", 9, 9, Duration::ZERO);
        assert!(full.contains("[########################] 100%"), "{full}");
    }

    #[test]
    fn counting_sees_every_byte_and_small_transfers_draw_nothing() {
        let mut p = Progress::new("uploading", 5);
        let mut out = Vec::new();
        std::io::copy(&mut p.reader(&b"hello"[..]), &mut out).expect("copy");
        assert_eq!(p.done(), 5);
        assert!(!p.show && p.drawn.is_none());
    }
}
