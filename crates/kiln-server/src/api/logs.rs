//! `GET /jobs/{id}/tasks/{task}/logs`: a task's output — whole (streamed,
//! never loaded into memory), its last lines, a byte range, as a download,
//! or followed live until the task ends.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_engine::local::TaskDir;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::IntoParams;

use super::extract::{P, Q};
use super::jobs::resolve;
use super::{blocking, AppState, Caller, Problem};

/// A task's output streams.
#[derive(Debug, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum StreamName {
    Output,
    Stdout,
    Stderr,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// `output` (both, in arrival order; default), `stdout` or `stderr`.
    #[param(value_type = Option<StreamName>)]
    stream: Option<String>,
    /// Only the last N lines (with `follow`: then everything new).
    #[param(maximum = 1_000_000)]
    tail: Option<usize>,
    /// Start at this byte.
    offset: Option<u64>,
    /// At most this many bytes from `offset`.
    #[param(maximum = 67_108_864)]
    length: Option<u64>,
    /// Keep the response open and send new output as it is written; it
    /// ends when the task ends.
    #[serde(default)]
    follow: bool,
    /// Send as a file download.
    #[serde(default)]
    download: bool,
    /// Default: the job's current attempt.
    attempt: Option<u32>,
}

/// Limits on what one request holds in memory.
const MAX_RANGE: u64 = 64 << 20;
const MAX_TAIL: usize = 1_000_000;

/// A safety net under the file watcher: look at the file at least this
/// often while following, in case a change notification is missed.
const FOLLOW_RECHECK: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/api/v1/jobs/{id}/tasks/{task}/logs", tag = "logs",
    params(("id" = String, Path, description = "user~name, or name for your own job"),
        ("task" = String, Path, description = "task id, e.g. worker-0"), LogQuery),
    responses((status = 200, description = "the log text (streamed while following)", content_type = "text/plain"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// A task's log.
pub async fn logs(
    caller: Caller,
    State(state): State<AppState>,
    P((id, task)): P<(String, String)>,
    Q(q): Q<LogQuery>,
) -> Result<Response, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    let attempt = q.attempt.unwrap_or(job.attempt);
    let (key, store) = (job.key, Arc::clone(&state.store));
    let tasks = blocking(move || store.tasks(key, attempt)).await?;
    let Some(rec) = tasks.iter().find(|t| t.task.to_string() == task) else {
        let known: Vec<String> = tasks.iter().map(|t| t.task.to_string()).collect();
        return Err(Problem::not_found(if known.is_empty() {
            format!(
                "job {} has no tasks in attempt {attempt} yet (it is {}); its logs start when it runs",
                job.id,
                job.state.as_str()
            )
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
    let stream = q.stream.as_deref().unwrap_or("output");
    let path = match stream {
        "output" | "all" => dir.output(),
        "stdout" => dir.stdout(),
        "stderr" => dir.stderr(),
        other => {
            return Err(Problem::bad_request(format!(
                "stream '{other}': use output, stdout or stderr"
            )))
        }
    };
    if q.length.is_some_and(|n| n > MAX_RANGE) {
        return Err(Problem::bad_request(format!(
            "length: at most {MAX_RANGE} bytes per request; use download for the whole log"
        )));
    }
    if q.tail.is_some_and(|n| n > MAX_TAIL) {
        return Err(Problem::bad_request(format!(
            "tail: at most {MAX_TAIL} lines; use download for the whole log"
        )));
    }
    if q.tail.is_some() && q.offset.is_some() {
        return Err(Problem::bad_request("give tail or offset, not both"));
    }
    if let Some(offset) = q.offset.filter(|o| *o > 0) {
        check_offset(&path, offset).await?;
    }
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];

    // Where to start: after the tail's first byte, at the offset, or at 0.
    let start = match (q.tail, q.offset) {
        (Some(n), _) => {
            let p = path.clone();
            let tail = tokio::task::spawn_blocking(move || tail_start(&p, n))
                .await
                .map_err(|e| Problem::internal(e.to_string()))?
                .map_err(Problem::internal)?;
            if !q.follow {
                let bytes = read_range(&path, tail, None).await?;
                return Ok(starting_at(tail, (text_plain, bytes).into_response()));
            }
            tail
        }
        (None, Some(o)) => o,
        (None, None) => 0,
    };
    if q.follow {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let record = TaskRecordAt {
            store: Arc::clone(&state.store),
            key: job.key,
            attempt,
            task: rec.task.clone(),
        };
        tokio::spawn(follow(path, dir, record, start, tx));
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Ok(starting_at(start, (text_plain, body).into_response()));
    }
    if q.length.is_some() {
        let bytes = read_range(&path, start, q.length).await?;
        return Ok(starting_at(start, (text_plain, bytes).into_response()));
    }
    // The whole file (from `start`), streamed.
    let file = match tokio::fs::File::open(&path).await {
        Ok(mut f) => {
            f.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| Problem::internal(format!("cannot read {}: {e}", path.display())))?;
            Some(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Problem::internal(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let body = match file {
        Some(f) => Body::from_stream(tokio_util::io::ReaderStream::new(f)),
        None => Body::empty(),
    };
    if q.download {
        let name = format!(
            "{}-{task}-{stream}.log",
            job.id.to_string().replace('~', "_")
        );
        return Ok((
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    super::download::attachment(&name),
                ),
            ],
            body,
        )
            .into_response());
    }
    Ok(starting_at(start, (text_plain, body).into_response()))
}

/// Says where in the log file the answer's first byte is, so a client that
/// asked for a tail can resume exactly after what it got (`offset` =
/// start + bytes received).
fn starting_at(start: u64, mut r: Response) -> Response {
    r.headers_mut().insert(
        header::HeaderName::from_static("x-kiln-log-start"),
        header::HeaderValue::from(start),
    );
    r
}

/// An offset past the end of the log is the client's mistake: a log only
/// grows, so no answer it got earlier points there. Refused here with what
/// the log holds, before a seek the OS refuses (far offsets) or a follow
/// that would wait for bytes that never come.
async fn check_offset(path: &FsPath, offset: u64) -> Result<(), Problem> {
    let size = match tokio::fs::metadata(path).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(Problem::internal(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    if offset > size {
        return Err(Problem::bad_request(format!(
            "offset: {offset} is past the end of the log, which has {}",
            kiln_spec::words::count(size, "byte")
        )));
    }
    Ok(())
}

async fn read_range(path: &FsPath, start: u64, length: Option<u64>) -> Result<Vec<u8>, Problem> {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Problem::internal(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut out = Vec::new();
    let res = async {
        f.seek(SeekFrom::Start(start)).await?;
        match length {
            Some(n) => f.take(n).read_to_end(&mut out).await,
            None => f.read_to_end(&mut out).await,
        }
    }
    .await;
    res.map_err(|e| Problem::internal(format!("cannot read {}: {e}", path.display())))?;
    Ok(out)
}

/// Where the store keeps a followed task's record.
struct TaskRecordAt {
    store: Arc<dyn kiln_store::Store>,
    key: i64,
    attempt: u32,
    task: kiln_spec::TaskId,
}

impl TaskRecordAt {
    /// Blocking: whether the store has the task ended. A supervisor that
    /// died without writing an exit record leaves a task the server records
    /// as lost, and its log will not grow again.
    fn ended(&self) -> bool {
        self.store.tasks(self.key, self.attempt).is_ok_and(|ts| {
            ts.iter()
                .any(|t| t.task == self.task && t.finished_at_ms.is_some())
        })
    }
}

/// Sends what the log holds from `pos` on, then what is written to it,
/// waking on file-system notifications, until the task's exit record
/// exists and everything before it has been sent (the supervisor writes the
/// exit record only after the last output), or, looked at on each quiet
/// recheck, the store has the task ended without one. Ends early when the
/// client goes away.
async fn follow(
    path: PathBuf,
    dir: TaskDir,
    record: TaskRecordAt,
    mut pos: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    use notify::Watcher;
    let (ntx, mut nrx) = tokio::sync::mpsc::channel::<()>(1);
    let log_name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.map_or(true, |e| wakes_a_follower(&e, &log_name)) {
            let _ = ntx.try_send(());
        }
    });
    // Without a watcher the recheck below still gets everything, later.
    let _watcher = watcher.and_then(|mut w| {
        w.watch(dir.path(), notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    // Opened once it exists and kept: the supervisor only appends to it.
    let mut file: Option<std::fs::File> = None;
    let record = Arc::new(record);
    let mut quiet = false;
    loop {
        // One trip to the blocking pool per wake-up, for the exit check and
        // every read, instead of one per call.
        let (path_, exit, record_) = (path.clone(), dir.exit(), Arc::clone(&record));
        let looked = tokio::task::spawn_blocking(move || {
            // Before the read, like the exit record.
            let ended = quiet && record_.ended();
            let mut look = look_at_log(&path_, &exit, file, pos);
            look.finished |= ended;
            look
        })
        .await;
        let look = match looked {
            Ok(look) => look,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                return;
            }
        };
        file = look.file;
        match look.chunk {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => {
                pos += chunk.len() as u64;
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
        if look.more {
            continue;
        }
        if look.finished {
            return;
        }
        quiet = tokio::select! {
            _ = nrx.recv() => false,
            _ = tokio::time::sleep(FOLLOW_RECHECK) => true,
            _ = tx.closed() => return,
        };
    }
}

/// The most a follower reads in one look: a flood is sent in pieces.
const FOLLOW_CHUNK: u64 = 256 * 1024;

/// What one look at a followed log found.
struct Look {
    file: Option<std::fs::File>,
    /// The bytes from the follower's position on, up to [`FOLLOW_CHUNK`].
    chunk: std::io::Result<Vec<u8>>,
    /// The chunk was full: there may be more already.
    more: bool,
    /// The exit record existed before the read, so once nothing more is
    /// there the log is complete.
    finished: bool,
}

/// Blocking: checks for the exit record, then reads what the log has from
/// `pos` on (opening it if it exists by now).
fn look_at_log(path: &FsPath, exit: &FsPath, file: Option<std::fs::File>, pos: u64) -> Look {
    let finished = exit.exists();
    // Only a log not there yet means "nothing yet"; any other failure to
    // open it ends the follow with that error, not as a complete log.
    let opened = match file {
        Some(f) => Ok(Some(f)),
        None => match std::fs::File::open(path) {
            Ok(mut f) => f.seek(SeekFrom::Start(pos)).map(|_| Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
    };
    let (mut file, opened) = match opened {
        Ok(f) => (f, Ok(())),
        Err(e) => (None, Err(e)),
    };
    let mut chunk = Vec::new();
    let read = match (opened, file.as_mut()) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(f)) => f.take(FOLLOW_CHUNK).read_to_end(&mut chunk),
        (Ok(()), None) => Ok(0),
    };
    let more = matches!(read, Ok(n) if n as u64 == FOLLOW_CHUNK);
    Look {
        file,
        chunk: read.map(|_| chunk),
        more,
        finished,
    }
}

/// Whether a change in the task's folder may mean more output in the
/// followed log or the exit record. Reads are not: our own reads of the log
/// would otherwise wake the loop that makes them, and it would never sleep.
/// Nor are writes to the task's other logs (the supervisor writes each chunk
/// to two files), which would wake a follower twice per chunk.
fn wakes_a_follower(event: &notify::Event, log_name: &std::ffi::OsStr) -> bool {
    use notify::event::{AccessKind, AccessMode};
    let kind_may = match event.kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    };
    let about_us = event.paths.is_empty()
        || event.paths.iter().any(|p| match p.file_name() {
            Some(n) => n == log_name || n.as_encoded_bytes().starts_with(b"exit.json"),
            None => true,
        });
    kind_may && about_us
}

/// The byte where the last `n` lines begin.
fn tail_start(path: &FsPath, n: usize) -> Result<u64, String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let len = f
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let tail = last_lines(&mut f, n).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(len - tail.len() as u64)
}

/// The last `n` lines, reading backwards in blocks so a huge log costs only
/// what is returned (linear in that).
pub fn last_lines<R: Read + Seek>(f: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    const BLOCK: u64 = 64 * 1024;
    let len = f.seek(SeekFrom::End(0))?;
    if n == 0 || len == 0 {
        return Ok(Vec::new());
    }
    // Blocks from the end backwards; a final newline ends the last line, it
    // does not start another.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    let mut pos = len;
    let mut skip_final = true;
    let mut cut: Option<(usize, usize)> = None; // (block, offset) where the tail starts
    while pos > 0 && cut.is_none() {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block)?;
        pos = start;
        for i in (0..block.len()).rev() {
            if block[i] != b'\n' {
                skip_final = false;
                continue;
            }
            if skip_final {
                skip_final = false;
                continue;
            }
            newlines += 1;
            if newlines == n {
                cut = Some((blocks.len(), i + 1));
                break;
            }
        }
        blocks.push(block);
    }
    let mut out = Vec::new();
    for (b, block) in blocks.iter().enumerate().rev() {
        match cut {
            Some((cb, off)) if cb == b => out.extend_from_slice(&block[off..]),
            _ => out.extend_from_slice(block),
        }
    }
    Ok(out)
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
    fn only_writes_to_the_followed_log_or_the_exit_record_wake_its_followers() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RenameMode,
        };
        use notify::{Event, EventKind};
        let log = std::ffi::OsStr::new("output.log");
        let on = |kind: EventKind, names: &[&str]| {
            let mut e = Event::new(kind);
            for n in names {
                e = e.add_path(PathBuf::from("/d/jobs/1/attempt-0/main-0").join(n));
            }
            wakes_a_follower(&e, log)
        };
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(on(write, &["output.log"]));
        assert!(!on(write, &["stdout.log"]));
        assert!(!on(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            &["output.log"]
        ));
        assert!(!on(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            &["output.log"]
        ));
        assert!(on(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &["output.log"]
        ));
        // The exit record is written to a temporary name, then renamed.
        assert!(on(EventKind::Create(CreateKind::File), &["exit.json.tmp"]));
        assert!(on(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["exit.json.tmp", "exit.json"]
        ));
        assert!(!on(EventKind::Create(CreateKind::File), &["started.json"]));
        // Events that name nothing (a queue overflow) wake it to look.
        assert!(on(EventKind::Other, &[]));
    }

    #[test]
    fn a_look_at_a_followed_log_reads_on_from_where_it_was_in_pieces() {
        let d = tempfile::tempdir().expect("tmp");
        let (log, exit) = (d.path().join("output.log"), d.path().join("exit.json"));
        // No log yet: nothing, and not finished.
        let l = look_at_log(&log, &exit, None, 0);
        assert!(l.file.is_none() && !l.more && !l.finished);
        assert!(l.chunk.expect("read").is_empty());
        let big = FOLLOW_CHUNK as usize + 10;
        let bytes: Vec<u8> = (0..big).map(|i| (i % 251) as u8).collect();
        std::fs::write(&log, &bytes).expect("write");
        let l = look_at_log(&log, &exit, None, 3);
        assert_eq!(
            l.chunk.as_deref().expect("read"),
            &bytes[3..3 + FOLLOW_CHUNK as usize]
        );
        assert!(l.more && !l.finished);
        // The kept file goes on where the last look stopped.
        let l = look_at_log(&log, &exit, l.file, 3 + FOLLOW_CHUNK);
        assert_eq!(
            l.chunk.as_deref().expect("read"),
            &bytes[3 + FOLLOW_CHUNK as usize..]
        );
        assert!(!l.more);
        std::fs::write(&exit, "{}").expect("write");
        let l = look_at_log(&log, &exit, l.file, big as u64);
        assert!(l.finished && l.chunk.expect("read").is_empty());
        // A log that cannot be opened is an error, not a complete log.
        let unreadable = d.path().join("a-folder.log");
        std::fs::create_dir(&unreadable).expect("mkdir");
        let l = look_at_log(&unreadable, &exit, None, 0);
        assert!(l.finished && l.chunk.is_err());
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
    fn tails_of_files_without_lines_or_with_only_newlines() {
        assert_eq!(tail("no newline at all", 1), "no newline at all");
        assert_eq!(tail("\n\n\n", 2), "\n\n");
        assert_eq!(tail("a\n", 1), "a\n");
    }

    #[test]
    fn tails_cross_block_boundaries() {
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(tail(&text, 3), "line 49997\nline 49998\nline 49999\n");
        assert_eq!(tail(&text, 50_000), text);
    }
}
