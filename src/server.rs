//! Startup and shutdown: builds the state from configuration, serves, drains on a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::future::IntoFuture;

use arc_swap::ArcSwap;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, ValueDigester, WriterTask};
use crate::config::Config;
use crate::pipeline::AppState;
use crate::route::local::LocalModel;
use crate::scan::Scanner;
use crate::snapshot::{Env, Reload, Reloader, Snapshot};

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
    /// Stops accepting, waits for in-flight requests, then flushes the audit log.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.serve.await;
        drop(self.state);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.writer).await;
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
    let snapshot = Snapshot::build(&config, &classifier, |k| env(k))?;
    let (audit, writer) = AuditLog::open(
        &config.audit.url,
        Duration::from_millis(config.audit.write_timeout_ms),
        config.audit.queue,
    )
    .await?;
    let digester = match env(&config.hmac_key_env).filter(|k| !k.is_empty()) {
        Some(key) => ValueDigester::new(key.as_bytes()),
        None => {
            tracing::warn!(
                var = %config.hmac_key_env,
                "no HMAC key set; using a random per-process key (audit digests will not correlate across restarts)"
            );
            let key: [u8; 32] = rand::random();
            ValueDigester::new(&key)
        }
    };
    let local = LocalModel::start(&config.local);
    let state = Arc::new(AppState {
        snapshot: ArcSwap::from_pointee(snapshot),
        audit,
        scanner: Scanner::new(
            config.detect.concurrency,
            Duration::from_millis(config.detect.timeout_ms),
        ),
        local,
        digester,
        server: config.server.clone(),
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
    let app = crate::api::app(state.clone(), crate::telemetry::metrics());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let serve = tokio::spawn(async move {
        let cancelled = token.clone();
        // Streamed chunks are small writes in a row: without TCP_NODELAY, Nagle's algorithm
        // holds each behind the peer's delayed ACK and adds milliseconds to every token.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
        });
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await });
        // In-flight requests get `grace` to finish after shutdown starts; streams that never
        // end must not hold shutdown forever.
        tokio::select! {
            r = server.into_future() => r,
            () = async {
                cancelled.cancelled().await;
                tokio::time::sleep(grace).await;
            } => Ok(()),
        }
    });
    spawn_reloader(
        Reloader::new(config.clone(), classifier, env),
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

/// Hot reload: on SIGHUP, and every `every` when the policy files change. A policy that does not
/// compile is logged (file, key, line:column) and counted; the last good snapshot stays active.
fn spawn_reloader(
    mut reloader: Reloader,
    state: Arc<AppState>,
    every: Duration,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(if every.is_zero() {
            Duration::from_secs(3600)
        } else {
            every
        });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
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
            let force = tokio::select! {
                () = stop.cancelled() => return,
                () = hangup => true,
                _ = tick.tick() => false,
            };
            if !force && every.is_zero() {
                continue;
            }
            match reloader.check(&state.snapshot, force) {
                Reload::Unchanged => {}
                Reload::Swapped => tracing::info!("policies reloaded"),
                Reload::Rejected(e) => {
                    tracing::error!(error = %e, "policy reload rejected; keeping the last good policies")
                }
            }
        }
    });
}
