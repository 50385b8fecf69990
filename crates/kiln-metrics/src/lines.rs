//! Training metrics found in the lines a job prints, as it prints them:
//! Katib's `{metricName: accuracy, metricValue: 0.7313}`, `key=value`
//! pairs (`epoch=3 loss=0.4454`), and `Name: value` for well-known metric
//! names (`Loss: 0.8841`, PyTorch's MNIST example). Jobs can add their own
//! regular expressions. Most log lines hold no metric, so a line is only
//! searched when it has a character a metric needs.

use regex::Regex;
use serde::Serialize;

use crate::MetricsError;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub name: String,
    pub value: f64,
    /// The step or epoch printed on the same line.
    pub step: Option<f64>,
}

/// Names taken in the `Name: value` form; any other word before a colon is
/// ordinary log text (`INFO: starting`, `12:30:01`).
const KNOWN: &[&str] = &[
    "loss",
    "acc",
    "accuracy",
    "lr",
    "learning_rate",
    "top1",
    "top5",
    "precision",
    "recall",
    "f1",
    "auc",
    "perplexity",
    "ppl",
    "mse",
    "mae",
    "rmse",
    "error",
    "err",
];
const PREFIXES: &[&str] = &[
    "train_", "val_", "valid_", "test_", "eval_", "average_", "avg_",
];
const STEP_NAMES: &[&str] = &[
    "epoch",
    "step",
    "iter",
    "iteration",
    "global_step",
    "train_epoch",
];

pub struct Extractor {
    katib: Regex,
    pair: Regex,
    colon: Regex,
    custom: Vec<Regex>,
}

fn compile(p: &str) -> Result<Regex, MetricsError> {
    Regex::new(p).map_err(|e| MetricsError::Pattern {
        pattern: p.to_owned(),
        reason: e.to_string(),
    })
}

const NUMBER: &str = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?";

impl Extractor {
    /// `patterns`: the job's own regular expressions, each with a `value`
    /// group and optionally `name` (else the metric is `custom_<i>`) and
    /// `step` groups.
    pub fn new(patterns: &[String]) -> Result<Self, MetricsError> {
        Ok(Extractor {
            katib: compile(&format!(
                r#"\{{\s*"?metricName"?\s*:\s*"?([A-Za-z_][\w./-]*)"?\s*,\s*"?metricValue"?\s*:\s*"?({NUMBER})"?\s*\}}"#
            ))?,
            pair: compile(&format!(r"([A-Za-z_][\w./-]*)=({NUMBER})"))?,
            colon: compile(&format!(
                r"(?i)((?:(?:train|val|valid|test|eval|average|avg)[ _])?[A-Za-z][A-Za-z0-9_]*)\s*:\s*({NUMBER})"
            ))?,
            custom: patterns
                .iter()
                .map(|p| compile(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Every metric on one line (without its newline).
    pub fn line(&self, line: &str) -> Vec<Found> {
        if self.custom.is_empty() && !line.contains(['=', ':']) {
            return Vec::new();
        }
        let mut found: Vec<(String, f64)> = Vec::new();
        let mut step = None;
        if line.contains("metricName") {
            for c in self.katib.captures_iter(line) {
                push(&mut found, &c[1], &c[2]);
            }
        }
        if line.contains('=') {
            for c in self.pair.captures_iter(line) {
                if !alone(line, &c) {
                    continue;
                }
                let name = normalise(&c[1]);
                if STEP_NAMES.contains(&name.as_str()) {
                    step = step.or_else(|| number(&c[2]));
                } else if !found.iter().any(|f| f.0 == name) {
                    push(&mut found, &name, &c[2]);
                }
            }
        }
        if line.contains(':') {
            for c in self.colon.captures_iter(line) {
                if !alone(line, &c) {
                    continue;
                }
                let name = normalise(&c[1]);
                if STEP_NAMES.contains(&name.as_str()) {
                    step = step.or_else(|| number(&c[2]));
                } else if is_known(&name) && !found.iter().any(|f| f.0 == name) {
                    push(&mut found, &name, &c[2]);
                }
            }
        }
        for (i, re) in self.custom.iter().enumerate() {
            for c in re.captures_iter(line) {
                let Some(v) = c.name("value") else { continue };
                let name = c
                    .name("name")
                    .map_or_else(|| format!("custom_{i}"), |n| normalise(n.as_str()));
                if let Some(s) = c.name("step").and_then(|s| number(s.as_str())) {
                    step = Some(s);
                }
                push(&mut found, &name, v.as_str());
            }
        }
        if step.is_none() && line.contains(['E', 'e', 'S', 's']) {
            step = word_step(line);
        }
        found
            .into_iter()
            .map(|(name, value)| Found { name, value, step })
            .collect()
    }
}

/// Whether a match stands on its own: not the tail of a longer word
/// (`x-loss=1` is fine, `aloss` is not matched as `loss`) and not followed
/// by more of a word or number (`12:30:01`, `loss=1.2.3`, `:8080/`).
fn alone(line: &str, c: &regex::Captures<'_>) -> bool {
    let Some(m) = c.get(0) else { return false };
    let before = line[..m.start()].chars().next_back();
    let after = line[m.end()..].chars().next();
    let starts = before.is_none_or(|b| !(b.is_alphanumeric() || b == '_' || b == '.'));
    let ends = after
        .is_none_or(|a| a.is_whitespace() || matches!(a, ',' | ';' | ')' | ']' | '}' | '%' | '|'));
    starts && ends
}

fn number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn push(found: &mut Vec<(String, f64)>, name: &str, value: &str) {
    if let Some(v) = number(value) {
        found.push((normalise(name), v));
    }
}

/// Lowercase, spaces and dashes as `_`: `Average loss` → `average_loss`.
fn normalise(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

fn is_known(name: &str) -> bool {
    let base = PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    KNOWN.contains(&base)
}

/// `Epoch 3`, `Train Epoch: 1 [..]`, `Step 120`, `Epoch 3/10`.
fn word_step(line: &str) -> Option<f64> {
    let lower = line.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ':' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).find_map(|w| {
        if w[0] == "epoch" || w[0] == "step" {
            let n = w[1].split('/').next()?;
            number(n)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(line: &str) -> Vec<(String, f64, Option<f64>)> {
        Extractor::new(&[])
            .expect("built-in patterns")
            .line(line)
            .into_iter()
            .map(|f| (f.name, f.value, f.step))
            .collect()
    }

    #[test]
    fn the_forms_jobs_print() {
        assert_eq!(
            all("{metricName: accuracy, metricValue: 0.7313}"),
            [("accuracy".into(), 0.7313, None)]
        );
        assert_eq!(
            all("{metricName: loss, metricValue: 0.35};{metricName: accuracy, metricValue: 0.9}"),
            [("loss".into(), 0.35, None), ("accuracy".into(), 0.9, None)]
        );
        assert_eq!(
            all("epoch=3 step=120 loss=0.4454 accuracy=0.7313 lr=1e-4"),
            [
                ("loss".into(), 0.4454, Some(3.0)),
                ("accuracy".into(), 0.7313, Some(3.0)),
                ("lr".into(), 1e-4, Some(3.0))
            ]
        );
        assert_eq!(
            all("Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.300953"),
            [("loss".into(), 2.300953, Some(1.0))]
        );
        assert_eq!(all("Loss: 0.8841"), [("loss".into(), 0.8841, None)]);
        assert_eq!(
            all("Epoch 3/10 - loss: 0.123 - acc: 0.95"),
            [
                ("loss".into(), 0.123, Some(3.0)),
                ("acc".into(), 0.95, Some(3.0))
            ]
        );
        assert_eq!(
            all("Test set: Average loss: 0.0497, Accuracy: 9838/10000 (98%)"),
            [("average_loss".into(), 0.0497, None)]
        );
    }

    #[test]
    fn ordinary_log_text_is_not_a_metric() {
        for line in [
            "INFO: starting",
            "2026-11-23 12:30:01 ready",
            "listening on http://x:8080",
            "loss=nan accuracy=inf",
            "World Size: 2. Rank: 0",
            "a plain line",
        ] {
            assert!(all(line).is_empty(), "{line}: {:?}", all(line));
        }
    }

    #[test]
    fn a_job_s_own_patterns() {
        let e = Extractor::new(&[
            r"bleu score (?P<value>[\d.]+) at (?P<step>\d+)".into(),
            r"(?P<name>wer)\s+(?P<value>[\d.]+)".into(),
        ])
        .expect("valid");
        let f = e.line("bleu score 27.5 at 1000");
        assert_eq!(f[0].name, "custom_0");
        assert_eq!((f[0].value, f[0].step), (27.5, Some(1000.0)));
        assert_eq!(e.line("wer 0.12")[0].name, "wer");
        let bad = Extractor::new(&["(unclosed".into()])
            .err()
            .expect("refused");
        assert!(bad.to_string().contains("(unclosed"));
    }

    proptest! {
        #[test]
        fn any_line_is_safe_and_values_are_finite(line in ".{0,200}") {
            for f in Extractor::new(&[]).expect("built-in").line(&line) {
                prop_assert!(f.value.is_finite());
            }
        }
    }
}
