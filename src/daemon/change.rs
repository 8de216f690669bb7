//! Changing a running node's desired state: [`change_to`] takes a cluster from the file or the
//! store, adds the CNI attachments and applies it; [`apply`] prepares the change off the poll
//! thread and commits it a bounded step per job between batches, so a change of any size never
//! pauses forwarding long. Control plane: the one change path every reload, store update and CNI
//! call goes through, under the change lock.

use anyhow::Context;

use super::Handle;
use crate::config::Cluster;
use crate::node::{Change, STEP_ENTRIES, SystemPorts};

/// Make `cluster` (a cluster file's or the store's) the node's desired state, with the node's
/// CNI attachments added ([`crate::cni::Local::desired`]). One change at a time. Returns what changed,
/// or the message of a refusal.
pub(super) async fn change_to(
    h: &Handle,
    cluster: Cluster,
) -> anyhow::Result<Result<String, String>> {
    let mut local = h.changes.lock().await;
    let desired = match local.desired(&cluster) {
        Ok(d) => d,
        // A store is the cluster's truth: what it says applies, and an attachment that no
        // longer fits it is left out (said, not hidden) rather than the store refused forever.
        Err(_) if h.store.is_some() => {
            let (d, left_out) = local.desired_lenient(&cluster);
            for why in left_out {
                tracing::warn!(reason = %why, "store: attachment left out");
            }
            d
        }
        Err(e) => {
            let e = format!("{}: refused: {e}", cluster.path.display());
            tracing::warn!(reason = %e, "change refused");
            return Ok(Err(e));
        }
    };
    let source = cluster.path.display().to_string();
    let r = apply(h, desired).await?;
    // One event per line of what changed (ports opened and closed among them), or the refusal.
    match &r {
        Ok(text) => {
            for line in text.lines() {
                tracing::info!(source, change = line, "change applied");
            }
        }
        Err(e) => tracing::warn!(source, reason = %e, "change refused"),
    }
    if r.is_ok() {
        local.applied(&cluster);
        local.source = cluster;
    }
    Ok(r)
}

/// Apply a whole desired state, the change lock held: prepared off the poll thread (the plan,
/// the tables, the new ports), committed a bounded step per job (the poll thread forwards a
/// round of batches between two steps, so a change of any size never pauses it long), and what
/// it took out closed off the poll thread.
pub(super) async fn apply(h: &Handle, cluster: Cluster) -> anyhow::Result<Result<String, String>> {
    let (base, buf_size) = h.call(|n| (n.plan.clone(), n.sw.buf_size())).await?;
    let prepared = tokio::task::spawn_blocking(move || {
        Change::prepare(cluster, base, &mut SystemPorts, buf_size).map_err(|e| format!("{e:#}"))
    })
    .await
    .context("preparing the change")?;
    let change = match prepared {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut c = h.call(move |n| n.begin(change)).await?;
    loop {
        let (back, done) = h
            .call(move |n| {
                let done = n.step(&mut c, STEP_ENTRIES);
                (c, done)
            })
            .await?;
        c = back;
        if done {
            break;
        }
    }
    let (r, left) = c.finish();
    // Ports close (XDP detached, TAPs removed) off the poll thread.
    let _ = tokio::task::spawn_blocking(move || drop(left)).await;
    Ok(r.map_err(|e| format!("{e:#}")))
}
