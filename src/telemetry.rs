//! Logs and metrics. Logs carry request ids, actions, counts and codes — never text.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Initializes structured logging (`RUST_LOG` filter; `VEIL_LOG_FORMAT=json` for JSON lines).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("VEIL_LOG_FORMAT").is_ok_and(|v| v == "json");
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// How often histogram samples are folded into their summaries when nobody scrapes `/metrics`.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their summaries every few seconds. The recorder keeps
/// every sample until a scrape or an upkeep drains it: without this, a server nobody scrapes
/// grew by about 90 bytes a request (measured: 235 -> 283 MB over 10 minutes at 1,000 rps).
/// Must run inside the server's runtime.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|_| handle)
        })
        .clone()
}
