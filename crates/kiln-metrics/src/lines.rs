//! Training metrics found in a job's log lines, as the job prints them.
//!
//! Jobs do not report metrics to kiln; they print them. The forms below are
//! the ones the tools kiln replaces taught users to print (Katib's
//! `{metricName: …, metricValue: …}`, `key=value`) and the ones common
//! PyTorch, Keras and Hugging Face scripts print unprompted (`Loss: 0.88`,
//! `- loss: 0.123 - acc: 0.95`, `{'loss': 0.5, 'epoch': 0.1}`), plus the
//! job's own regular expressions for anything else.
//!
//! Choices a reader of the metrics will care about:
//!
//! * Names are lowercased and runs of whitespace become `_`, so `Average
//!   loss: 0.05` is `average_loss` and `Val Loss: 0.3` is `val_loss`, the
//!   same name `val_loss=0.3` gives. Nothing else is rewritten: the printed
//!   qualifier is kept rather than guessed away, so a test-set `Average loss`
//!   does not collide with the training `loss`, and `train/loss` stays
//!   `train/loss`.
//! * `Name: value` is accepted only for known metric names (see
//!   [`BASE_NAMES`], optionally after qualifiers in [`QUALIFIERS`] such as
//!   `train`, `val`, `test`, `average`), because ordinary log text is full
//!   of colons (`INFO: 3 workers`, `12:30:01`, `http://x:8080`). `key=value`
//!   and quoted `'key': value` accept any identifier key: an `=` or a quoted
//!   key is already a deliberate machine-readable print.
//! * A value is a finite decimal number standing alone: `nan`, `inf`, values
//!   that overflow, and numbers glued to more text (`10.0.0.1`, `3MB`,
//!   `95%`, `12:30`) are not metrics, since their meaning is unclear.
//! * `Name: a/b` of two whole numbers with `a <= b` is the fraction `a / b`:
//!   `Accuracy: 9838/10000 (98%)` is accuracy 0.9838, the number the
//!   PyTorch MNIST example means. Any other `a/b` is skipped as ambiguous.
//! * The step of a metric is the line's own `step`/`global_step`/
//!   `iteration`/`iter` number, else its `epoch` number (`epoch=3`,
//!   `Epoch 3`, `Epoch: 3/10`, `Train Epoch: 1`, `'epoch': 0.5`). Those
//!   counters are never metrics themselves. A line says nothing about
//!   earlier lines: carrying the last `Epoch 3/10` header over to the metric
//!   lines below it is the caller's business, since only it sees the order.
//! * Environment dumps are settings, not measurements, though they print
//!   `NAME=value` too (`env`, `export`, `declare -x`, `os.environ`): a
//!   quoted value after `=` (`RANK='0'`), a name in upper case that is not a
//!   metric name shouted (`WORLD_SIZE=2`, but `LOSS=0.5` stays), and every
//!   `=` of a line that starts with a shell's `export`, `declare`, `typeset`,
//!   `readonly` or `local` are not metrics.
//! * A job's own pattern wins over the built-in forms: when both find a
//!   metric of the same name on one line, only the job's is kept, so a
//!   pattern written to fix a mis-read does not double-count.

use memchr::{memchr2, memchr2_iter, memmem};
use regex::{Captures, Regex};
use serde::Serialize;

use crate::MetricsError;

/// One metric value read from one line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub name: String,
    pub value: f64,
    /// `None` when the line names no step or epoch; see the module docs.
    pub step: Option<f64>,
}

/// The extractor for one job: the built-in forms plus the job's own
/// patterns. Built once per job so every regex is compiled once, not per
/// line.
#[derive(Debug)]
pub struct Extractor {
    katib: Regex,
    custom: Vec<Custom>,
}

#[derive(Debug)]
struct Custom {
    regex: Regex,
    /// Used when the pattern has no `name` group, or it did not take part.
    fallback_name: String,
}

/// Katib's own output is rigid, but users retype it by hand, so quotes and
/// spacing vary; the keys themselves are matched exactly as Katib spells
/// them.
const KATIB: &str = r#"\{\s*["']?metricName["']?\s*:\s*["']?([^"',{}]*?)["']?\s*,\s*["']?metricValue["']?\s*:\s*["']?([^"',{}\s]*)["']?\s*\}"#;

/// Names longer than this are data (hashes, paths, base64), not metric
/// names; the cap also bounds how far back from each `=`/`:` a scan walks,
/// which keeps pathological lines linear.
const MAX_NAME: usize = 64;

/// Metric names accepted in the `Name: value` form, after any qualifiers in
/// [`QUALIFIERS`] are stripped. Compared with `-` and `/` read as `_`.
pub const BASE_NAMES: &[&str] = &[
    "loss",
    "nll",
    "nll_loss",
    "ce_loss",
    "kl",
    "kl_loss",
    "acc",
    "accuracy",
    "err",
    "error",
    "error_rate",
    "lr",
    "learning_rate",
    "top1",
    "top5",
    "top_1",
    "top_5",
    "top1_acc",
    "top5_acc",
    "top_1_acc",
    "top_5_acc",
    "top1_accuracy",
    "top5_accuracy",
    "top_1_accuracy",
    "top_5_accuracy",
    "precision",
    "recall",
    "f1",
    "f1_score",
    "auc",
    "roc_auc",
    "map",
    "miou",
    "iou",
    "dice",
    "perplexity",
    "ppl",
    "mse",
    "mae",
    "rmse",
    "bleu",
    "rouge",
    "wer",
    "cer",
    "grad_norm",
    "reward",
    "score",
];

/// Words printed in front of a metric name to say which one it is; they
/// are kept in the recorded name but do not make an unknown name known.
pub const QUALIFIERS: &[&str] = &[
    "train",
    "training",
    "val",
    "valid",
    "validation",
    "test",
    "eval",
    "evaluation",
    "dev",
    "average",
    "avg",
    "mean",
    "running",
    "final",
    "best",
    "batch",
    "epoch",
];

/// Counters that say where in training a line is. Any of these is preferred
/// to the epoch, being finer.
const STEP_WORDS: &[&str] = &["step", "global_step", "iteration", "iter"];
const EPOCH_WORD: &str = "epoch";

impl Extractor {
    /// `patterns` are the job's own regular expressions, each with a named
    /// group `value` and optionally `name` and `step`. A pattern without a
    /// `name` group names its metric `custom_<index>` (index into
    /// `patterns`, from 0); to give it a fixed, readable name, capture the
    /// literal text as the name, e.g. `(?P<name>bleu) is (?P<value>\S+)`.
    /// A pattern may match several times on one line.
    pub fn new(patterns: &[String]) -> Result<Self, MetricsError> {
        let katib = Regex::new(KATIB).map_err(|e| MetricsError::Pattern {
            pattern: KATIB.to_string(),
            reason: e.to_string(),
        })?;
        let custom = patterns
            .iter()
            .enumerate()
            .map(|(index, pattern)| compile_custom(index, pattern))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { katib, custom })
    }

    /// Every metric on one line (without its newline), in the order they
    /// appear.
    pub fn line(&self, line: &str) -> Vec<Found> {
        let mut hits: Vec<Hit> = Vec::new();
        for custom in &self.custom {
            custom.scan(line, &mut hits);
        }
        let customs = hits.len();
        // Every built-in form needs an `=` or a `:`; most log lines that
        // have neither are rejected here by one vectorised search.
        if memchr2(b'=', b':', line.as_bytes()).is_some() {
            self.builtin(line, &mut hits);
        }
        if hits.is_empty() {
            return Vec::new();
        }
        if customs > 0 {
            let (own, builtin) = hits.split_at(customs);
            let kept: Vec<Hit> = builtin
                .iter()
                .filter(|b| !own.iter().any(|c| c.name == b.name))
                .cloned()
                .collect();
            hits.truncate(customs);
            hits.extend(kept);
        }
        hits.sort_by_key(|h| h.pos);
        // The step scan walks the whole line again, so it only runs for
        // lines that have a metric needing it.
        let line_step = if hits.iter().any(|h| h.step.is_none()) {
            line_step(line.as_bytes())
        } else {
            None
        };
        hits.into_iter()
            .map(|h| Found {
                name: h.name,
                value: h.value,
                step: h.step.or(line_step),
            })
            .collect()
    }

    fn builtin(&self, line: &str, hits: &mut Vec<Hit>) {
        let b = line.as_bytes();
        let mut claimed: Vec<(usize, usize)> = Vec::new();
        if memmem::find(b, b"metricName").is_some() {
            for caps in self.katib.captures_iter(line) {
                let (Some(whole), Some(name), Some(value)) =
                    (caps.get(0), caps.get(1), caps.get(2))
                else {
                    continue;
                };
                claimed.push((whole.start(), whole.end()));
                let name = normalise(name.as_str());
                if name.is_empty() {
                    continue;
                }
                if let Some(value) = parse_number(value.as_str()) {
                    hits.push(Hit {
                        pos: whole.start(),
                        name,
                        value,
                        step: None,
                    });
                }
            }
        }
        let shell = is_shell_assignment(b);
        for pos in memchr2_iter(b'=', b':', b) {
            if claimed.iter().any(|&(s, e)| s <= pos && pos < e) {
                continue;
            }
            if shell && b[pos] == b'=' {
                continue;
            }
            let hit = if b[pos] == b'=' {
                key_value(b, pos)
            } else {
                colon(b, pos)
            };
            if let Some((start, name, value)) = hit {
                hits.push(Hit {
                    pos: start,
                    name,
                    value,
                    step: None,
                });
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Hit {
    pos: usize,
    name: String,
    value: f64,
    step: Option<f64>,
}

fn compile_custom(index: usize, pattern: &str) -> Result<Custom, MetricsError> {
    let error = |reason: String| MetricsError::Pattern {
        pattern: pattern.to_string(),
        reason,
    };
    let regex = Regex::new(pattern).map_err(|e| error(e.to_string()))?;
    if !regex.capture_names().any(|n| n == Some("value")) {
        return Err(error("it has no named group `value`".to_string()));
    }
    Ok(Custom {
        regex,
        fallback_name: format!("custom_{index}"),
    })
}

impl Custom {
    fn scan(&self, line: &str, hits: &mut Vec<Hit>) {
        for caps in self.regex.captures_iter(line) {
            if let Some(hit) = self.hit(&caps) {
                hits.push(hit);
            }
        }
    }

    fn hit(&self, caps: &Captures<'_>) -> Option<Hit> {
        let value = caps.name("value")?;
        let value = parse_number(value.as_str())?;
        let name = match caps.name("name") {
            Some(n) => normalise(n.as_str()),
            None => self.fallback_name.clone(),
        };
        if name.is_empty() {
            return None;
        }
        let step = caps.name("step").and_then(|s| parse_number(s.as_str()));
        Some(Hit {
            pos: caps.get(0).map_or(0, |m| m.start()),
            name,
            value,
            step,
        })
    }
}

/// Lowercase, whitespace runs to `_`, trimmed.
fn normalise(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// A whole string as a finite number, with the grammar the scanners use
/// (so a pattern's `value` of `nan` or `0x10` is refused like a printed one).
fn parse_number(s: &str) -> Option<f64> {
    let b = s.trim().as_bytes();
    let (value, end) = number_at(b, 0)?;
    (end == b.len()).then_some(value)
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-')
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'/' | b'-')
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// What may stand right before a `key=`: anything else (`?`, `&`, `:`)
/// means the key is part of a URL, a path or some other token.
fn opens_key(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b',' | b';' | b'(' | b'[' | b'{' | b'|' | b'\'' | b'"')
}

/// What may stand right after a value: a number followed by anything else
/// (`.`, `:`, a letter, `%`) is part of a longer token.
fn ends_value(b: &[u8], j: usize) -> bool {
    j == b.len()
        || b[j].is_ascii_whitespace()
        || matches!(b[j], b',' | b';' | b')' | b']' | b'}' | b'|' | b'\'' | b'"')
}

/// A decimal number starting at `i`: `[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?`.
/// Returns the value, if finite, and where the number ends; does not look
/// past it.
fn number_at(b: &[u8], i: usize) -> Option<(f64, usize)> {
    let digits = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    let mut j = i;
    if j < b.len() && matches!(b[j], b'+' | b'-') {
        j += 1;
    }
    let int_end = digits(j);
    let mut mantissa = int_end - j;
    j = int_end;
    if j < b.len() && b[j] == b'.' {
        let frac_end = digits(j + 1);
        mantissa += frac_end - (j + 1);
        j = frac_end;
    }
    if mantissa == 0 {
        return None;
    }
    if j < b.len() && matches!(b[j], b'e' | b'E') {
        let mut k = j + 1;
        if k < b.len() && matches!(b[k], b'+' | b'-') {
            k += 1;
        }
        let exp_end = digits(k);
        if exp_end > k {
            j = exp_end;
        }
    }
    let value: f64 = std::str::from_utf8(&b[i..j]).ok()?.parse().ok()?;
    value.is_finite().then_some((value, j))
}

/// Skips at most a few blanks: padding, not a column of spaces that
/// separates unrelated fields.
fn skip_blanks_forward(b: &[u8], mut j: usize) -> usize {
    let limit = j + 8;
    while j < b.len() && j < limit && is_blank(b[j]) {
        j += 1;
    }
    j
}

fn skip_blanks_back(b: &[u8], mut j: usize) -> usize {
    let limit = j.saturating_sub(8);
    while j > limit && is_blank(b[j - 1]) {
        j -= 1;
    }
    j
}

/// The value after a separator at `i`: optional quotes, and for
/// `fraction`, the `a/b` form.
fn value_at(b: &[u8], i: usize, fraction: bool) -> Option<f64> {
    let mut j = skip_blanks_forward(b, i);
    let quote = (j < b.len() && matches!(b[j], b'\'' | b'"')).then(|| b[j]);
    if quote.is_some() {
        j += 1;
    }
    let (mut value, mut end) = number_at(b, j)?;
    if fraction && end < b.len() && b[end] == b'/' {
        let whole = |s: usize, e: usize| b[s..e].iter().all(u8::is_ascii_digit);
        let (denominator, den_end) = number_at(b, end + 1)?;
        if !whole(j, end) || !whole(end + 1, den_end) || denominator <= 0.0 || value > denominator {
            return None;
        }
        value /= denominator;
        end = den_end;
    }
    if let Some(q) = quote {
        if end < b.len() && b[end] == q {
            end += 1;
        }
    }
    ends_value(b, end).then_some(value)
}

fn lower(b: &[u8]) -> String {
    // Callers pass ASCII-only ranges; lossy conversion keeps this total.
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// Whether a key names a counter the step scan reads, so it is not also
/// recorded as a metric.
fn is_counter_key(key: &str) -> bool {
    let last = key.rsplit(['.', '/', '-']).next().unwrap_or(key);
    last == EPOCH_WORD || STEP_WORDS.contains(&last)
}

/// `key=value` with the `=` at `eq`; returns where the key starts.
fn key_value(b: &[u8], eq: usize) -> Option<(usize, String, f64)> {
    let end = skip_blanks_back(b, eq);
    let mut start = end;
    while start > 0 && is_key_char(b[start - 1]) {
        if end - start > MAX_NAME {
            return None;
        }
        start -= 1;
    }
    if start > 0 && !opens_key(b[start - 1]) {
        return None;
    }
    // `--lr=0.1` is the flag `lr`.
    while start < end && matches!(b[start], b'-' | b'.' | b'/') {
        start += 1;
    }
    if start == end || !(b[start].is_ascii_alphabetic() || b[start] == b'_') {
        return None;
    }
    // `RANK='0'`: a shell quotes what it assigns; a script printing a
    // measurement does not.
    let v = skip_blanks_forward(b, eq + 1);
    if v < b.len() && matches!(b[v], b'\'' | b'"') {
        return None;
    }
    let key = lower(&b[start..end]);
    if is_counter_key(&key) || is_env_name(&b[start..end], &key) {
        return None;
    }
    let value = value_at(b, eq + 1, false)?;
    Some((start, key, value))
}

/// A name as environment variables are spelled (`WORLD_SIZE`, `RANK`,
/// `OMP_NUM_THREADS`): upper case letters, digits and `_`, with a letter,
/// unless it is a metric name in capitals (`LOSS`, `LR`, `TRAIN_ACC`).
/// `key` is `raw` lowercased.
fn is_env_name(raw: &[u8], key: &str) -> bool {
    let env_like = raw.iter().any(u8::is_ascii_uppercase)
        && raw
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
    env_like && !matches!(classify(key), Kind::Metric)
}

/// Whether the line is a shell builtin that sets variables (`export X=1`,
/// `declare -x X="1"` as `declare -p` and `export -p` list them).
fn is_shell_assignment(b: &[u8]) -> bool {
    let start = b.iter().position(|c| !is_blank(*c)).unwrap_or(b.len());
    let rest = &b[start..];
    ["export ", "declare ", "typeset ", "readonly ", "local "]
        .iter()
        .any(|w| rest.starts_with(w.as_bytes()))
}

enum Kind {
    Metric,
    Counter,
    Unknown,
}

/// Reads a `Name` of the `Name: value` form, lowercased and with `-` and
/// `/` already read as `_`, ignoring the qualifiers in front of it.
fn classify(name: &str) -> Kind {
    let mut rest = name;
    loop {
        if BASE_NAMES.contains(&rest) {
            return Kind::Metric;
        }
        if rest == EPOCH_WORD || STEP_WORDS.contains(&rest) {
            return Kind::Counter;
        }
        let stripped = QUALIFIERS.iter().find_map(|q| {
            rest.strip_prefix(q)
                .and_then(|r| r.strip_prefix('_'))
                .filter(|r| !r.is_empty())
        });
        match stripped {
            Some(r) => rest = r,
            None => return Kind::Unknown,
        }
    }
}

/// Whether a word could end a name [`classify`] knows: its last `_`, `-`
/// or `/` separated part is the last part of a base name or a counter.
/// Written as one `match` because it runs for every colon of every line;
/// a test keeps it in step with [`BASE_NAMES`].
fn ends_like_known_name(word: &[u8]) -> bool {
    let last = word
        .rsplit(|&c| matches!(c, b'_' | b'-' | b'/'))
        .next()
        .unwrap_or(word);
    let mut buf = [0u8; 10];
    let Some(buf) = buf.get_mut(..last.len()) else {
        return false;
    };
    buf.copy_from_slice(last);
    buf.make_ascii_lowercase();
    matches!(
        &*buf,
        b"loss"
            | b"nll"
            | b"kl"
            | b"acc"
            | b"accuracy"
            | b"err"
            | b"error"
            | b"rate"
            | b"lr"
            | b"top1"
            | b"top5"
            | b"1"
            | b"5"
            | b"precision"
            | b"recall"
            | b"f1"
            | b"score"
            | b"auc"
            | b"map"
            | b"miou"
            | b"iou"
            | b"dice"
            | b"perplexity"
            | b"ppl"
            | b"mse"
            | b"mae"
            | b"rmse"
            | b"bleu"
            | b"rouge"
            | b"wer"
            | b"cer"
            | b"norm"
            | b"reward"
            | b"epoch"
            | b"step"
            | b"iteration"
            | b"iter"
    )
}

/// `Name: value` or `'key': value` with the `:` at `colon`; returns where
/// the name starts.
fn colon(b: &[u8], colon: usize) -> Option<(usize, String, f64)> {
    let end = skip_blanks_back(b, colon);
    if end > 0 && matches!(b[end - 1], b'\'' | b'"') {
        return quoted_key(b, end - 1, colon);
    }
    // Up to three single-space-separated words before the colon, nearest
    // first: `Test set: Average loss:` has `loss`, `Average`.
    let mut words: [(usize, usize); 3] = [(0, 0); 3];
    let mut n = 0;
    let mut e = end;
    while n < 3 {
        let mut s = e;
        while s > 0 && is_word_char(b[s - 1]) && e - s <= MAX_NAME {
            s -= 1;
        }
        if s == e || e - s > MAX_NAME || (s > 0 && is_word_char(b[s - 1])) {
            break;
        }
        words[n] = (s, e);
        n += 1;
        if s < 2 || b[s - 1] != b' ' || !is_word_char(b[s - 2]) {
            break;
        }
        e = s - 1;
    }
    // Most colons in a log are not metrics; turning them away before any
    // phrase is built keeps such lines allocation-free.
    if n == 0 || !ends_like_known_name(&b[words[0].0..words[0].1]) {
        return None;
    }
    // The longest known phrase wins, so `Average loss` is `average_loss`
    // while `Epoch 3 - loss` is just `loss`. Each shorter phrase is a
    // suffix of the longest, so one lowercased copy serves them all.
    let mut phrase = String::with_capacity(end - words[n - 1].0);
    let mut offsets = [0usize; 3];
    for k in (0..n).rev() {
        if k + 1 < n {
            phrase.push('_');
        }
        offsets[k] = phrase.len();
        let (s, e) = words[k];
        phrase.push_str(&lower(&b[s..e]));
    }
    let matched = phrase.replace(['-', '/'], "_");
    for k in (0..n).rev() {
        let Some(candidate) = matched.get(offsets[k]..) else {
            continue;
        };
        match classify(candidate) {
            Kind::Metric => {
                let value = value_at(b, colon + 1, true)?;
                let name = phrase.get(offsets[k]..)?.to_string();
                return Some((words[k].0, name, value));
            }
            Kind::Counter => return None,
            Kind::Unknown => {}
        }
    }
    None
}

/// `'key': value` / `"key": value` (Python dicts as Hugging Face's Trainer
/// prints them, JSON lines); `close` is the key's closing quote.
fn quoted_key(b: &[u8], close: usize, colon: usize) -> Option<(usize, String, f64)> {
    let quote = b[close];
    let mut open = close;
    while open > 0 && is_key_char(b[open - 1]) {
        if close - open > MAX_NAME {
            return None;
        }
        open -= 1;
    }
    if open == 0 || b[open - 1] != quote {
        return None;
    }
    let start = open;
    let before = open - 1;
    if before > 0 && !opens_key(b[before - 1]) {
        return None;
    }
    if start == close || !(b[start].is_ascii_alphabetic() || b[start] == b'_') {
        return None;
    }
    let key = lower(&b[start..close]);
    if is_counter_key(&key) || is_env_name(&b[start..close], &key) {
        return None;
    }
    let value = value_at(b, colon + 1, false)?;
    Some((start, key, value))
}

/// The line's own step: the first step-like counter if any, else the first
/// epoch.
fn line_step(b: &[u8]) -> Option<f64> {
    let mut step = None;
    let mut epoch = None;
    let mut i = 0;
    while i < b.len() {
        if !is_token_char(b[i]) {
            i += 1;
            continue;
        }
        let s = i;
        while i < b.len() && is_token_char(b[i]) {
            i += 1;
        }
        let token = &b[s..i];
        if !(4..=11).contains(&token.len()) {
            continue;
        }
        if token.eq_ignore_ascii_case(EPOCH_WORD.as_bytes()) {
            if epoch.is_none() {
                epoch = counter_value(b, i);
            }
        } else if STEP_WORDS
            .iter()
            .any(|w| token.eq_ignore_ascii_case(w.as_bytes()))
        {
            step = counter_value(b, i);
            if step.is_some() {
                break;
            }
        }
    }
    step.or(epoch)
}

/// The number after a counter word ending at `i`: `epoch=3`, `Epoch 3`,
/// `Epoch: 3/10`, `'epoch': 0.5`. Signs are refused: a counter is never
/// negative, and `step - loss` is not `step -…`.
fn counter_value(b: &[u8], i: usize) -> Option<f64> {
    let mut j = i;
    if j < b.len() && matches!(b[j], b'\'' | b'"') {
        j += 1;
    }
    j = skip_blanks_forward(b, j);
    if j < b.len() && matches!(b[j], b':' | b'=') {
        j = skip_blanks_forward(b, j + 1);
    }
    if j == i {
        return None;
    }
    if j < b.len() && matches!(b[j], b'\'' | b'"') {
        j += 1;
    }
    if j >= b.len() || !(b[j].is_ascii_digit() || b[j] == b'.') {
        return None;
    }
    let (value, mut end) = number_at(b, j)?;
    if end < b.len() && matches!(b[end], b'\'' | b'"') {
        end += 1;
    }
    (ends_value(b, end) || b.get(end) == Some(&b'/')).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn found(name: &str, value: f64, step: Option<f64>) -> Found {
        Found {
            name: name.to_string(),
            value,
            step,
        }
    }

    fn builtin(line: &str) -> Vec<Found> {
        match Extractor::new(&[]) {
            Ok(x) => x.line(line),
            Err(e) => panic!("built-in patterns must compile: {e}"),
        }
    }

    fn with(patterns: &[&str]) -> Extractor {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        match Extractor::new(&patterns) {
            Ok(x) => x,
            Err(e) => panic!("test pattern must compile: {e}"),
        }
    }

    #[test]
    fn katib_single() {
        assert_eq!(
            builtin("{metricName: accuracy, metricValue: 0.7313}"),
            vec![found("accuracy", 0.7313, None)]
        );
    }

    #[test]
    fn katib_several_and_variants() {
        assert_eq!(
            builtin(
                "{metricName: loss, metricValue: 0.35};{metricName: accuracy, metricValue: 0.9}"
            ),
            vec![found("loss", 0.35, None), found("accuracy", 0.9, None)]
        );
        assert_eq!(
            builtin(r#"epoch 2 {"metricName": "Validation-Accuracy", "metricValue": "0.5"}"#),
            vec![found("validation-accuracy", 0.5, Some(2.0))]
        );
        assert_eq!(
            builtin("{ metricName : 'val loss' ,metricValue:1e-3 }"),
            vec![found("val_loss", 0.001, None)]
        );
        assert_eq!(builtin("{metricName: loss, metricValue: nan}"), vec![]);
    }

    #[test]
    fn key_value_pairs() {
        assert_eq!(
            builtin("epoch=3 step=120 loss=0.4454 accuracy=0.7313"),
            vec![
                found("loss", 0.4454, Some(120.0)),
                found("accuracy", 0.7313, Some(120.0))
            ]
        );
        assert_eq!(builtin("lr=1e-4"), vec![found("lr", 1e-4, None)]);
        assert_eq!(
            builtin("Train/Loss = 2.5, val.acc=.5; --lr=3E+2 x=-1"),
            vec![
                found("train/loss", 2.5, None),
                found("val.acc", 0.5, None),
                found("lr", 300.0, None),
                found("x", -1.0, None)
            ]
        );
        assert_eq!(
            builtin("epoch=3 loss=0.5"),
            vec![found("loss", 0.5, Some(3.0))]
        );
    }

    #[test]
    fn colon_forms() {
        assert_eq!(builtin("Loss: 0.8841"), vec![found("loss", 0.8841, None)]);
        assert_eq!(
            builtin("Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.300953"),
            vec![found("loss", 2.300953, Some(1.0))]
        );
        assert_eq!(
            builtin("Test set: Average loss: 0.0497, Accuracy: 9838/10000 (98%)"),
            vec![
                found("average_loss", 0.0497, None),
                found("accuracy", 0.9838, None)
            ]
        );
        assert_eq!(
            builtin("Epoch 3/10 - loss: 0.123 - acc: 0.95"),
            vec![
                found("loss", 0.123, Some(3.0)),
                found("acc", 0.95, Some(3.0))
            ]
        );
        assert_eq!(
            builtin("1875/1875 [==============================] - 3s 1ms/step - loss: 0.2944 - accuracy: 0.9148 - val_loss: 0.1 - val_accuracy: 0.97"),
            vec![
                found("loss", 0.2944, None),
                found("accuracy", 0.9148, None),
                found("val_loss", 0.1, None),
                found("val_accuracy", 0.97, None)
            ]
        );
        assert_eq!(
            builtin("Val Loss : 0.3 | Top-1 Acc: 76.1 | PPL: 12"),
            vec![
                found("val_loss", 0.3, None),
                found("top-1_acc", 76.1, None),
                found("ppl", 12.0, None)
            ]
        );
    }

    #[test]
    fn quoted_keys() {
        assert_eq!(
            builtin("{'loss': 2.3, 'grad_norm': 1.25, 'learning_rate': 5e-05, 'epoch': 0.03}"),
            vec![
                found("loss", 2.3, Some(0.03)),
                found("grad_norm", 1.25, Some(0.03)),
                found("learning_rate", 5e-05, Some(0.03))
            ]
        );
        assert_eq!(
            builtin(r#"{"step": 7, "loss": "0.25", "name": "x"}"#),
            vec![found("loss", 0.25, Some(7.0))]
        );
    }

    #[test]
    fn steps_and_epochs() {
        assert_eq!(
            builtin("Epoch 3 loss=1"),
            vec![found("loss", 1.0, Some(3.0))]
        );
        assert_eq!(
            builtin("Epoch: 3 loss=1"),
            vec![found("loss", 1.0, Some(3.0))]
        );
        assert_eq!(
            builtin("Step 120 loss=1"),
            vec![found("loss", 1.0, Some(120.0))]
        );
        // The finer counter wins, wherever it is on the line.
        assert_eq!(
            builtin("loss=1 epoch=2 global_step=900"),
            vec![found("loss", 1.0, Some(900.0))]
        );
        // Counters are never metrics, even in the `Name: value` form.
        assert_eq!(builtin("epoch=3 step=120"), vec![]);
        assert_eq!(builtin("Epoch: 3"), vec![]);
        // `epochs` is not `epoch`; `[3/10]` is not a step.
        assert_eq!(
            builtin("epochs: 10 [3/10] loss=1"),
            vec![found("loss", 1.0, None)]
        );
    }

    #[test]
    fn ordinary_text_is_not_metrics() {
        for line in [
            "",
            "a plain line",
            "INFO: starting",
            "INFO: 3 workers",
            "World Size: 2. Rank: 0",
            "2024-01-01 12:30:01 rank 0 ready",
            "12:30:01",
            "listening on http://x:8080",
            "GET http://host/a?loss=1&b=2",
            "host=10.0.0.1 version=1.2.3 size=3MB pct=95%",
            "loss: nan",
            "loss=nan acc=inf lr=-inf x=NaN",
            "loss=1e999",
            "Accuracy: 98%",
            "a == 1, b <= 2, c != 3",
            "loss: 3/0 accuracy: 11/10 loss: 1.5/2",
            "Loss:",
            "loss=",
            "=5 :5 = : ==",
            "Note: loss is 0.5",
        ] {
            assert_eq!(builtin(line), vec![], "{line:?}");
        }
    }

    /// Environment dumps print `NAME=value` too, but they are settings, not
    /// measurements: on the H200 a task's `CUDA_VISIBLE_DEVICES='0' RANK='0'`
    /// became series `cuda_visible_devices` and `rank`.
    #[test]
    fn environment_dumps_are_not_metrics() {
        for line in [
            "CUDA_VISIBLE_DEVICES='0' NVIDIA_VISIBLE_DEVICES='0' RANK='0'",
            // `env`
            "RANK=0",
            "WORLD_SIZE=2",
            "LOCAL_RANK=1",
            "MASTER_PORT=29500",
            "OMP_NUM_THREADS=1",
            "SHLVL=1",
            "KILN_ATTEMPT=0",
            "PET_NPROC_PER_NODE=8",
            "CUDA_VISIBLE_DEVICES=0",
            // bash `export` and `declare -x`, `set` output, lower case too
            "export RANK=0",
            "export lr=0.1",
            "declare -x WORLD_SIZE=\"2\"",
            "declare -x seed=\"42\"",
            "typeset -x N=3",
            "setenv OMP_NUM_THREADS 4",
            "lr='0.1'",
            "batch=\"32\"",
            // Python's os.environ
            "environ({'RANK': '0', 'WORLD_SIZE': '2', 'LOCAL_RANK': '0'})",
            "{\"MASTER_PORT\": \"29500\", \"RANK\": \"1\"}",
        ] {
            assert_eq!(builtin(line), vec![], "{line:?}");
        }
    }

    /// What training scripts print stays a metric, shouted or not.
    #[test]
    fn training_prints_stay_metrics_beside_the_env_rule() {
        assert_eq!(builtin("loss=0.123"), vec![found("loss", 0.123, None)]);
        assert_eq!(
            builtin("epoch 3 loss: 0.5 acc: 0.9"),
            vec![found("loss", 0.5, Some(3.0)), found("acc", 0.9, Some(3.0))]
        );
        assert_eq!(
            builtin("step=100 loss=2"),
            vec![found("loss", 2.0, Some(100.0))]
        );
        assert_eq!(
            builtin("LOSS=0.5 LR=0.001"),
            vec![found("loss", 0.5, None), found("lr", 0.001, None)]
        );
        assert_eq!(
            builtin("TRAIN_LOSS=0.25"),
            vec![found("train_loss", 0.25, None)]
        );
        assert_eq!(
            builtin("Loss=0.5 Acc=0.7"),
            vec![found("loss", 0.5, None), found("acc", 0.7, None)]
        );
        assert_eq!(
            builtin("{'loss': 0.5, 'epoch': 1.0}"),
            vec![found("loss", 0.5, Some(1.0))]
        );
        assert_eq!(builtin("rank 0: loss=0.5"), vec![found("loss", 0.5, None)]);
    }

    #[test]
    fn quick_filter_admits_every_known_name() {
        let names = BASE_NAMES.iter().chain(STEP_WORDS).chain([&EPOCH_WORD]);
        for name in names {
            assert!(ends_like_known_name(name.as_bytes()), "{name}");
            let upper = name.to_ascii_uppercase();
            assert!(ends_like_known_name(upper.as_bytes()), "{upper}");
        }
    }

    #[test]
    fn unicode_around_metrics() {
        assert_eq!(
            builtin("é loss=0.5 ü Loss: 1 ✓=2 λ:3"),
            vec![found("loss", 0.5, None), found("loss", 1.0, None)]
        );
    }

    #[test]
    fn custom_patterns() {
        let x = with(&[
            r"(?i)(?P<name>bleu) is (?P<value>\S+)",
            r"reward (?P<value>[-\d.]+) at (?P<step>\d+)",
            r"(?P<name>[A-Za-z ]+?) => (?P<value>\S+)",
        ]);
        assert_eq!(x.line("BLEU is 27.3"), vec![found("bleu", 27.3, None)]);
        assert_eq!(
            x.line("reward -3.5 at 40, reward 1 at 41"),
            vec![
                found("custom_1", -3.5, Some(40.0)),
                found("custom_1", 1.0, Some(41.0))
            ]
        );
        assert_eq!(
            x.line("step=9 Mean Reward => 4"),
            vec![found("mean_reward", 4.0, Some(9.0))]
        );
        assert_eq!(x.line("bleu is nan"), vec![]);
        assert_eq!(x.line("nothing here"), vec![]);
    }

    #[test]
    fn custom_pattern_beats_builtin_of_same_name() {
        let x = with(&[r"(?P<name>loss)=(?P<value>[\d.]+)x"]);
        assert_eq!(
            x.line("loss=0.5x loss=0.7 acc=1"),
            vec![found("loss", 0.5, None), found("acc", 1.0, None)]
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        let bad = |p: &str| match Extractor::new(&[p.to_string()]) {
            Err(MetricsError::Pattern { pattern, reason }) => {
                assert_eq!(pattern, p);
                assert!(!reason.is_empty());
            }
            other => panic!("{p:?} should be refused, got {other:?}"),
        };
        bad(r"(?P<value>\d+");
        bad(r"loss (\d+)");
    }

    /// Pieces that steer random lines into every scanner branch.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("loss".to_string()),
            Just("Loss".to_string()),
            Just("Average ".to_string()),
            Just("epoch".to_string()),
            Just("Step ".to_string()),
            Just("=".to_string()),
            Just(":".to_string()),
            Just(": ".to_string()),
            Just("'".to_string()),
            Just("\"".to_string()),
            Just("/".to_string()),
            Just("{metricName: ".to_string()),
            Just(", metricValue: ".to_string()),
            Just("}".to_string()),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("1e999".to_string()),
            Just("-".to_string()),
            Just("é".to_string()),
            "[0-9]{1,4}(\\.[0-9]{0,3})?(e[+-]?[0-9]{1,3})?",
            "[ \t]{1,3}",
            "[a-z_]{1,5}",
            any::<char>().prop_map(String::from),
        ]
    }

    fn assert_sane(found: &[Found]) {
        for f in found {
            assert!(f.value.is_finite(), "{f:?}");
            assert!(f.step.is_none_or(f64::is_finite), "{f:?}");
            assert!(!f.name.is_empty(), "{f:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(line in any::<String>()) {
            let x = with(&[r"(?P<name>\w+)~(?P<value>\S+)( @(?P<step>\S+))?"]);
            assert_sane(&x.line(&line));
        }

        #[test]
        fn metric_like_lines_never_panic(pieces in prop::collection::vec(piece(), 0..24)) {
            let line = pieces.concat();
            let x = with(&[r"(?P<name>\w+)~(?P<value>\S+)( @(?P<step>\S+))?"]);
            assert_sane(&x.line(&line));
        }
    }
}
