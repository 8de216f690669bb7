//! Changing a running node's desired state: [`change_to`] takes a cluster from the file or the
//! store, adds the CNI attachments and applies it; [`apply`] prepares the change off the poll
//! thread and commits it a bounded step per job between batches, so a change of any size never
//! pauses forwarding long. Control plane: the one change path every reload, store update and CNI
//! call goes through, under the change lock.

use anyhow::Context;

use super::Handle;
use crate::config::Cluster;
use crate::node::workers::{WorkerPorts, set_steer, steer_map};
use crate::node::{Change, STEP_ENTRIES};

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
    // Each worker's plan in force (equal, but each change is checked against its own).
    let bases = h.call_all(|n| (n.plan.clone(), n.sw.buf_size())).await?;
    let mesh = h.mesh.clone();
    let mut system = h.ports;
    let old_ports: Vec<String> = bases[0].0.ports.iter().map(|p| p.name.clone()).collect();
    // One change per worker, each opening the ports that worker owns (a stand-in elsewhere);
    // if any cannot be prepared, none is applied (the prepared ones close their ports).
    let prepared = tokio::task::spawn_blocking(move || -> Result<Vec<Change>, String> {
        bases
            .into_iter()
            .enumerate()
            .map(|(me, (base, buf_size))| {
                let c = match &mesh {
                    None => Change::prepare(cluster.clone(), base, &mut system, buf_size),
                    Some(m) => Change::prepare(
                        cluster.clone(),
                        base,
                        &mut WorkerPorts {
                            inner: &mut system,
                            mesh: m.clone(),
                            me,
                        },
                        buf_size,
                    ),
                };
                c.map_err(|e| format!("{e:#}"))
            })
            .collect()
    })
    .await
    .context("preparing the change")?;
    let changes = match prepared {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    // Worker 0 first. The workers hold the same tables, so a change worker 0 takes every
    // worker takes; one it refuses (whole, nothing applied) is refused on none of the others.
    let mut first: Option<Result<String, String>> = None;
    let (mut unused, mut lefts) = (Vec::new(), Vec::new());
    for (k, change) in changes.into_iter().enumerate() {
        if matches!(first, Some(Err(_))) {
            unused.push(change);
            continue;
        }
        let (r, left) = commit_on(h, k, change).await?;
        lefts.push(left);
        match (&first, r) {
            (None, r) => first = Some(r),
            (Some(Ok(_)), Err(e)) => {
                // Not expected (same tables); said loudly, since the workers now differ.
                tracing::error!(worker = k, reason = %e, "a change worker 0 applied was refused on another worker");
                first = Some(Err(format!("worker {k}: {e}")));
            }
            _ => {}
        }
    }
    let r = first.unwrap_or_else(|| Ok(String::new()));
    if let (Some(m), Ok(_)) = (&h.mesh, &r) {
        // The rings of the ports every worker has dropped.
        let now: Vec<String> = h
            .call(|n| n.plan.ports.iter().map(|p| p.name.clone()).collect())
            .await?;
        for gone in old_ports.iter().filter(|p| !now.contains(p)) {
            m.forget(gone);
        }
    }
    // Ports close (XDP detached, TAPs removed) off the poll thread.
    let _ = tokio::task::spawn_blocking(move || drop((unused, lefts))).await;
    Ok(r)
}

/// Commit `change` on worker `k`, a bounded step per job; with more than one worker the
/// steering map follows the new plan in the job of the last step.
async fn commit_on(
    h: &Handle,
    k: usize,
    change: Change,
) -> anyhow::Result<(Result<String, String>, crate::node::Leftovers)> {
    let workers = h.workers.len();
    let mut c = h.call_on(k, move |n| n.begin(change)).await?;
    loop {
        let (back, done) = h
            .call_on(k, move |n| {
                let done = n.step(&mut c, STEP_ENTRIES);
                if done && workers > 1 {
                    let map = std::sync::Arc::new(steer_map(&n.plan, workers));
                    set_steer(n, &map);
                }
                (c, done)
            })
            .await?;
        c = back;
        if done {
            break;
        }
    }
    let (r, left) = c.finish();
    Ok((r.map_err(|e| format!("{e:#}")), left))
}
