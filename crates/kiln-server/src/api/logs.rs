//! `GET /jobs/{id}/tasks/{task}/logs`: a task's output, whole or its last
//! lines. (Live following arrives with the streaming API.)

use std::io::{Read, Seek, SeekFrom};
use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_engine::local::TaskDir;
use serde::Deserialize;

use super::jobs::resolve;
use super::{blocking, AppState, Caller, Problem};

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// `output` (both, in arrival order; default), `stdout` or `stderr`.
    stream: Option<String>,
    /// Only the last N lines.
    tail: Option<usize>,
    /// Default: the job's current attempt.
    attempt: Option<u32>,
}

pub async fn logs(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    let attempt = q.attempt.unwrap_or(job.attempt);
    let (key, store) = (job.key, Arc::clone(&state.store));
    let tasks = blocking(move || store.tasks(key, attempt)).await?;
    let Some(rec) = tasks.iter().find(|t| t.task.to_string() == task) else {
        let known: Vec<String> = tasks.iter().map(|t| t.task.to_string()).collect();
        return Err(Problem::not_found(if known.is_empty() {
            format!("job {} has no tasks in attempt {attempt} yet", job.id)
        } else {
            format!(
                "job {} has no task {task} in attempt {attempt}; it has {}",
                job.id,
                known.join(", ")
            )
        }));
    };
    let Some(dir) = rec.dir.clone().map(TaskDir::new) else {
        return Err(Problem::not_found(format!("task {task} has not started")));
    };
    let path = match q.stream.as_deref().unwrap_or("output") {
        "output" | "all" => dir.output(),
        "stdout" => dir.stdout(),
        "stderr" => dir.stderr(),
        other => {
            return Err(Problem::bad_request(format!(
                "stream '{other}': use output, stdout or stderr"
            )))
        }
    };
    let tail = q.tail;
    let text = tokio::task::spawn_blocking(move || read_log(&path, tail))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(Problem::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

fn read_log(path: &FsPath, tail: Option<usize>) -> Result<Vec<u8>, String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        // Not written yet: nothing to show.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    match tail {
        None => {
            let mut all = Vec::new();
            f.read_to_end(&mut all)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok(all)
        }
        Some(n) => {
            last_lines(&mut f, n).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
    }
}

/// The last `n` lines, reading backwards in blocks so a huge log costs only
/// what is returned.
pub fn last_lines<R: Read + Seek>(f: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    const BLOCK: u64 = 64 * 1024;
    let len = f.seek(SeekFrom::End(0))?;
    if n == 0 || len == 0 {
        return Ok(Vec::new());
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        pos = start;
        // A final newline ends the last line; it does not start another.
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let newlines = body.iter().filter(|b| **b == b'\n').count();
        if newlines >= n || pos == 0 {
            let mut seen = 0;
            let cut = body
                .iter()
                .rposition(|b| {
                    if *b == b'\n' {
                        seen += 1;
                    }
                    seen == n
                })
                .map_or(0, |i| i + 1);
            return Ok(buf[cut..].to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tail(text: &str, n: usize) -> String {
        String::from_utf8(last_lines(&mut Cursor::new(text.as_bytes().to_vec()), n).expect("read"))
            .expect("utf8")
    }

    #[test]
    fn tails_count_lines_from_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 0), "");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn tails_cross_block_boundaries() {
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&text, 3), "line 49997\nline 49998\nline 49999\n");
        assert_eq!(tail(&text, 50_000), text);
    }
}
