//! `vxmesh trace` on the node's side: arm the switch's tracer (one trace at a time), collect
//! what it recorded every [`COLLECT_EVERY`] until the packets are seen or [`TRACE_WAIT`] passes,
//! and stream the rendering to the client. The recording happens in the packet path (the tracer
//! in `vswitch`); this is its control side. With several workers (`vxmesh run --workers`) every
//! worker's tracer is armed and collected, so a packet is traced on whichever worker
//! processes it; the trace ends when `count` packets were seen in all.

use std::time::Duration;

use vswitch::trace::TraceFilter;

use super::session::Replies;
use super::{COLLECT_EVERY, EXIT_OK, EXIT_USAGE, Handle, Reply};
use crate::show;

/// Longest a `trace` waits for its packets.
pub const TRACE_WAIT: Duration = Duration::from_secs(30);

/// Serve a `trace` request: at most `count` packets matching `filter`.
pub(super) async fn trace(
    count: u32,
    filter: Option<String>,
    json: bool,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    let filter = match TraceFilter::parse(filter.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(e) => {
            rep.send(&Reply::Err(format!("trace: {e}"))).await?;
            return Ok(EXIT_USAGE);
        }
    };
    let busy = h.call_all(|n| n.sw.env.tracer.armed()).await?;
    if !busy.contains(&true) {
        h.call_all(move |n| {
            n.sw.env.tracer.drain();
            n.sw.env.tracer.arm(count, filter.clone());
        })
        .await?;
    } else {
        rep.send(&Reply::Err(
            "trace: another trace is running on this node; one at a time".into(),
        ))
        .await?;
        return Ok(EXIT_USAGE);
    }
    let deadline = tokio::time::Instant::now() + TRACE_WAIT;
    let mut seen = 0u32;
    let mut ids = std::collections::HashSet::new();
    loop {
        tokio::time::sleep(COLLECT_EVERY).await;
        let all = h
            .call_all(move |n| {
                let recs = n.sw.env.tracer.drain();
                let ids: Vec<u32> = recs.iter().map(|r| r.id).collect();
                let text = if recs.is_empty() {
                    String::new()
                } else if json {
                    show::trace_json(&n.sw, &recs)
                } else {
                    show::trace(&n.sw, &recs)
                };
                (text, ids, n.sw.env.tracer.remaining())
            })
            .await?;
        let mut text = String::new();
        let mut remaining = 0;
        for (k, (t, n_ids, left)) in all.into_iter().enumerate() {
            ids.extend(n_ids.into_iter().map(|id| (k, id)));
            text += &t;
            remaining += left;
        }
        seen = seen.max(ids.len() as u32);
        if !text.is_empty() && rep.out(text).await.is_err() {
            break; // the client went away
        }
        if remaining == 0 || seen >= count || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    h.call_all(|n| n.sw.env.tracer.disarm()).await?;
    if seen < count && !json {
        let _ = rep
            .send(&Reply::Err(format!(
                "trace: {seen} of {count} packets seen in {} s",
                TRACE_WAIT.as_secs()
            )))
            .await;
    }
    Ok(EXIT_OK)
}
