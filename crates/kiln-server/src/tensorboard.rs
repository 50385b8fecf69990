//! TensorBoard for a job, on demand. The server runs the PyPI `tensorboard`
//! on the job's `KILN_TENSORBOARD_DIR` and the API proxies
//! `/jobs/{id}/tensorboard/` to it behind kiln's own sign-in. TensorBoard
//! has no sign-in of its own, so it never listens on TCP, where every task
//! on the host could reach it: a small launcher serves its WSGI app on a
//! Unix socket in kiln's data folder, which sandboxed tasks cannot see.
//!
//! With the sandbox, TensorBoard runs under bubblewrap as a job of its
//! owner would: the host read-only, capabilities dropped, kiln's data
//! folder hidden except for the owner's space (read-only) and the board's
//! own folder, and no network at all. A board nobody has used for a while
//! is stopped; the next visit starts it again. At most `max` run at once;
//! the least recently used idle one makes room.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use kiln_engine::local::sandbox::{host_root, running_as_root, Bind, Sandbox};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

/// How long TensorBoard may take to load before kiln gives up on it; it
/// imports a lot of Python and is slow on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Lines of TensorBoard's output kept to explain a failed start.
const KEEP_LINES: usize = 12;

/// Serves TensorBoard's WSGI app on the Unix socket named first, with the
/// TensorBoard flags that follow; writes no `/tmp/.tensorboard-info` file.
const LAUNCHER: &str = r#"
import sys
from tensorboard import program
from werkzeug import serving

SOCKET = sys.argv[1]

class UnixServer(program.TensorBoardServer):
    def __init__(self, wsgi_app, flags):
        self._server = serving.make_server("unix://" + SOCKET, 0, wsgi_app, threaded=True)

    def serve_forever(self):
        self._server.serve_forever()

    def get_url(self):
        return "unix://" + SOCKET

class Board(program.TensorBoard):
    def _register_info(self, server):
        pass

board = Board(server_class=UnixServer)
board.configure(argv=["tensorboard"] + sys.argv[2:])
sys.exit(board.main())
"#;

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("TensorBoard is not installed on the server: install it (pip install tensorboard) or start kiln server with --tensorboard PROGRAM")]
    NotInstalled,
    #[error("TensorBoard did not start: {0}")]
    Start(String),
    #[error("TensorBoard is not answering: {0}")]
    Proxy(String),
    #[error("{0} TensorBoards are in use, the most this server runs at once; try again when one is closed")]
    Busy(usize),
}

/// Where a job's board looks, and what of the host it may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardSpec {
    /// The URL path it is served under: `/jobs/<user~name>/tensorboard`.
    pub prefix: String,
    pub logdir: PathBuf,
    /// Sandboxed: the owner's space, the one part of the data folder shown.
    pub space: Option<PathBuf>,
    /// The board's own folder (its socket, its /tmp), inside the data folder.
    pub dir: PathBuf,
    /// The owner's uid: the board reads their space as them, never as root.
    pub run_as: Option<kiln_engine::local::RunAs>,
}

impl BoardSpec {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("board.sock")
    }
}

/// The Python that runs a `tensorboard` console script: the interpreter in
/// its `#!` line, or in the `exec` line pip writes for long paths.
pub fn python_of(script_head: &str) -> Option<PathBuf> {
    let mut lines = script_head.lines();
    let first = lines.next()?.strip_prefix("#!")?.trim();
    let mut words = first.split_whitespace();
    let interp = words.next()?;
    if interp.ends_with("/env") {
        let name = words.next()?;
        return kiln_engine::local::sandbox::find_program(name);
    }
    if interp.contains("python") {
        return Some(PathBuf::from(interp));
    }
    // #!/bin/sh
    // '''exec' "/long/path/venv/bin/python3" "$0" "$@"
    lines
        .find_map(|l| l.strip_prefix("'''exec' "))
        .and_then(|l| l.split('"').nth(1))
        .map(PathBuf::from)
}

/// The command line that runs the board: the launcher under `python`,
/// directly, or inside `sandbox` (whose binds and /tmp this fills in).
pub fn command_line(
    python: &Path,
    sandbox: Option<Sandbox>,
    spec: &BoardSpec,
) -> (PathBuf, Vec<OsString>) {
    let mut run: Vec<OsString> = vec![
        python.into(),
        "-c".into(),
        LAUNCHER.into(),
        spec.socket().into(),
        "--logdir".into(),
        spec.logdir.clone().into(),
        "--path_prefix".into(),
        spec.prefix.clone().into(),
        "--reload_interval".into(),
        "15".into(),
    ];
    match (sandbox, &spec.space) {
        (Some(mut sb), Some(space)) => {
            sb.binds = vec![
                Bind {
                    source: space.clone(),
                    target: space.clone(),
                    read_only: true,
                    beneath: None,
                },
                Bind {
                    source: spec.dir.clone(),
                    target: spec.dir.clone(),
                    read_only: false,
                    beneath: None,
                },
            ];
            sb.tmp = spec.dir.join("tmp");
            // The owner's uid passes through the hidden data folder to its
            // space and to the board's own folder.
            sb.dirs = [space.parent(), spec.dir.parent()]
                .into_iter()
                .flatten()
                .map(Path::to_path_buf)
                .collect();
            sb.switch_user = kiln_engine::local::sandbox::SwitchUser::of(
                spec.run_as,
                kiln_engine::local::sandbox::find_setpriv().as_deref(),
            );
            // The sandbox has its own PID and IPC namespaces already.
            let mut args: Vec<OsString> = ["--unshare-net", "--new-session"]
                .into_iter()
                .map(OsString::from)
                .collect();
            args.extend(sb.args().into_iter().map(OsString::from));
            args.append(&mut run);
            (sb.bwrap, args)
        }
        _ => {
            let exe = PathBuf::from(run.remove(0));
            (exe, run)
        }
    }
}

/// Whether `line` is TensorBoard saying it serves on `socket`. Only that
/// exact line counts, so nothing else the process prints can point the
/// proxy elsewhere.
pub fn is_ready_line(line: &str, socket: &Path) -> bool {
    line.starts_with("TensorBoard ") && line.contains(&format!(" at unix://{} ", socket.display()))
}

/// Headers that belong to one connection, or to kiln's sign-in, and are not
/// passed through: TensorBoard never sees a kiln token or cookie.
pub fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    const DROP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "authorization",
        "cookie",
    ];
    // And whatever the Connection header names as hop-by-hop.
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (k, v) in from {
        if !DROP.contains(&k.as_str()) && !named.iter().any(|n| n == k.as_str()) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

struct Board {
    child: Child,
    spec: BoardSpec,
}

/// One job's board: None until started, and again once stopped.
#[derive(Default)]
struct Slot {
    board: tokio::sync::Mutex<Option<Board>>,
    /// Milliseconds since `Boards::epoch` of the last use.
    last_used_ms: AtomicU64,
    /// Requests being proxied now: a board serving one is not idle.
    in_flight: AtomicUsize,
}

/// Held while a request and its answer pass through; marks the board used
/// when the answer is done.
struct InFlight {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl InFlight {
    fn new(slot: Arc<Slot>, epoch: Instant) -> Self {
        slot.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight { slot, epoch }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot
            .last_used_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.slot.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Boards {
    /// The Python of the `tensorboard` program; None when not installed.
    python: Option<PathBuf>,
    /// bubblewrap, when sandboxed, and kiln's data folder that it hides.
    bwrap: Option<(PathBuf, PathBuf)>,
    idle_after: Duration,
    max: usize,
    epoch: Instant,
    slots: Mutex<HashMap<i64, Arc<Slot>>>,
}

impl Boards {
    /// `program` is the `tensorboard` console script; its Python runs the
    /// launcher. One that is not a Python script counts as not installed,
    /// with a warning.
    pub fn new(
        program: Option<PathBuf>,
        bwrap: Option<(PathBuf, PathBuf)>,
        idle_after: Duration,
        max: usize,
    ) -> Self {
        let python = program.and_then(|p| {
            let head: String = std::fs::read(&p)
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                .unwrap_or_default();
            let py = python_of(&head);
            if py.is_none() {
                warn!(program = %p.display(), "tensorboard: not a Python console script; `kiln tensorboard` is off");
            }
            py
        });
        Boards {
            python,
            bwrap,
            idle_after,
            max: max.max(1),
            epoch: Instant::now(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn slot(&self, key: i64) -> Arc<Slot> {
        match self.slots.lock() {
            Ok(mut m) => Arc::clone(m.entry(key).or_default()),
            // A poisoned map only means another request panicked mid-insert;
            // a fresh slot still works, it is just not shared.
            Err(_) => Arc::new(Slot::default()),
        }
    }

    /// Whether the job's board is running now.
    pub async fn running(&self, key: i64) -> bool {
        let slot = self.slot(key);
        let mut b = slot.board.lock().await;
        alive(&mut b)
    }

    /// Starts the job's board unless it runs.
    pub async fn ensure(&self, key: i64, spec: BoardSpec) -> Result<(), BoardError> {
        let slot = self.slot(key);
        let mut b = slot.board.lock().await;
        if alive(&mut b) && b.as_ref().is_some_and(|board| board.spec == spec) {
            slot.last_used_ms.store(self.now_ms(), Ordering::SeqCst);
            return Ok(());
        }
        // Stopped, died, or the job's folder moved: (re)start it.
        if let Some(mut old) = b.take() {
            let _ = old.child.kill().await;
        }
        self.make_room(key).await?;
        let board = self.start(spec).await?;
        info!(job_key = key, "tensorboard started");
        *b = Some(board);
        // Counted from now, not from before a start that may take a while.
        slot.last_used_ms.store(self.now_ms(), Ordering::SeqCst);
        Ok(())
    }

    /// Below `max` running boards, stopping the least recently used idle
    /// one if need be.
    async fn make_room(&self, starting: i64) -> Result<(), BoardError> {
        let slots: Vec<(i64, Arc<Slot>)> = match self.slots.lock() {
            Ok(m) => m
                .iter()
                .filter(|(k, _)| **k != starting)
                .map(|(k, s)| (*k, Arc::clone(s)))
                .collect(),
            Err(_) => return Ok(()),
        };
        let mut running: Vec<(u64, i64, Arc<Slot>)> = Vec::new();
        for (k, s) in slots {
            // A board that is starting holds its lock: it counts as running.
            let used = match s.board.try_lock() {
                Ok(mut b) => alive(&mut b).then(|| s.last_used_ms.load(Ordering::SeqCst)),
                Err(_) => Some(u64::MAX),
            };
            if let Some(used) = used {
                running.push((used, k, s));
            }
        }
        if running.len() < self.max {
            return Ok(());
        }
        running.sort_by_key(|r| r.0);
        for (_, k, s) in running {
            if s.in_flight.load(Ordering::SeqCst) > 0 {
                continue;
            }
            if let Ok(mut b) = s.board.try_lock() {
                if let Some(mut board) = b.take() {
                    let _ = board.child.kill().await;
                    info!(job_key = k, "tensorboard stopped to make room");
                    return Ok(());
                }
            }
        }
        Err(BoardError::Busy(self.max))
    }

    async fn start(&self, spec: BoardSpec) -> Result<Board, BoardError> {
        let python = self.python.as_ref().ok_or(BoardError::NotInstalled)?;
        let socket = spec.socket();
        let tmp = spec.dir.join("tmp");
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| BoardError::Start(format!("cannot make {}: {e}", tmp.display())))?;
        if let Some(id) = spec.run_as {
            // The board runs as its owner: its folder is theirs alone.
            for d in [&spec.dir, &tmp] {
                crate::identity::give(d, id, 0o700).map_err(BoardError::Start)?;
            }
        }
        // A socket left by a board that died.
        let _ = tokio::fs::remove_file(&socket).await;
        let sandbox = self.bwrap.as_ref().map(|(bwrap, data_root)| Sandbox {
            bwrap: bwrap.clone(),
            root: host_root(),
            hide: vec![data_root.clone()],
            dirs: Vec::new(),
            binds: Vec::new(),
            tmp: PathBuf::new(),
            shm_mb: 64,
            devices: Vec::new(),
            workdir: "/".into(),
            drop_caps: running_as_root(),
            switch_user: None,
        });
        let sandboxed = sandbox.is_some();
        let (exe, args) = command_line(python, sandbox, &spec);
        let mut cmd = Command::new(&exe);
        if let (false, Some(id)) = (sandboxed, spec.run_as) {
            // Unsandboxed, the board drops to its owner's uid itself (std
            // clears the supplementary groups when root changes uid).
            cmd.uid(id.uid).gid(id.gid);
        }
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BoardError::Start(format!("cannot run {}: {e}", exe.display())))?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill().await;
            return Err(BoardError::Start("no output pipe".into()));
        };
        let mut lines = BufReader::new(stderr).lines();
        let mut said: Vec<String> = Vec::new();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if is_ready_line(&line, &socket) {
                    return true;
                }
                if said.len() == KEEP_LINES {
                    said.remove(0);
                }
                said.push(line);
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let status = match child.try_wait() {
                Ok(Some(s)) => format!("it exited ({s})"),
                _ if ready.is_err() => {
                    format!("it did not serve within {}s", START_TIMEOUT.as_secs())
                }
                _ => "it closed its output".to_owned(),
            };
            let _ = child.kill().await;
            return Err(BoardError::Start(format!("{status}: {}", said.join(" | "))));
        }
        // Keep reading what it says, so a full pipe never stalls it.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                debug!(target: "tensorboard", "{line}");
            }
        });
        Ok(Board { child, spec })
    }

    /// Stops the job's board; false when none ran.
    pub async fn stop(&self, key: i64) -> bool {
        let slot = self.slot(key);
        let mut b = slot.board.lock().await;
        match b.take() {
            Some(mut board) => {
                let _ = board.child.kill().await;
                info!(job_key = key, "tensorboard stopped");
                true
            }
            None => false,
        }
    }

    /// Stops the board of a deleted job and forgets it.
    pub async fn forget(&self, key: i64) {
        self.stop(key).await;
        if let Ok(mut m) = self.slots.lock() {
            m.remove(&key);
        }
    }

    /// Passes one request to the job's board (started if need be) and its
    /// answer back, streamed both ways.
    pub async fn forward(
        &self,
        key: i64,
        spec: BoardSpec,
        req: Request<Body>,
    ) -> Result<Response<Body>, BoardError> {
        let guard = InFlight::new(self.slot(key), self.epoch);
        let socket = spec.socket();
        self.ensure(key, spec).await?;
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let uri: Uri = path
            .parse()
            .map_err(|e| BoardError::Proxy(format!("bad path {path}: {e}")))?;
        let mut out = Request::builder()
            .method(parts.method)
            .uri(uri)
            .body(body)
            .map_err(|e| BoardError::Proxy(e.to_string()))?;
        *out.headers_mut() = forwarded_headers(&parts.headers);
        out.headers_mut().insert(
            header::HOST,
            header::HeaderValue::from_static("tensorboard"),
        );
        let stream = tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(|e| BoardError::Proxy(format!("{}: {e}", socket.display())))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BoardError::Proxy(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "tensorboard connection ended");
            }
        });
        let resp = sender
            .send_request(out)
            .await
            .map_err(|e| BoardError::Proxy(e.to_string()))?;
        let (mut parts, body) = resp.into_parts();
        for h in ["connection", "keep-alive", "transfer-encoding"] {
            parts.headers.remove(HeaderName::from_static(h));
        }
        parts.headers.remove(header::SET_COOKIE);
        // The board counts as in use until the whole answer has gone out.
        let body = Body::new(body).into_data_stream().map(move |chunk| {
            let _ = &guard;
            chunk
        });
        Ok(Response::from_parts(parts, Body::from_stream(body)))
    }

    /// Stops boards nobody has used for `idle_after`; runs for as long as
    /// the server does.
    pub async fn reap_forever(self: Arc<Self>) {
        let every = (self.idle_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let slots: Vec<(i64, Arc<Slot>)> = match self.slots.lock() {
                Ok(m) => m.iter().map(|(k, s)| (*k, Arc::clone(s))).collect(),
                Err(_) => continue,
            };
            let idle_ms = self.idle_after.as_millis() as u64;
            for (key, slot) in slots {
                if slot.in_flight.load(Ordering::SeqCst) > 0 {
                    continue;
                }
                let unused = self
                    .now_ms()
                    .saturating_sub(slot.last_used_ms.load(Ordering::SeqCst));
                if unused < idle_ms {
                    continue;
                }
                // A board that is starting holds its lock: not idle.
                let Ok(mut b) = slot.board.try_lock() else {
                    continue;
                };
                if let Some(mut board) = b.take() {
                    let _ = board.child.kill().await;
                    info!(
                        job_key = key,
                        idle_secs = unused / 1000,
                        "tensorboard stopped: unused"
                    );
                }
            }
        }
    }
}

/// Who may see one job's board: a browser cannot send kiln's Bearer token,
/// so `kiln tensorboard JOB` hands out a link with a one-time ticket, which
/// the proxy trades for a cookie that opens that job's board only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub user: String,
    pub is_admin: bool,
    pub key: i64,
    pub expires_ms: u64,
}

/// How long a ticket link works, and how long the cookie it gives does.
pub const TICKET_MS: u64 = 5 * 60 * 1000;
pub const SESSION_MS: u64 = 12 * 3600 * 1000;

/// Tickets and sessions, in memory: a restart of kiln signs browsers out of
/// TensorBoard, and `kiln tensorboard JOB` gives a new link.
#[derive(Default)]
pub struct Passes {
    tickets: Mutex<HashMap<String, Pass>>,
    sessions: Mutex<HashMap<String, Pass>>,
}

impl Passes {
    /// A one-time ticket for `pass` (its `expires_ms` is set here).
    pub fn ticket(&self, mut pass: Pass, now_ms: u64) -> Option<String> {
        let t = crate::auth::new_token().ok()?;
        pass.expires_ms = now_ms + TICKET_MS;
        let mut m = self.tickets.lock().ok()?;
        m.retain(|_, p| p.expires_ms > now_ms);
        m.insert(t.clone(), pass);
        Some(t)
    }

    /// Trades a live ticket for job `key` for a session id; a ticket works
    /// once.
    pub fn redeem(&self, ticket: &str, key: i64, now_ms: u64) -> Option<String> {
        let mut pass = {
            let mut m = self.tickets.lock().ok()?;
            let p = m.remove(ticket)?;
            (p.key == key && p.expires_ms > now_ms).then_some(p)?
        };
        let id = crate::auth::new_token().ok()?;
        pass.expires_ms = now_ms + SESSION_MS;
        let mut m = self.sessions.lock().ok()?;
        m.retain(|_, p| p.expires_ms > now_ms);
        m.insert(id.clone(), pass);
        Some(id)
    }

    /// The pass behind a session cookie, if it is live and for job `key`.
    pub fn session(&self, id: &str, key: i64, now_ms: u64) -> Option<Pass> {
        let m = self.sessions.lock().ok()?;
        m.get(id)
            .filter(|p| p.key == key && p.expires_ms > now_ms)
            .cloned()
    }
}

/// Whether the board in the slot still runs; clears it if it died.
fn alive(b: &mut Option<Board>) -> bool {
    let dead = match b.as_mut() {
        Some(board) => match board.child.try_wait() {
            Ok(None) => false,
            Ok(Some(status)) => {
                warn!(%status, "tensorboard exited on its own");
                true
            }
            Err(_) => true,
        },
        None => return false,
    };
    if dead {
        *b = None;
    }
    !dead
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_one_job_once_and_sessions_expire() {
        let passes = Passes::default();
        let pass = Pass {
            user: "alice".into(),
            is_admin: false,
            key: 7,
            expires_ms: 0,
        };
        let t = passes.ticket(pass.clone(), 1_000).expect("ticket");
        assert_eq!(passes.redeem(&t, 8, 1_000), None, "another job's board");
        // The wrong job used it up.
        assert_eq!(passes.redeem(&t, 7, 1_000), None);
        let t = passes.ticket(pass.clone(), 1_000).expect("ticket");
        assert_eq!(passes.redeem(&t, 7, 1_000 + TICKET_MS), None, "too late");
        let t = passes.ticket(pass, 1_000).expect("ticket");
        let s = passes.redeem(&t, 7, 2_000).expect("session");
        assert_eq!(passes.redeem(&t, 7, 2_000), None, "only once");
        assert_eq!(
            passes.session(&s, 7, 3_000).map(|p| p.user),
            Some("alice".into())
        );
        assert_eq!(passes.session(&s, 8, 3_000), None);
        assert_eq!(passes.session(&s, 7, 2_000 + SESSION_MS), None);
        assert_eq!(passes.session("kiln_made_up", 7, 3_000), None);
    }

    #[test]
    fn the_ready_line_is_the_one_naming_our_socket() {
        let sock = Path::new("/data/tensorboard/7/board.sock");
        assert!(is_ready_line(
            "TensorBoard 2.21.0 at unix:///data/tensorboard/7/board.sock (Press CTRL+C to quit)",
            sock
        ));
        assert!(!is_ready_line(
            "TensorBoard 2.21.0 at unix:///tmp/elsewhere.sock (Press CTRL+C to quit)",
            sock
        ));
        assert!(!is_ready_line(
            "spoof: TensorBoard 2.21.0 at unix:///data/tensorboard/7/board.sock (x)",
            sock
        ));
        assert!(!is_ready_line(
            "NOTE: Using experimental fast data loading logic.",
            sock
        ));
    }

    #[test]
    fn the_python_of_a_console_script() {
        assert_eq!(
            python_of("#!/venv/bin/python3\n# -*- coding: utf-8 -*-\nimport re\n"),
            Some(PathBuf::from("/venv/bin/python3"))
        );
        assert_eq!(
            python_of("#!/bin/sh\n'''exec' \"/very/long/venv/bin/python3\" \"$0\" \"$@\"\n' '''\n"),
            Some(PathBuf::from("/very/long/venv/bin/python3"))
        );
        assert_eq!(python_of("\x7fELF\x02\x01"), None);
        assert_eq!(python_of("#!/bin/bash\necho hi\n"), None);
    }

    fn spec(space: Option<&str>) -> BoardSpec {
        BoardSpec {
            prefix: "/jobs/alice~mnist/tensorboard".into(),
            logdir: "/data/spaces/alice/Output/mnist/tensorboard".into(),
            space: space.map(PathBuf::from),
            dir: "/data/tensorboard/7".into(),
            run_as: None,
        }
    }

    fn sandbox() -> Sandbox {
        Sandbox {
            bwrap: "/usr/bin/bwrap".into(),
            root: vec![kiln_engine::local::sandbox::RootEntry::Dir("usr".into())],
            hide: vec!["/data".into()],
            dirs: Vec::new(),
            binds: Vec::new(),
            tmp: PathBuf::new(),
            shm_mb: 64,
            devices: Vec::new(),
            workdir: "/".into(),
            drop_caps: true,
            switch_user: None,
        }
    }

    #[test]
    fn sandboxed_it_sees_only_the_owners_space_and_has_no_network() {
        let (exe, args) = command_line(
            Path::new("/venv/bin/python3"),
            Some(sandbox()),
            &spec(Some("/data/spaces/alice")),
        );
        assert_eq!(exe, PathBuf::from("/usr/bin/bwrap"));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        let at = |a: &str| args.iter().position(|x| x == a);
        // The data folder is hidden first, then the space shown read-only
        // and the board's own folder writable.
        let hide = args
            .windows(2)
            .position(|w| w == ["--tmpfs", "/data"])
            .expect("hidden");
        let show = args
            .windows(3)
            .position(|w| w == ["--ro-bind", "/data/spaces/alice", "/data/spaces/alice"])
            .expect("space shown");
        let own = args
            .windows(3)
            .position(|w| w == ["--bind", "/data/tensorboard/7", "/data/tensorboard/7"])
            .expect("own folder");
        assert!(hide < show && hide < own);
        assert!(args
            .windows(3)
            .any(|w| w == ["--bind", "/data/tensorboard/7/tmp", "/tmp"]));
        for flag in ["--unshare-net", "--unshare-pid", "--new-session"] {
            assert!(at(flag).is_some(), "{flag}: {args:?}");
        }
        assert!(args.windows(2).any(|w| w == ["--cap-drop", "ALL"]));
        let sep = at("--").expect("--");
        assert_eq!(args[sep + 1], "/venv/bin/python3");
        let tail = &args[sep + 2..];
        assert_eq!(tail[0], "-c");
        assert_eq!(tail[2], "/data/tensorboard/7/board.sock");
        assert!(tail
            .windows(2)
            .any(|w| w == ["--path_prefix", "/jobs/alice~mnist/tensorboard"]));
        assert!(
            !tail.iter().any(|a| a == "--port" || a == "--host"),
            "no TCP"
        );
    }

    #[test]
    fn without_the_sandbox_it_runs_directly() {
        let (exe, args) = command_line(Path::new("/venv/bin/python3"), None, &spec(None));
        assert_eq!(exe, PathBuf::from("/venv/bin/python3"));
        assert_eq!(args[0], "-c");
    }

    #[test]
    fn kiln_credentials_and_connection_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer secret".parse().expect("value"),
        );
        h.insert(header::COOKIE, "kiln_tb=abc".parse().expect("value"));
        h.insert(header::CONNECTION, "keep-alive".parse().expect("value"));
        h.insert(header::HOST, "kiln:8420".parse().expect("value"));
        h.insert(header::ACCEPT, "text/html".parse().expect("value"));
        h.insert(
            HeaderName::from_static("x-secret-hop"),
            "1".parse().expect("value"),
        );
        h.append(header::CONNECTION, "x-secret-hop".parse().expect("value"));
        h.insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("value"),
        );
        let out = forwarded_headers(&h);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out.contains_key(header::ACCEPT) && out.contains_key(header::CONTENT_TYPE));
    }
}
