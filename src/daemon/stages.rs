//! `vxmesh capture --stages -w FILE.pcapng` on the node's side: arm the tracer (the one a
//! `trace` uses; one at a time) with snapshots on for `count` packets matching the filter,
//! drain its records every [`COLLECT_EVERY`], and write them as pcapng (`crate::pcapng`: one
//! interface per step, the decision in each packet's comment) on a thread of its own. The
//! snapshots are taken in the packet path, only for the marked packets (`vswitch::trace`).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use vswitch::Time;
use vswitch::trace::{TraceFilter, TraceRecord};

use super::session::Replies;
use super::{COLLECT_EVERY, EXIT_FAILURE, EXIT_USAGE, Handle, Reply};
use crate::pcapng::StageWriter;
use crate::{control, show};

/// Packets a `capture --stages` follows when `--count` is not given.
pub const DEFAULT_STAGE_PACKETS: u32 = 100;
/// Records waiting for the writer; beyond it they are counted as missed.
const BACKLOG: usize = 4096;

/// A record with its decision as `trace` prints it.
type Rec = (String, TraceRecord);

/// Serve `capture --stages`: `count` packets matching `filter` into `file` (as `peer`).
pub(super) async fn capture_stages(
    file: PathBuf,
    count: Option<u64>,
    filter: Option<String>,
    peer: &control::Peer,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    let filter_text = filter.clone();
    let filter = match TraceFilter::parse(filter.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(e) => {
            rep.send(&Reply::Err(format!("capture --stages: {e}")))
                .await?;
            return Ok(EXIT_USAGE);
        }
    };
    let count = count.map_or(DEFAULT_STAGE_PACKETS, |c| {
        u32::try_from(c).unwrap_or(u32::MAX)
    });
    let Some(f) = super::capture::create_file(&file, peer, rep, Ok).await? else {
        return Ok(EXIT_FAILURE);
    };
    // Every worker's tracer (`vxmesh run --workers`): a packet is followed on whichever
    // worker processes it, its records in time order.
    let busy = h.call_all(|n| n.sw.env.tracer.armed()).await?;
    let armed = if busy.contains(&true) {
        None
    } else {
        let t = (Time::monotonic(), SystemTime::now());
        h.call_all(move |n| {
            n.sw.env.tracer.drain();
            n.sw.env.tracer.set_snapshots(true);
            n.sw.env.tracer.arm(count, filter.clone());
        })
        .await?;
        Some(t)
    };
    let Some((mono0, wall0)) = armed else {
        let _ = std::fs::remove_file(&file);
        rep.send(&Reply::Err(
            "capture --stages: a trace is running on this node (they share the tracer); one at a time"
                .into(),
        ))
        .await?;
        return Ok(EXIT_USAGE);
    };
    // Like tcpdump's "listening on": the tracer is armed from here on.
    rep.send(&Reply::Err(format!(
        "capture: following {count} packet(s){} through every stage into {}",
        filter_text
            .as_deref()
            .map(|f| format!(" matching {f:?}"))
            .unwrap_or_default(),
        file.display()
    )))
    .await?;
    let wall0 = wall0
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let (tx, rx) = mpsc::sync_channel::<Rec>(BACKLOG);
    let writer = std::thread::Builder::new()
        .name("vxmesh-stages".into())
        .spawn(move || -> anyhow::Result<u64> {
            let mut w = StageWriter::new(std::io::BufWriter::new(f))?;
            for (decision, r) in rx {
                let t = wall0 + r.time_ns.saturating_sub(mono0.0);
                w.record(r.stage, t, &r, &decision)?;
            }
            let n = w.written();
            w.finish()?;
            Ok(n)
        })
        .context("starting the capture's writer")?;
    let mut missed = 0u64;
    let collected: anyhow::Result<()> = async {
        loop {
            tokio::time::sleep(COLLECT_EVERY).await;
            let all = h
                .call_all(|n| {
                    let recs: Vec<Rec> =
                        n.sw.env
                            .tracer
                            .drain()
                            .into_iter()
                            .map(|r| (show::decision(&n.sw, &r), r))
                            .collect();
                    (recs, n.sw.env.tracer.remaining())
                })
                .await?;
            let mut recs = Vec::new();
            let mut remaining = 0;
            for (r, left) in all {
                recs.extend(r);
                remaining += left;
            }
            recs.sort_by_key(|(_, r)| r.time_ns);
            let done = remaining == 0 && recs.is_empty();
            for r in recs {
                match tx.try_send(r) {
                    Ok(()) => {}
                    Err(mpsc::TrySendError::Full(_)) => missed += 1,
                    Err(mpsc::TrySendError::Disconnected(_)) => return Ok(()),
                }
            }
            // An empty progress line each round: a client gone (Ctrl-C) ends the capture.
            if done || rep.out("").await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    h.call_all(|n| {
        n.sw.env.tracer.disarm();
        n.sw.env.tracer.set_snapshots(false);
        n.sw.env.tracer.drain();
    })
    .await?;
    collected?;
    drop(tx);
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("the capture's writer")?
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the capture's writer panicked")));
    let written = written.map_err(|e| format!("{e:#}"));
    Ok(super::capture::report(rep, &file, written, "stage records", missed).await)
}
