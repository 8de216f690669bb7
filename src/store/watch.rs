//! A node that follows the store (`vxmesh run --store URL --node NAME --vtep IP`).
//!
//! Where it sits: on the node's control side (its tokio runtime), never on the poll thread.
//! [`start`] connects, registers the node (its object, the `managed` marker, and its liveness
//! key under a lease of `--node-ttl`), and reads the state: the node's first cluster.
//! [`follow`] then watches from the revision after it, folds every event into the
//! [`State`], and hands the cluster it means (nodes that are down without endpoints) to the
//! node's one change path, coalescing events that arrive together. [`keep_alive`] keeps the
//! lease alive and registers again when it was lost.
//!
//! Failures: etcd unreachable → the node keeps forwarding with the state it has (fail
//! static), counts it (`store_disconnects`), retries with backoff, and catches up from the
//! last revision it saw (a full read if that revision was compacted). Values it cannot take
//! are skipped, counted and logged; the rest applies.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, EventType, PutOptions, WatchOptions};

use super::etcd::{connect, read_all};
use super::layout::{Key, PREFIX};
use super::state::{Skipped, State};
use super::view::{Delta, View};
use crate::config::Cluster;

/// How a node follows the store.
#[derive(Clone, Debug)]
pub struct StoreOpts {
    /// `etcd://HOST:PORT[,...]`.
    pub url: String,
    /// This node's name.
    pub node: String,
    /// This node's VTEP address.
    pub vtep: Ipv4Addr,
    /// The lease of its liveness key (`--node-ttl`).
    pub ttl: Duration,
}

/// Default `--node-ttl`.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Events arriving within this of each other are applied as one change.
const COALESCE: Duration = Duration::from_millis(5);

/// The store's counters, for `stats`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// The store revision the node's state is at.
    pub revision: AtomicI64,
    /// Times the connection to the store was lost.
    pub disconnects: AtomicU64,
    /// Whether the watch is up now.
    pub connected: AtomicBool,
    /// Changes applied from the store.
    pub changes_applied: AtomicU64,
    /// Changes the node refused (the error is in `last_error`).
    pub changes_refused: AtomicU64,
    /// Objects left out of the current state (bad values, refused by the checks).
    pub skipped: AtomicU64,
    /// Full reads after a compacted revision or a reconnection that could not catch up.
    pub resyncs: AtomicU64,
    /// The last error, for `stats`.
    pub last_error: Mutex<String>,
}

impl StoreStats {
    fn error(&self, e: impl Into<String>) {
        let e = e.into();
        tracing::warn!(error = %e, "store: error");
        if let Ok(mut l) = self.last_error.lock() {
            *l = e;
        }
    }

    /// The counters as (name, value), for `stats`.
    pub fn counters(&self) -> Vec<(&'static str, i64)> {
        let u = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        vec![
            ("store_revision", self.revision.load(Ordering::Relaxed)),
            (
                "store_connected",
                i64::from(self.connected.load(Ordering::Relaxed)),
            ),
            ("store_disconnects", u(&self.disconnects)),
            ("store_resyncs", u(&self.resyncs)),
            ("store_changes_applied", u(&self.changes_applied)),
            ("store_changes_refused", u(&self.changes_refused)),
            ("store_skipped", u(&self.skipped)),
        ]
    }
}

/// What [`start`] set up: the client, the lease, the state read.
pub struct Session {
    /// The client.
    pub client: Client,
    /// The liveness key's lease.
    pub lease: i64,
    /// The state read at start.
    pub state: State,
    /// The node's view of it (the checked cluster, indexed).
    pub view: View,
}

/// The liveness key of `node`.
fn alive_key(node: &str) -> String {
    Key::Alive(node.into()).text()
}

/// Grant a lease and put the node's liveness key under it.
async fn go_live(client: &mut Client, o: &StoreOpts) -> anyhow::Result<i64> {
    let ttl = o.ttl.as_secs().max(1) as i64;
    let lease = client
        .lease_grant(ttl, None)
        .await
        .context("granting the node's lease")?
        .id();
    let value = serde_json::json!({"vtep": o.vtep.to_string()}).to_string();
    client
        .put(
            alive_key(&o.node),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .context("writing the node's liveness key")?;
    Ok(lease)
}

/// Connect, register this node, read the state; the cluster it means for this node.
pub async fn start(o: &StoreOpts, stats: &StoreStats) -> anyhow::Result<(Session, Cluster)> {
    let mut client = connect(&o.url).await?;
    super::admin::register_node(&mut client, &o.url, &o.node, o.vtep).await?;
    client
        .put(Key::Managed(o.node.clone()).text(), "", None)
        .await
        .context("marking the node as one that runs vxmesh")?;
    let lease = go_live(&mut client, o).await?;
    let state = read_all(&mut client).await?;
    let view = View::full(&state, &o.url, Some(&o.node))?;
    note_skipped(stats, &[], &view.skipped);
    stats.revision.store(state.revision, Ordering::Relaxed);
    stats.connected.store(true, Ordering::Relaxed);
    let cluster = view.cluster();
    Ok((
        Session {
            client,
            lease,
            state,
            view,
        },
        cluster,
    ))
}

/// Log the objects newly left out; count them all.
fn note_skipped(stats: &StoreStats, before: &[Skipped], now: &[Skipped]) {
    for s in now.iter().filter(|s| !before.contains(s)) {
        tracing::warn!(key = %s.key, reason = %s.reason, "store: skipped");
    }
    stats.skipped.store(now.len() as u64, Ordering::Relaxed);
}

/// Keep the lease (its id in `lease`) alive; when it is lost (etcd was away longer than the
/// TTL), register again under a new one.
pub async fn keep_alive(mut client: Client, o: StoreOpts, lease: &AtomicI64, stats: &StoreStats) {
    let every = (o.ttl / 3).max(Duration::from_millis(200));
    let mut backoff = FIRST_BACKOFF;
    loop {
        let id = lease.load(Ordering::Relaxed);
        if let Ok((mut keeper, mut stream)) = client.lease_keep_alive(id).await {
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match stream.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    _ => break,
                }
                backoff = FIRST_BACKOFF;
                tokio::time::sleep(every).await;
            }
        }
        // The lease is gone or etcd (or the member) is away: register again once one answers.
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            // The lease may still be alive on the cluster (a member went away, not the
            // quorum): keep it if so, else take a new one.
            let Ok(mut c) = connect(&o.url).await else {
                continue;
            };
            if let Ok(r) = c
                .lease_time_to_live(lease.load(Ordering::Relaxed), None)
                .await
                && r.ttl() > 0
            {
                client = c;
                break;
            }
            client = c;
            match go_live(&mut client, &o).await {
                Ok(l) => {
                    lease.store(l, Ordering::Relaxed);
                    tracing::info!(node = %o.node, "store: node registered again");
                    break;
                }
                Err(e) => stats.error(format!("keeping the node alive: {e:#}")),
            }
        }
    }
}

/// What the follower hands each new view to: the node's change path, with the [`Delta`] that
/// led to it from the last view handed over when the change was incremental (`None`: take the
/// view whole). Returns an error message if the node refused it.
pub type Apply<'a> = dyn FnMut(
        &View,
        Option<&Delta>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + 'a>>
    + 'a;

/// What the follower keeps between changes: the state, the view of it the node was handed,
/// and the keys changed since.
struct Followed {
    state: State,
    view: View,
    touched: Vec<Key>,
    /// The objects left out as last logged (a new one is logged once).
    noted: Vec<Skipped>,
    /// The next change is checked whole (the last one was refused, or the state was read
    /// again): the view no longer follows from the keys touched.
    whole: bool,
}

/// Follow the store from `state` (and `view`, the node's view of it) forever: watch, fold
/// events in, apply.
pub async fn follow(
    mut client: Client,
    state: State,
    view: View,
    o: StoreOpts,
    stats: &StoreStats,
    apply: &mut Apply<'_>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut f = Followed {
        state,
        noted: view.skipped.clone(),
        view,
        touched: Vec::new(),
        whole: false,
    };
    let mut resync = false;
    let (mut failing, mut retry) = (false, FIRST_BACKOFF);
    loop {
        if resync {
            match read_all(&mut client).await {
                Ok(s) => {
                    f.state = s;
                    f.whole = true;
                    stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    resync = false;
                    failing = !apply_state(&mut f, &o, stats, apply).await;
                }
                Err(e) => {
                    stats.error(format!("{e:#}"));
                    lost(stats, &mut backoff).await;
                    continue;
                }
            }
        }
        if !stats.connected.load(Ordering::Relaxed) {
            // After a loss: to whichever member answers now.
            match connect(&o.url).await {
                Ok(c) => client = c,
                Err(e) => {
                    stats.error(format!("{e:#}"));
                    lost(stats, &mut backoff).await;
                    continue;
                }
            }
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(f.state.revision + 1);
        // The watcher is the request half of the watch: kept while the stream is read (some
        // servers end a watch whose request stream closed).
        let (_watcher, mut stream) = match client.watch(PREFIX, Some(opts)).await {
            Ok(w) => w,
            Err(e) => {
                stats.error(format!("watching: {e}"));
                lost(stats, &mut backoff).await;
                continue;
            }
        };
        stats.connected.store(true, Ordering::Relaxed);
        let mut dirty = false;
        loop {
            tokio::select! {
                biased;
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            stats.error("the watch ended");
                            break;
                        }
                        Err(e) => {
                            stats.error(format!("the watch broke: {e}"));
                            break;
                        }
                    };
                    if resp.compact_revision() > 0 {
                        // Behind the compaction: only a full read catches up.
                        resync = true;
                        break;
                    }
                    if resp.canceled() {
                        stats.error(format!("the watch was cancelled: {}", resp.cancel_reason()));
                        break;
                    }
                    let down_before = f.state.down();
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key());
                        match ev.event_type() {
                            EventType::Put => {
                                f.state
                                    .put_kv(&key, kv.value(), kv.mod_revision(), kv.create_revision())
                            }
                            EventType::Delete => f.state.delete(&key),
                        }
                        // A key outside the layout is only listed as skipped: no check sees it.
                        f.touched.extend(Key::parse(&key));
                        f.state.revision = f.state.revision.max(kv.mod_revision());
                        dirty = true;
                    }
                    // Other nodes going down or coming back (their lease), one event each.
                    let down_after = f.state.down();
                    for n in down_after.difference(&down_before).filter(|n| **n != o.node) {
                        tracing::warn!(node = %n, "store: node down (its lease expired)");
                    }
                    for n in down_before.difference(&down_after).filter(|n| **n != o.node) {
                        tracing::info!(node = %n, "store: node up again");
                    }
                    // Only the events move the revision a watch resumes from: a catch-up batch's
                    // header may already carry a later revision whose events are still coming.
                    stats.revision.store(f.state.revision, Ordering::Relaxed);
                    backoff = FIRST_BACKOFF;
                }
                _ = tokio::time::sleep(COALESCE), if dirty => {
                    dirty = false;
                    failing = !apply_state(&mut f, &o, stats, apply).await;
                    retry = FIRST_BACKOFF;
                }
                // A change the node refused (an interface not there yet, a bind refused) is
                // tried again, with backoff, until it applies or the store changes.
                _ = tokio::time::sleep(retry), if failing && !dirty => {
                    failing = !apply_state(&mut f, &o, stats, apply).await;
                    retry = (retry * 2).min(MAX_BACKOFF);
                }
            }
        }
        if dirty {
            failing = !apply_state(&mut f, &o, stats, apply).await;
        }
        if !resync {
            lost(stats, &mut backoff).await;
        }
    }
}

/// The watch broke: count it, wait a growing while.
async fn lost(stats: &StoreStats, backoff: &mut Duration) {
    if stats.connected.swap(false, Ordering::Relaxed) {
        stats.disconnects.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("store: connection lost; forwarding with the last state, retrying");
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// Move the node's view forward by the keys touched (incrementally when it can: see
/// `store::view`, else the whole state checked off this task) and hand it to the node;
/// whether it applied.
async fn apply_state(
    f: &mut Followed,
    o: &StoreOpts,
    stats: &StoreStats,
    apply: &mut Apply<'_>,
) -> bool {
    let touched = std::mem::take(&mut f.touched);
    let delta = match f.whole {
        true => None,
        false => f.view.apply(&f.state, &touched),
    };
    if delta.is_none() {
        // O(1): the state's maps are persistent.
        let (snapshot, url, me) = (f.state.clone(), o.url.clone(), o.node.clone());
        let checked =
            tokio::task::spawn_blocking(move || View::full(&snapshot, &url, Some(&me))).await;
        match checked {
            Ok(Ok(v)) => f.view = v,
            Ok(Err(e)) => {
                f.whole = true;
                stats.changes_refused.fetch_add(1, Ordering::Relaxed);
                stats.error(format!("the store's state is refused: {e}"));
                return false;
            }
            Err(e) => {
                f.whole = true;
                stats.error(format!("planning: {e}"));
                return false;
            }
        }
    }
    note_skipped(stats, &f.noted, &f.view.skipped);
    f.noted.clone_from(&f.view.skipped);
    // A refused change leaves the node behind the view: the next one goes whole.
    f.whole = true;
    match apply(&f.view, delta.as_ref()).await {
        Ok(_) => {
            f.whole = false;
            stats.changes_applied.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            stats.changes_refused.fetch_add(1, Ordering::Relaxed);
            stats.error(format!("change refused: {e}"));
            false
        }
    }
}

/// How long a stopping node waits for the store to take its liveness key away: a local etcd
/// answers in milliseconds, and a node must stop within a second (SPEC) even when the store
/// does not answer at all; then the lease runs out by itself (`--node-ttl`).
pub const LEAVE_WAIT: Duration = Duration::from_millis(300);

/// Take the node's liveness key away at once (a clean stop: the others need not wait for the
/// lease to expire). Best effort, at most [`LEAVE_WAIT`].
pub async fn leave(client: &mut Client, lease: i64) {
    let _ = tokio::time::timeout(LEAVE_WAIT, client.lease_revoke(lease)).await;
}
