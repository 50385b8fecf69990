//! The errors of this crate. Every problem with a submitted spec is an
//! [`Issue`] naming the field it concerns, so a client can point at it.

use serde::Serialize;

/// One problem (or warning) about one field of a submitted spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    /// Path of the field in the submitted document, e.g. `taskRoles[1].memoryMB`;
    /// empty for the document as a whole.
    pub path: String,
    pub message: String,
    /// Position in the source text, where the parser knows it (syntax errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl Issue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.path.is_empty(), self.line, self.column) {
            (_, Some(line), Some(col)) => write!(f, "line {line}, column {col}: {}", self.message),
            (true, _, _) => write!(f, "{}", self.message),
            (false, _, _) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the job spec is too large: at most {max} bytes are accepted")]
    TooLarge { size: usize, max: usize },

    #[error("the job spec is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },

    #[error("the job spec is empty")]
    Empty,

    #[error("{format} syntax error at line {line}, column {column}: {message}")]
    Syntax {
        format: &'static str,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{}: {}", crate::words::count(issues.len() as u64, "invalid field"), summarize(issues))]
    Invalid { issues: Vec<Issue> },

    #[error("cannot export to {format}: {}", summarize(issues))]
    NotRepresentable {
        format: &'static str,
        issues: Vec<Issue>,
    },

    #[error("cannot encode the job as {format}: {message}")]
    Encode {
        format: &'static str,
        message: String,
    },

    #[error("placement does not fit the job: {0}")]
    Placement(String),
}

impl SpecError {
    /// Every problem as `{path, message}`, the shape of the API's `errors` array.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            SpecError::Invalid { issues } | SpecError::NotRepresentable { issues, .. } => {
                issues.clone()
            }
            SpecError::Syntax {
                line,
                column,
                message,
                format,
            } => vec![Issue {
                path: String::new(),
                message: format!("{format} syntax error: {message}"),
                line: Some(*line),
                column: Some(*column),
            }],
            other => vec![Issue::new("", other.to_string())],
        }
    }
}

fn summarize(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
