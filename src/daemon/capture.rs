//! `vxmesh capture` on the node's side: create the pcap file as the client (off the runtime),
//! start the switch's capture on one port (one capture at a time), move the frames it copied to
//! the file's writer every [`COLLECT_EVERY`], and stop it when the count is reached or the client
//! goes away. The copying happens in the packet path (the switch's capture); this is its control
//! side. With several workers (`vxmesh run --workers`) the port is captured on every worker and
//! the frames merged in time order: a port's frames are received on its owner or handed to
//! the worker of their destination, and sent by whichever worker forwarded them, so no one
//! worker sees them all.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use vswitch::Time;

use super::session::Replies;
use super::{COLLECT_EVERY, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Handle, Reply};
use crate::{control, pcap};

/// Serve a `capture` request: frames of `port` into `file` (as the client `peer`), `count` at
/// most; `decrypted`: the ESP port's traffic as the ESP stages see it in clear.
pub(super) async fn capture(
    port: String,
    file: PathBuf,
    count: Option<u64>,
    decrypted: bool,
    peer: &control::Peer,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    let Some(sink) = create_file(&file, peer, rep, pcap::Sink::spawn).await? else {
        return Ok(EXIT_FAILURE);
    };
    let want = count.unwrap_or(u64::MAX);
    let busy = h
        .call_all(|n| n.sw.capturing() || n.esp_capturing())
        .await?;
    let started = h
        .call_all(move |n| {
            if busy.contains(&true) {
                return Err(
                    "capture: another capture is running on this node; one at a time".into(),
                );
            }
            match n.sw.port_id(&port) {
                Some(_)
                    if decrypted
                        && port != crate::node::ESP_PORT
                        && port != crate::node::ESP_UDP_PORT =>
                {
                    Err(format!(
                        "capture --decrypted: only the ESP ports {:?} and {:?} carry encrypted traffic",
                        crate::node::ESP_PORT,
                        crate::node::ESP_UDP_PORT
                    ))
                }
                Some(_) if decrypted => {
                    n.start_esp_capture(want);
                    Ok((Time::monotonic(), SystemTime::now()))
                }
                Some(p) => {
                    n.sw.start_capture(p, want);
                    Ok((Time::monotonic(), SystemTime::now()))
                }
                None => {
                    let names: Vec<String> =
                        n.sw.stats().ports.into_iter().map(|p| p.name).collect();
                    Err(format!(
                        "capture: no port {port:?} (ports: {})",
                        names.join(", ")
                    ))
                }
            }
        })
        .await?;
    let started: Result<Vec<_>, String> = started.into_iter().collect();
    let (mono0, wall0) = match started {
        // Every worker has the same ports: it started on all of them or on none.
        Ok(t) => t[0],
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || sink.finish()).await;
            let _ = std::fs::remove_file(&file);
            rep.send(&Reply::Err(e)).await?;
            return Ok(EXIT_USAGE);
        }
    };
    let wall0 = wall0
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut missed = 0u64;
    let mut offered = 0u64;
    // Every way out of the loop goes through the stop below: a capture never outlives its
    // session (the switch would keep copying frames for nobody).
    let collected: anyhow::Result<()> = async {
        loop {
            tokio::time::sleep(COLLECT_EVERY).await;
            let all = h
                .call_all(move |n| {
                    if decrypted {
                        n.take_esp_capture()
                    } else {
                        n.sw.take_capture()
                    }
                })
                .await?;
            let mut frames = Vec::new();
            let mut running = false;
            for (f, m, r) in all {
                frames.extend(f);
                missed += m;
                running |= r;
            }
            // The workers' frames in time order; at most `want` in all.
            frames.sort_by_key(|f| f.time_ns);
            frames.truncate(usize::try_from(want - offered).unwrap_or(usize::MAX));
            offered += frames.len() as u64;
            running &= offered < want;
            for f in frames {
                let t = wall0 + f.time_ns.saturating_sub(mono0.0);
                match sink.offer(t, f.data) {
                    pcap::Offer::Queued => {}
                    pcap::Offer::Full => missed += 1,
                    pcap::Offer::Failed => return Ok(()),
                }
            }
            // An empty progress line each round: a client gone (Ctrl-C) ends the capture.
            if !running || rep.out("").await.is_err() {
                return Ok(());
            }
        }
    }
    .await;
    stop_all(h, decrypted).await?;
    collected?;
    let written = tokio::task::spawn_blocking(move || sink.finish())
        .await
        .context("the capture's writer")?;
    let written = written.map_err(|e| e.to_string());
    Ok(report(rep, &file, written, "frames", missed).await)
}

/// Stop the capture on every worker.
async fn stop_all(h: &Handle, decrypted: bool) -> anyhow::Result<()> {
    h.call_all(move |n| {
        if decrypted {
            n.stop_esp_capture()
        } else {
            n.sw.stop_capture()
        }
    })
    .await?;
    Ok(())
}

/// Tell the client how a capture ended: `n` `what` written to `file`, or the writer's error,
/// and the records `missed` because the backlog was full. The exit code.
pub(super) async fn report(
    rep: &mut Replies,
    file: &std::path::Path,
    written: Result<u64, String>,
    what: &str,
    missed: u64,
) -> u8 {
    let missed = if missed > 0 {
        format!(" ({missed} missed: the backlog was full)")
    } else {
        String::new()
    };
    let (msg, code) = match written {
        Ok(n) => (
            format!("capture: {n} {what} written to {}{missed}", file.display()),
            EXIT_OK,
        ),
        Err(e) => (
            format!("capture: writing {}: {e}{missed}", file.display()),
            EXIT_FAILURE,
        ),
    };
    let _ = rep.send(&Reply::Err(msg)).await;
    code
}

/// Create a capture's new file `file` as the client `peer` and hand it to `then` (its writer),
/// off this runtime: a hung file system must not stall the control side. `None` when that
/// failed, the client told why.
pub(super) async fn create_file<T: Send + 'static>(
    file: &std::path::Path,
    peer: &control::Peer,
    rep: &mut Replies,
    then: impl FnOnce(std::fs::File) -> std::io::Result<T> + Send + 'static,
) -> anyhow::Result<Option<T>> {
    let (path, who) = (file.to_path_buf(), *peer);
    let opened = tokio::task::spawn_blocking(move || {
        control::create_capture_file(&path, &who).and_then(then)
    })
    .await
    .context("opening the capture file")?;
    match opened {
        Ok(t) => Ok(Some(t)),
        Err(e) => {
            rep.send(&Reply::Err(format!("capture: {}: {e}", file.display())))
                .await?;
            Ok(None)
        }
    }
}
