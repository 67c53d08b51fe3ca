//! The server on a PostgreSQL audit database: the same guarantees as on SQLite — a blocked
//! request never leaves, every request leaves one decision and one outcome in a verified keyed
//! chain — and a PostgreSQL that goes down (the test cuts a TCP relay to it) fails closed with
//! zero egress, then the writer recovers by itself when it is back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::helpers::*;

/// A fresh database on the test PostgreSQL server (`VEIL_TEST_POSTGRES_URL`, else the local one);
/// dropped at the end. Never skipped: without a server the test fails.
struct PgDatabase {
    admin: String,
    name: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let admin = std::env::var("VEIL_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("veil_api_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        Self { admin, name }
    }

    /// The database's URL through `via` (host:port) instead of the server's own address.
    fn url_via(&self, via: SocketAddr) -> String {
        let scheme_user = self.admin.split_once('@').unwrap().0;
        format!("{scheme_user}@{via}/{}", self.name)
    }

    fn server(&self) -> SocketAddr {
        let rest = self.admin.split_once('@').unwrap().1;
        let host = rest.split_once('/').unwrap().0;
        host.parse().unwrap()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A TCP relay to PostgreSQL that can be cut (listener closed, every connection dropped) and
/// restored on the same port: PostgreSQL going down and coming back, as veil sees it.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Self {
            addr: listener.local_addr().unwrap(),
            target,
            tasks: Arc::default(),
        };
        relay.serve(listener).await;
        relay
    }

    async fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(target).await else {
                    continue;
                };
                let pipe = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                tasks.lock().await.push(pipe);
            }
        });
        self.tasks.lock().await.push(accept);
    }

    async fn cut(&self) {
        for t in self.tasks.lock().await.drain(..) {
            t.abort();
        }
        // Let the aborted tasks drop their sockets (and the listener its port).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener).await;
    }
}

#[tokio::test]
async fn a_postgres_audit_log_records_every_request_and_fails_closed_while_down() {
    let db = PgDatabase::create().await;
    let relay = Relay::start(db.server()).await;
    let url = db.url_via(relay.addr);
    let veil = Veil::start_with(|c| {
        let dir = veil_dir(c);
        c.audit.url = url.clone();
        // PostgreSQL has no directory for default key files: they are named.
        c.audit.chain_key_file = Some(dir.join("chain.key"));
        c.audit.signing_key_file = Some(dir.join("signing.key"));
        c.audit.public_key_file = Some(dir.join("signing.pub"));
        c.audit.checkpoint_file = Some(dir.join("checkpoints.jsonl"));
        c.audit.write_timeout_ms = 1000;
    })
    .await;

    let blocked = veil
        .chat(KEY_DEFAULT, user("card 4111 1111 1111 1111 please"))
        .await;
    assert_eq!(blocked.status(), 403);
    let allowed = veil.chat(KEY_DEFAULT, user("hello there")).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(veil.mock.hits(), 1, "the blocked request never left");

    // PostgreSQL goes away: nothing leaves, the client gets 503, /readyz says so.
    relay.cut().await;
    let resp = veil.chat(KEY_DEFAULT, user("hello while down")).await;
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "audit_unavailable");
    assert_eq!(
        veil.mock.hits(),
        1,
        "nothing leaves without a durable decision"
    );
    let ready = veil.client.get(veil.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    // Back: the writer recovers without traffic, and the refused request is on record.
    relay.restore().await;
    assert!(
        veil.wait_ready().await,
        "/readyz recovers once PostgreSQL is back"
    );
    let resp = veil.chat(KEY_DEFAULT, user("hello again")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(veil.mock.hits(), 2);

    let rows = veil.wait_rows(8).await;
    assert_eq!(rows.len(), 8, "4 requests, a decision and an outcome each");
    let outcomes: Vec<_> = rows.iter().filter_map(|r| r.outcome.clone()).collect();
    assert_eq!(
        outcomes,
        ["blocked", "completed", "audit_unavailable", "completed"]
    );
    let v = veil
        .running
        .as_ref()
        .unwrap()
        .state
        .audit
        .verify(None, None)
        .await
        .unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert!(v.macs_checked);
    veil.stop().await;
}

/// Starts a server on `url` with a shared chain key file and its own signing key.
async fn instance(url: &str, chain_key: &std::path::Path) -> Veil {
    let (url, chain_key) = (url.to_owned(), chain_key.to_owned());
    Veil::start_with(move |c| {
        let dir = veil_dir(c);
        c.audit.url = url;
        c.audit.chain_key_file = Some(chain_key);
        c.audit.signing_key_file = Some(dir.join("signing.key"));
        c.audit.public_key_file = Some(dir.join("signing.pub"));
        c.audit.checkpoint_file = Some(dir.join("checkpoints.jsonl"));
        c.audit.checkpoint_rows = 7;
    })
    .await
}

/// Two veil servers behind a (notional) load balancer share one PostgreSQL trail: requests to
/// both at once extend one chain that verifies with both signers' keys, and the auditors' query
/// and stats see every request.
#[tokio::test]
async fn two_instances_share_one_verified_postgres_trail() {
    let db = PgDatabase::create().await;
    let url = db.url_via(db.server());
    let keys = tempfile::tempdir().unwrap();
    let chain_key = keys.path().join("chain.key");
    std::fs::write(&chain_key, "a-chain-key-shared-by-both-instances\n").unwrap();
    let a = instance(&url, &chain_key).await;
    let b = instance(&url, &chain_key).await;
    async fn send(veil: &Veil, i: usize) -> reqwest::Response {
        let text = if i.is_multiple_of(4) {
            "card 4111 1111 1111 1111".to_owned()
        } else {
            format!("hello number {i}")
        };
        veil.chat(KEY_DEFAULT, user(&text)).await
    }
    let mut statuses = Vec::new();
    for round in 0..10 {
        let (ra, rb) = tokio::join!(send(&a, 2 * round), send(&b, 2 * round + 1));
        statuses.push(ra.status().as_u16());
        statuses.push(rb.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 5);
    assert_eq!(
        a.mock.hits() + b.mock.hits(),
        15,
        "blocked requests never left"
    );

    let audit = &a.running.as_ref().unwrap().state.audit;
    let stats = audit.stats(&veil::audit::Query::default()).await.unwrap();
    assert_eq!(stats.requests, 20);
    assert_eq!(stats.by_action.get("block"), Some(&5));
    let blocked = audit
        .query(&veil::audit::Query {
            action: Some("block".into()),
            entity: Some("CREDIT_CARD".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(blocked.len(), 5);
    assert!(blocked.iter().all(|r| r.status == Some(403)));

    let (a_dir, b_dir) = (a.dir.path().to_owned(), b.dir.path().to_owned());
    let (a_running, b_running) = (a.running, b.running);
    a_running.unwrap().shutdown().await;
    b_running.unwrap().shutdown().await;
    let both = keys.path().join("both.pub");
    std::fs::write(
        &both,
        [a_dir.join("signing.pub"), b_dir.join("signing.pub")]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect::<String>(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .args([
            "--config",
            "/nonexistent/veil.toml",
            "audit",
            "verify",
            "--json",
            "--db",
            &url,
        ])
        .arg("--checkpoints")
        .arg(a_dir.join("checkpoints.jsonl"))
        .arg("--checkpoints")
        .arg(b_dir.join("checkpoints.jsonl"))
        .arg("--public-key")
        .arg(&both)
        .env(
            "VEIL_AUDIT_CHAIN_KEY",
            "a-chain-key-shared-by-both-instances",
        )
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    assert_eq!(doc["rows"], 40);
    assert_eq!(doc["macs_checked"], true);
    assert!(doc["checkpoints_matched"].as_u64().unwrap() >= 4, "{doc:#}");
}

/// The temporary directory a test config points at (beside its SQLite URL).
fn veil_dir(c: &veil::config::Config) -> std::path::PathBuf {
    let path = c.audit.url.strip_prefix("sqlite://").unwrap();
    std::path::Path::new(path).parent().unwrap().to_owned()
}
