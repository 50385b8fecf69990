//! What kiln learns about a running job besides its state: time series of
//! resource use and of training metrics, with the parsers that find
//! training metrics in log lines and in TensorBoard event files. Pure code
//! over bytes and numbers; the server reads files and processes.

pub mod error;
pub mod idle;
pub mod lines;
pub mod series;
pub mod tfevents;

pub use error::MetricsError;
