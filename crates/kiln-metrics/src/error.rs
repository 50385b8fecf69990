#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metric pattern {pattern:?} is not a valid regular expression: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("TensorBoard event file is corrupt at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
}
