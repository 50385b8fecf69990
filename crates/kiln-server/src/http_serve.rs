//! kiln's HTTP listeners (the API's and the TensorBoards'): an accept loop
//! of its own around hyper, so that clients that hold connections without
//! finishing a request cannot use up the server's file descriptors and shut
//! everyone else out.
//!
//! - A request head (request line and headers) must arrive whole within
//!   the header timeout, counted from the connection's start or from the
//!   end of its previous answer; so an idle kept-alive connection is closed
//!   after that long too.
//! - A request body may go quiet for at most the body timeout; the request
//!   then fails (the handler answers, or the connection closes).
//! - Connections are capped overall and per client address (per /64 for
//!   IPv6). One over a cap is accepted and closed at once, not left queued.
//!
//! None of this bounds a response: log follows stream as long as they need.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Descriptors kept for everything but client connections: the store,
/// logs being followed, uploads, spawned supervisors.
const RESERVED_FILES: u64 = 256;
/// The default overall cap never goes past this.
const MAX_DEFAULT_CONNECTIONS: u64 = 16_384;
/// At most one warning per this long about refused connections, and one
/// about accept errors.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The listeners' limits.
#[derive(Clone, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// Raises the soft limit on open files as far as the hard one allows (up to
/// what `max_connections`, or else the default cap, needs) and returns the
/// soft limit in force; None when it cannot be read.
pub fn raise_open_files(max_connections: Option<usize>) -> Option<u64> {
    let want = max_connections
        .map_or(MAX_DEFAULT_CONNECTIONS, |m| m as u64)
        .saturating_add(RESERVED_FILES);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        let target = want.min(lim.rlim_max);
        if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < target {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = target;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// The overall cap when none is given: the open-files limit less what the
/// rest of the server needs (half of a small limit), at most 16,384.
pub fn default_max_connections(open_files: Option<u64>) -> usize {
    let Some(soft) = open_files else {
        return 768;
    };
    let room = if soft > 2 * RESERVED_FILES {
        soft - RESERVED_FILES
    } else {
        soft / 2
    };
    room.clamp(1, MAX_DEFAULT_CONNECTIONS) as usize
}

/// Who holds connections now; shared by both listeners, which draw on the
/// same descriptors.
pub struct Connections {
    limits: Limits,
    open: Mutex<Open>,
    refused: AtomicU64,
    /// When the last warning about refused connections, and about accept
    /// errors, was logged.
    warned_refused: Mutex<Option<Instant>>,
    warned_accept: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    Overall,
    PerClient,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Overall => "max-connections",
            Refusal::PerClient => "max-connections-per-ip",
        }
    }
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    conns: Arc<Connections>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

/// The address a client is counted under: IPv4 (mapped or not) as is,
/// IPv6 by its /64, which one host usually holds whole.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            open: Mutex::new(Open::default()),
            refused: AtomicU64::new(0),
            warned_refused: Mutex::new(None),
            warned_accept: Mutex::new(None),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let client = client_key(peer);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.max_connections {
            return Err(Refusal::Overall);
        }
        let n = open.by_client.entry(client).or_insert(0);
        if *n >= self.limits.max_connections_per_ip {
            return Err(Refusal::PerClient);
        }
        *n += 1;
        open.total += 1;
        Ok(Slot {
            conns: Arc::clone(self),
            client,
        })
    }

    fn refused(&self, peer: SocketAddr, why: Refusal) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        debug!(%peer, limit = why.as_str(), "connection refused: over the cap");
        if warn_due(&self.warned_refused) {
            let open = self.open.lock().map(|o| o.total).unwrap_or_default();
            warn!(
                %peer,
                limit = why.as_str(),
                refused_total = n,
                open,
                max_connections = self.limits.max_connections,
                max_connections_per_ip = self.limits.max_connections_per_ip,
                "connections refused: over the cap (closed at once; at most one such warning per 10 s)"
            );
        }
    }
}

/// Whether a rate-limited warning is due now (and so no longer).
fn warn_due(last: &Mutex<Option<Instant>>) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// Accept errors that concern one connection only (it went away before it
/// was accepted), not the listener.
fn connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset | K::Interrupted
    )
}

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting, lets each connection finish what it is answering (idle ones
/// close at once) and returns once all have closed, as `axum::serve` with
/// graceful shutdown does.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    conns: Arc<Connections>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    let (close_tx, close_rx) = watch::channel(());
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(conns.limits.header_timeout);
    let mut pause = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = signal_tx.closed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                pause = Duration::from_millis(10);
                a
            }
            Err(e) if connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: the
                // connection stays queued; wait instead of spinning on it.
                if warn_due(&conns.warned_accept) {
                    warn!(error = %e, pause_ms = pause.as_millis() as u64, "cannot accept connections");
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = signal_tx.closed() => break,
                }
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let slot = match conns.admit(peer.ip()) {
            Ok(s) => s,
            Err(why) => {
                conns.refused(peer, why);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let body_timeout = conns.limits.body_timeout;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(|b| IdleBody::new(b, body_timeout));
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req).await }
        });
        let builder = builder.clone();
        let signal_tx = signal_tx.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = signal_tx.closed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(slot);
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

/// A request body that fails once it has made its reader wait `idle`
/// without a byte. Time the handler spends elsewhere does not count.
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }
}

/// The error a stalled request body ends with.
#[derive(Debug)]
pub struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body sent nothing for {} s (--http-body-timeout)",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyStalled {}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.waiting = false;
                Poll::Ready(r.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let at = tokio::time::Instant::now() + this.idle;
                    this.timer.as_mut().reset(at);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyStalled(this.idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: max,
            max_connections_per_ip: per_ip,
        }
    }

    #[test]
    fn caps_count_per_client_and_overall_and_free_on_drop() {
        let c = Connections::new(limits(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = c.admit(a).expect("first");
        let _a2 = c.admit(a).expect("second");
        assert!(matches!(c.admit(a), Err(Refusal::PerClient)));
        let _b1 = c.admit(b).expect("another client");
        assert!(matches!(c.admit(b), Err(Refusal::Overall)));
        drop(a1);
        let _a3 = c.admit(a).expect("freed");
        assert_eq!(c.open.lock().unwrap().total, 3);
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let c = Connections::new(limits(100, 1));
        let _x = c.admit("2001:db8::1".parse().unwrap()).expect("first");
        assert!(c.admit("2001:db8::2:3".parse().unwrap()).is_err());
        let _y = c
            .admit("2001:db8:0:1::1".parse().unwrap())
            .expect("another /64");
        let _z = c.admit("127.0.0.9".parse().unwrap()).expect("v4");
        assert!(c.admit("::ffff:127.0.0.9".parse().unwrap()).is_err());
    }

    #[test]
    fn the_default_cap_follows_the_open_files_limit() {
        assert_eq!(default_max_connections(Some(1024)), 768);
        assert_eq!(default_max_connections(Some(400)), 200);
        assert_eq!(default_max_connections(Some(1 << 20)), 16_384);
        assert_eq!(default_max_connections(Some(libc::RLIM_INFINITY)), 16_384);
    }

    /// A body fed by hand.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    async fn next(body: &mut IdleBody<Fed>) -> Option<Result<Frame<Bytes>, axum::BoxError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn a_body_fails_once_its_reader_waited_idle_but_not_for_a_slow_reader() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = IdleBody::new(Fed(rx), Duration::from_millis(200));
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        // The reader away for longer than the timeout does not count.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let frame = next(&mut body).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        let err = next(&mut body).await.unwrap().unwrap_err();
        assert!(err.to_string().contains("sent nothing for"), "{err}");
        drop(tx);
    }
}
