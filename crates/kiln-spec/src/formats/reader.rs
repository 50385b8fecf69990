//! Typed, path-aware reads from a parsed JSON/YAML tree. Every read that fails
//! records an [`Issue`] and carries on, so one submission reports all of its
//! problems at once instead of the first one serde meets.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::Issue;

/// `path.key`, or `path["odd key"]` when the key is not a plain identifier.
pub(crate) fn field(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", serde_json::Value::from(key)),
    }
}

/// `path[i]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[derive(Default)]
pub(crate) struct Reader {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
    failed: HashSet<String>,
}

impl Reader {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let issue = Issue::new(path, message);
        self.failed.insert(issue.path.clone());
        self.errors.push(issue);
    }

    pub fn has_failed(&self, path: &str) -> bool {
        self.failed.contains(path)
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Issue::new(path, message));
    }

    /// Paths that already have an error; validation skips rules touching them
    /// so a missing field is reported once, not again as a bad placeholder.
    pub fn failed_paths(&self) -> HashSet<String> {
        self.failed.clone()
    }

    fn wrong_type(&mut self, path: &str, want: &str, got: &Value) {
        self.error(path, format!("must be {want}, got {}", type_name(got)));
    }

    fn missing(&mut self, path: &str) {
        self.error(path, "is required");
    }

    /// Refuses a list or map longer than `max` before anything reads its
    /// items, so a huge list costs one error, not one per item.
    pub fn within(&mut self, len: usize, max: usize, path: &str) -> bool {
        if len > max {
            self.error(path, format!("at most {max} entries, got {len}"));
            false
        } else {
            true
        }
    }

    /// Warns about every key of `m` that is not in `known`, naming it.
    pub fn unknown_keys(&mut self, m: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in m.keys() {
            if !known.contains(&key.as_str()) {
                self.warn(field(path, key), "unknown field, ignored");
            }
        }
    }

    pub fn object<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.wrong_type(path, "an object", other);
                None
            }
        }
    }

    pub fn array<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            other => {
                self.wrong_type(path, "a list", other);
                None
            }
        }
    }

    /// An optional object field (absent or null gives None).
    pub fn opt_object<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v Map<String, Value>> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.object(v, &field(path, key)),
        }
    }

    pub fn opt_array<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v Vec<Value>> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.array(v, &field(path, key)),
        }
    }

    /// An optional list of at most `max` items.
    pub fn opt_list<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        key: &str,
        path: &str,
        max: usize,
    ) -> Option<&'v Vec<Value>> {
        let list = self.opt_array(m, key, path)?;
        self.within(list.len(), max, &field(path, key))
            .then_some(list)
    }

    pub fn string_value(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(path, "a string", other);
                None
            }
        }
    }

    pub fn opt_string(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.string_value(v, &field(path, key)),
        }
    }

    pub fn req_string(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        let p = field(path, key);
        match m.get(key) {
            None | Some(Value::Null) => {
                self.missing(&p);
                None
            }
            Some(v) => self.string_value(v, &p),
        }
    }

    /// A whole number in `0..=max`.
    pub fn uint_value(&mut self, v: &Value, path: &str, max: u64) -> Option<u64> {
        let n = match v {
            Value::Number(n) => n,
            other => {
                self.wrong_type(path, "a whole number", other);
                return None;
            }
        };
        let value = if let Some(u) = n.as_u64() {
            Some(u)
        } else if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0) {
            // YAML `4.0` means 4; anything else fractional is a mistake.
            (f <= max as f64).then_some(f as u64)
        } else if n.as_i64().is_some() || n.as_f64().is_some_and(|f| f < 0.0) {
            self.error(path, format!("must be at least 0, got {n}"));
            return None;
        } else {
            self.error(path, format!("must be a whole number, got {n}"));
            return None;
        };
        match value {
            Some(u) if u <= max => Some(u),
            _ => {
                self.error(path, format!("must be at most {max}, got {n}"));
                None
            }
        }
    }

    pub fn opt_uint(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        path: &str,
        max: u64,
    ) -> Option<u64> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.uint_value(v, &field(path, key), max),
        }
    }

    pub fn req_uint(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        path: &str,
        max: u64,
    ) -> Option<u64> {
        let p = field(path, key);
        match m.get(key) {
            None | Some(Value::Null) => {
                self.missing(&p);
                None
            }
            Some(v) => self.uint_value(v, &p, max),
        }
    }

    /// OpenPAI's "null or a number" fields: absent gives `absent`, null gives
    /// `Some(None)`.
    pub fn nullable_uint(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        path: &str,
        max: u64,
        absent: Option<u32>,
    ) -> Option<u32> {
        match m.get(key) {
            None => absent,
            Some(Value::Null) => None,
            Some(v) => self
                .uint_value(v, &field(path, key), max)
                .map(|n| n as u32)
                .or(absent),
        }
    }

    pub fn opt_int(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<i64> {
        let p = field(path, key);
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(i),
                None => {
                    self.error(p, format!("must be a whole number, got {n}"));
                    None
                }
            },
            Some(other) => {
                self.wrong_type(&p, "a whole number", other);
                None
            }
        }
    }

    pub fn opt_bool(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.wrong_type(&field(path, key), "true or false", other);
                None
            }
        }
    }

    /// A value that may be written as a number or a string (sizes, durations),
    /// returned as text for a unit parser.
    pub fn opt_scalar_text(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<String> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.wrong_type(&field(path, key), "a number or a string", other);
                None
            }
        }
    }

    /// A map of string values (env). Numbers and booleans are taken as their
    /// text, since YAML users write `DEBUG: 1`.
    pub fn string_map(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> indexmap::IndexMap<String, String> {
        let mut out = indexmap::IndexMap::new();
        let p = field(path, key);
        let obj = self
            .opt_object(m, key, path)
            .filter(|obj| self.within(obj.len(), crate::validate::limits::MAX_ENV, &p));
        if let Some(obj) = obj {
            for (k, v) in obj {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Number(_) | Value::Bool(_) => {
                        out.insert(k.clone(), v.to_string());
                    }
                    other => self.wrong_type(&field(&p, k), "a string", other),
                }
            }
        }
        out
    }
}

/// Text of a scalar for the environment: strings as they are, other scalars as
/// JSON would print them, null as empty.
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
