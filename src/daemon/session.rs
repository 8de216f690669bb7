//! One control connection, on the node's side: read the request line, serve it (listings run as
//! jobs on the poll thread between batches and render here; a reload or a CNI call goes through
//! the change path), and write the reply lines, the last one the exit code. Control plane, off
//! the packet path: the single-threaded tokio side of `vxmesh run`.

use anyhow::Context;
use tokio::net::UnixStream;

use super::capture::capture;
use super::change::{apply, change_to};
use super::trace::trace;
use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Handle, Reply, Request};
use crate::cni::{self, CniCall};
use crate::config::Cluster;
use crate::{control, show};

/// Tell a refused client why (best effort: it may not read) and close.
pub(super) async fn refuse(stream: UnixStream, why: String) {
    let (_, w) = stream.into_split();
    let mut rep = Replies { w };
    if rep.send(&Reply::Err(why)).await.is_ok() {
        let _ = rep.send(&Reply::Exit(EXIT_FAILURE)).await;
    }
}

/// Where replies go: the control connection.
pub(super) struct Replies {
    w: tokio::net::unix::OwnedWriteHalf,
}

impl Replies {
    /// Send one reply line.
    pub(super) async fn send(&mut self, r: &Reply) -> std::io::Result<()> {
        let mut line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        line.push('\n');
        control::send_line(&mut self.w, line.as_bytes()).await
    }
    /// Send text for standard output.
    pub(super) async fn out(&mut self, s: impl Into<String>) -> std::io::Result<()> {
        self.send(&Reply::Out(s.into())).await
    }
}

/// One control connection: read its request, serve it, end with the exit code.
pub(super) async fn session(
    stream: UnixStream,
    peer: control::Peer,
    h: Handle,
) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    let mut rep = Replies { w };
    let line = match control::read_request(r).await {
        Ok(l) => l,
        Err(control::ReadError::Closed) => return Ok(()),
        Err(e) => {
            rep.send(&Reply::Err(format!("bad request: {e}"))).await?;
            return rep.send(&Reply::Exit(EXIT_USAGE)).await;
        }
    };
    let code = match serde_json::from_str::<Request>(&line) {
        Ok(req) => match handle_request(req, &peer, &h, &mut rep).await {
            Ok(code) => code,
            Err(e) => {
                rep.send(&Reply::Err(format!("{e:#}"))).await?;
                EXIT_FAILURE
            }
        },
        Err(e) => {
            rep.send(&Reply::Err(format!("bad request: {e}"))).await?;
            EXIT_USAGE
        }
    };
    rep.send(&Reply::Exit(code)).await
}

/// Serve one request: run it, reply, return the exit code.
async fn handle_request(
    req: Request,
    peer: &control::Peer,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    match req {
        Request::NetworkInspect { network, json } => {
            match h.call(move |n| show::network(n, &network, json)).await? {
                Ok(s) => rep.out(s).await?,
                Err(e) => {
                    rep.send(&Reply::Err(e)).await?;
                    return Ok(EXIT_USAGE);
                }
            }
        }
        Request::FdbShow { network, json } => {
            // Every worker's table (each learns on its own), as one.
            let all = h
                .call_all(move |n| {
                    if let Some(net) = &network
                        && n.sw.env.net_by_name(net).is_none()
                    {
                        return Err(format!("no network {net:?} on this node"));
                    }
                    Ok(show::fdb_rows(&n.sw, network.as_deref()))
                })
                .await?;
            let s = all
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map(|rows| show::fdb_render(show::fdb_merge(rows), json));
            match s {
                Ok(s) => rep.out(s).await?,
                Err(e) => {
                    rep.send(&Reply::Err(e)).await?;
                    return Ok(EXIT_USAGE);
                }
            }
        }
        Request::LbShow { stats, rate, json } => {
            // Every worker balances its own connections: their counters are added up.
            let all = h.call_all(|n| n.lb().services()).await?;
            let services = lb::listing::merge_services(all);
            let s = h
                .call(move |n| show::lb_of(n, &services, stats, rate, json))
                .await?;
            rep.out(s).await?;
        }
        Request::ConntrackShow { json } => {
            // A slice of the table per job, so the poll thread forwards between slices; the
            // listing is rendered here, off the poll thread. Like `ipvsadm -Lnc` reading /proc,
            // it is not one atomic snapshot of a table that changes while it is read.
            // Every worker's table, worker 0's first.
            let now = h.call(|n| n.sw.env.now).await?;
            let mut conns = Vec::new();
            for k in 0..h.workers.len() {
                let mut from = Some(0);
                while let Some(start) = from {
                    let (slice, next) = h
                        .call_on(k, move |n| {
                            n.lb()
                                .conns_slice(now, start, lb::listing::CONNS_SLICE_SLOTS)
                        })
                        .await?;
                    conns.extend(slice);
                    from = next;
                }
            }
            rep.out(show::conntrack_of(&conns, json)).await?;
        }
        Request::Stats { json } => {
            // Every worker's counters added up (one worker: its own).
            let st = h.stats().await?;
            let mut s = if json {
                show::stats_json_of(&st)
            } else {
                show::stats_text(&st)
            };
            if let Some((url, st)) = &h.store {
                s = show::with_store(s, json, url, st);
            }
            rep.out(s).await?;
        }
        Request::Trace {
            count,
            filter,
            json,
        } => return trace(count, filter, json, h, rep).await,
        Request::Capture {
            file,
            count,
            stages: true,
            filter,
            ..
        } => {
            return super::stages::capture_stages(file, count, filter, peer, h, rep).await;
        }
        Request::Capture {
            port,
            file,
            count,
            decrypted,
            ..
        } => {
            return capture(port, file, count, decrypted, peer, h, rep).await;
        }
        Request::CniAdd(c) => return serve_cni(cni::Op::Add, c, h, rep).await,
        Request::CniDel(c) => return serve_cni(cni::Op::Del, c, h, rep).await,
        Request::CniCheck(c) => return serve_cni(cni::Op::Check, c, h, rep).await,
        Request::CniStatus(c) => return serve_cni(cni::Op::Status, c, h, rep).await,
        Request::CniGc(c) => return serve_cni(cni::Op::Gc, c, h, rep).await,
        Request::Reload => {
            let r = reload(h).await?;
            match r {
                Ok(log) => rep.out(log).await?,
                Err((code, e)) => {
                    rep.send(&Reply::Err(e)).await?;
                    return Ok(code);
                }
            }
        }
    }
    Ok(EXIT_OK)
}

/// `reload` (and SIGHUP): re-read the cluster file and apply the difference. Its log, or the
/// exit code and why it was refused (a node that follows the store has no file to re-read); an
/// error when the node could not be asked.
pub(super) async fn reload(h: &Handle) -> anyhow::Result<Result<String, (u8, String)>> {
    if let Some((url, _)) = &h.store {
        return Ok(Err((
            EXIT_USAGE,
            format!(
                "this node follows the store {url}: changes apply as they are written there (`vxmesh --store {url} ...`); there is no file to re-read"
            ),
        )));
    }
    let path = h.call(|n| n.cluster.path.clone()).await?;
    // Reading and checking a large file takes time: on a blocking thread.
    let loaded =
        tokio::task::spawn_blocking(move || Cluster::load(&path).map_err(|e| e.to_string()))
            .await
            .context("reading the cluster file")?;
    Ok(match loaded {
        Err(e) => Err((EXIT_USAGE, e)),
        Ok(cluster) => change_to(h, cluster).await?.map_err(|e| (EXIT_USAGE, e)),
    })
}

/// A CNI call from `vxmesh-cni`: its result (or nothing) on standard output and exit 0, or a
/// CNI error object on standard output and exit 1.
async fn serve_cni(
    op: cni::Op,
    call: CniCall,
    h: &Handle,
    rep: &mut Replies,
) -> anyhow::Result<u8> {
    let version = call
        .config
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("1.0.0")
        .to_string();
    let served = {
        let mut local = h.changes.lock().await;
        let mut apply_one = |c: Cluster| -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, String>> + '_>,
        > {
            Box::pin(async move {
                match apply(h, c).await {
                    Ok(r) => r,
                    Err(e) => Err(format!("{e:#}")),
                }
            })
        };
        cni::handle(op, call, &mut local, &mut apply_one).await
    };
    let out = match served {
        Ok(cni::Served::Out(s)) => Ok(s),
        Ok(cni::Served::CheckPort(name)) => {
            let attached = h.call(move |n| n.sw.port_id(&name).is_some()).await?;
            if attached {
                Ok(String::new())
            } else {
                Err(cni::CniError::new(
                    cni::code::FAILED,
                    "CHECK failed: the endpoint's port is not attached to the switch",
                ))
            }
        }
        Err(e) => Err(e),
    };
    match out {
        Ok(s) => {
            rep.out(s).await?;
            Ok(EXIT_OK)
        }
        Err(mut e) => {
            e.cni_version = version;
            rep.out(e.to_json()).await?;
            Ok(EXIT_FAILURE)
        }
    }
}
