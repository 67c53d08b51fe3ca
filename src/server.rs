//! Startup and shutdown: builds the state from configuration, serves, drains on a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, EventRecord, WriterTask};
use crate::config::Config;
use crate::pipeline::{AppState, Decider};
use crate::policy::Sources;
use crate::route::local::LocalModel;
use crate::snapshot::{Env, FileChange, Reload, Reloader, Snapshot, SnapshotError};

/// Why veil could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Policies, keys or upstreams are invalid.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// The audit database cannot be opened.
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The listener cannot bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The shared state (tests read the audit log through it).
    pub state: Arc<AppState>,
    shutdown: CancellationToken,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    writer: WriterTask,
}

impl Running {
    /// Stops accepting, waits for in-flight requests, then flushes the audit log (retrying for
    /// up to 10 s while the database fails). Returns the number of audit rows that could not be
    /// written: 0 unless the database stayed down.
    pub async fn shutdown(self) -> u64 {
        self.shutdown.cancel();
        let _ = self.serve.await;
        drop(self.state);
        let lost = self.writer.finish(Duration::from_secs(10)).await;
        if lost > 0 {
            tracing::error!(
                rows = lost,
                "audit rows could not be written before shutdown; they are lost"
            );
        }
        lost
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Builds everything from `config` and starts serving. Secrets are read through `env`.
pub async fn start(
    config: Config,
    env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
) -> Result<Running, StartError> {
    let env: Env = Arc::new(env);
    let classifier = crate::snapshot::load_classifier(&config.classifier)?;
    if env(&config.hmac_key_env).is_none_or(|k| k.is_empty()) {
        tracing::warn!(
            var = %config.hmac_key_env,
            "no HMAC key set; using a random per-process key (audit digests will not correlate across restarts)"
        );
    }
    let digester = crate::snapshot::digester(&config, |k| env(k));
    let sources = Sources::read(&config.policies.dir).map_err(SnapshotError::from)?;
    let snapshot =
        Snapshot::build_from(&config, &sources, &classifier, digester.clone(), |k| env(k))?;
    let value_key = env(&config.hmac_key_env);
    let sealing = crate::audit::keys::sealing(&config.audit, value_key.as_deref(), |k| env(k))?;
    let (audit, writer) = AuditLog::open(
        &config.audit.url,
        Duration::from_millis(config.audit.write_timeout_ms),
        config.audit.queue,
        sealing,
    )
    .await?;
    let local = LocalModel::start(&config.local);
    let state = Arc::new(AppState {
        snapshot: ArcSwap::from_pointee(snapshot),
        audit,
        decider: Decider::new(
            config.detect.concurrency,
            Duration::from_millis(config.detect.timeout_ms),
        ),
        local,
        server: config.server.clone(),
        admin: config.admin.clone(),
    });
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.server.listen,
        source,
    })?;
    let metrics = crate::telemetry::metrics();
    if let Some(handle) = metrics.clone() {
        crate::telemetry::spawn_upkeep(handle);
    }
    let app = crate::api::app(state.clone(), metrics);
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let limits = Limits::from(&config.server);
    let serve = tokio::spawn(async move {
        let cancelled = token.clone();
        let server = serve_connections(listener, app, limits, token);
        // In-flight requests get `grace` to finish after shutdown starts; streams that never
        // end must not hold shutdown forever.
        tokio::select! {
            () = server => Ok(()),
            () = async {
                cancelled.cancelled().await;
                tokio::time::sleep(grace).await;
            } => Ok(()),
        }
    });
    spawn_reloader(
        Reloader::new(config.clone(), classifier, digester, env, sources),
        state.clone(),
        Duration::from_secs(config.policies.reload_secs),
        shutdown.clone(),
    );
    tracing::info!(%addr, "veil listening");
    Ok(Running {
        addr,
        state,
        shutdown,
        serve,
        writer,
    })
}

/// What the accept loop holds slow and numerous clients to.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    max_connections: usize,
}

impl From<&crate::config::ServerConfig> for Limits {
    fn from(c: &crate::config::ServerConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(c.header_timeout_secs),
            max_connections: c.max_connections,
        }
    }
}

/// Serves `app` until `token` is cancelled, then waits for open connections to finish their
/// requests. Unlike `axum::serve`, a client must send a request's head within the header
/// timeout (hyper needs a timer for that), and at most `max_connections` are served at once:
/// more wait in the listen backlog, so a flood of idle connections cannot exhaust memory.
async fn serve_connections<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    token: CancellationToken,
) where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    // HTTP/1 only: detecting HTTP/2's preface would wait for bytes without a deadline, and an
    // OpenAI client speaks HTTP/1.1 to a cleartext proxy. The head's deadline runs from the
    // moment a request may start, so a connection that sends nothing is closed too.
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = token.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = token.cancelled() => break,
        };
        // Streamed chunks are small writes in a row: without TCP_NODELAY, Nagle's algorithm
        // holds each behind the peer's delayed ACK and adds milliseconds to every token.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(
            move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(app.clone(), req)
            },
        ));
        let conn = builder
            .serve_connection(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Hot reload: on SIGHUP, and every `every` when the policy files change — once they have
/// stayed unchanged for the debounce time. A policy that does not compile is logged (file, key,
/// line:column) and counted, and the last good snapshot stays active. Every reload that changes
/// a file, accepted or refused, leaves an audit event per file with both digests.
fn spawn_reloader(
    mut reloader: Reloader,
    state: Arc<AppState>,
    every: Duration,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut settling = false;
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            // Changed files are looked at again after the debounce time, not the full period.
            let wait = if settling {
                reloader.debounce()
            } else if every.is_zero() {
                Duration::from_secs(3600)
            } else {
                every
            };
            let force = tokio::select! {
                () = stop.cancelled() => return,
                () = hangup => true,
                () = tokio::time::sleep(wait) => false,
            };
            if !force && every.is_zero() {
                continue;
            }
            settling = false;
            let (status, reason, changes) = match reloader.check(&state.snapshot, force) {
                Reload::Unchanged => continue,
                Reload::Settling => {
                    settling = true;
                    continue;
                }
                Reload::Swapped(changes) => {
                    tracing::info!(files = changes.len(), "policies reloaded");
                    (
                        "accepted",
                        "the files compiled; the new policies are active".to_owned(),
                        changes,
                    )
                }
                Reload::Rejected(e, changes) => {
                    tracing::error!(error = %e, "policy reload refused; keeping the last good policies");
                    (
                        "refused",
                        format!("{e}; the last good policies stay active"),
                        changes,
                    )
                }
            };
            let changes = if changes.is_empty() && status == "refused" {
                // Nothing to name file by file (the directory itself could not be read).
                vec![FileChange {
                    file: reloader.dir().to_owned(),
                    old_digest: None,
                    new_digest: None,
                }]
            } else {
                changes
            };
            for c in changes {
                let event = EventRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    event: "policy_reload".to_owned(),
                    status: status.to_owned(),
                    file: c.file.display().to_string(),
                    old_digest: c.old_digest,
                    new_digest: c.new_digest,
                    reason: reason.clone(),
                };
                if let Err(e) = state.audit.event(event).await {
                    tracing::error!(error = %e, "policy reload event not recorded yet; the audit writer retries it");
                }
            }
        }
    });
}
