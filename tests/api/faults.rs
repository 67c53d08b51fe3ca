//! Storage faults for real: the audit database on a small tmpfs that fills up. Nothing goes
//! upstream without its decision committed, and the log recovers by itself once space is back.
//! An immutable `-shm` file fails closed too. Needs `mount -t tmpfs` and `chattr` (root), as on
//! the development machines and in CI.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

async fn send(veil: &Veil, i: usize) -> (u16, String) {
    let body = user(&format!("note {i}: {}", "lorem ipsum ".repeat(40)));
    let resp = veil.chat(KEY_DEFAULT, body).await;
    let status = resp.status().as_u16();
    let id = resp.headers()["x-veil-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = resp.bytes().await;
    (status, id)
}

#[tokio::test]
async fn a_full_disk_never_lets_an_unrecorded_request_out_and_the_log_recovers() {
    let fs = Tmpfs::mount("2m");
    let db: PathBuf = fs.path().join("audit.db");
    let url = format!("sqlite://{}", db.display());
    let veil = Veil::start_with(|c| {
        c.audit.url = url.clone();
        c.audit.write_timeout_ms = 1000;
    })
    .await;
    // Fill the disk with traffic, 16 requests at a time, and keep it coming for a while after
    // the log starts refusing: a failed commit must not leave the writer reporting success for
    // rows that never land.
    let mut results = Vec::new();
    let mut full_rounds = 0;
    for round in 0..60 {
        let batch = futures::future::join_all((0..16).map(|j| send(&veil, round * 16 + j))).await;
        if batch.iter().any(|(s, _)| *s == 503) {
            full_rounds += 1;
        }
        results.extend(batch);
        if full_rounds >= 8 {
            break;
        }
    }
    let forwarded: Vec<&String> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, id)| id)
        .collect();
    assert!(
        results.iter().any(|(s, _)| *s == 503),
        "the disk never filled up"
    );
    assert!(!forwarded.is_empty());
    assert_eq!(veil.readyz().await["audit"], "unavailable");
    // Every request that reached the cloud had its decision committed first; the refused ones
    // did not reach it.
    assert_eq!(veil.mock.hits(), forwarded.len());

    // Space comes back: the writer recovers by itself, with no new request.
    fs.resize("64m");
    let mut ready = Value::Null;
    for _ in 0..100 {
        ready = veil.readyz().await;
        if ready["audit"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready["audit"], "ok", "{ready}");
    let (status, _) = send(&veil, 10_000).await;
    assert_eq!(status, 200);

    // Every request, forwarded or refused, has exactly one decision and one outcome, and the
    // chain verifies.
    let rows = veil.wait_rows(2 * (results.len() + 1)).await;
    let decided: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.kind == "decision")
        .map(|r| r.request_id.as_str())
        .collect();
    let ended: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.kind == "outcome")
        .map(|r| r.request_id.as_str())
        .collect();
    for (status, id) in &results {
        assert!(decided.contains(id.as_str()), "{status} {id}: no decision");
        assert!(ended.contains(id.as_str()), "{status} {id}: no outcome");
    }
    assert_eq!(rows.len(), 2 * (results.len() + 1));
    assert!(veil::audit::verify(&rows).is_empty());
    veil.stop().await;
}

/// A file made immutable (`chattr +i`) for one test, made mutable again when dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Self {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .expect("chattr runs");
        assert!(
            out.status.success(),
            "this test makes a file immutable (needs root and chattr): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).output();
    }
}

/// SQLite dies of SIGBUS when a new connection maps a `-shm` file it cannot write (measured with
/// the release binary: `chattr +i audit.db-shm`, one request, "Bus error"). veil must fail closed
/// instead — 503, nothing upstream, not ready — and recover when the file is writable again.
#[tokio::test]
async fn an_immutable_shm_file_fails_closed_instead_of_crashing() {
    let veil = Veil::start_with(|c| c.audit.write_timeout_ms = 1000).await;
    let shm = PathBuf::from(format!("{}-shm", veil.db.display()));
    assert!(shm.exists(), "the server has the database open in WAL mode");
    let guard = Immutable::set(&shm);
    // The writer's connection is opened on the first write: this one.
    let resp = veil.chat(KEY_DEFAULT, user("hello there")).await;
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "audit_unavailable");
    assert_eq!(
        veil.mock.hits(),
        0,
        "nothing leaves without a durable decision"
    );
    let ready = veil.client.get(veil.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    drop(guard);
    assert!(
        veil.wait_ready().await,
        "recovers once the file is writable again"
    );
    assert_eq!(
        veil.chat(KEY_DEFAULT, user("hello again")).await.status(),
        200
    );
    assert_eq!(veil.mock.hits(), 1);
    let rows = veil.wait_rows(4).await;
    assert_eq!(
        rows.len(),
        4,
        "the refused request's decision and outcome were written later"
    );
    assert!(veil::audit::verify(&rows).is_empty());
}
