//! Talking to etcd: the store URL, the connection, and reading the whole state.
//!
//! Where it sits: under the admin commands and the node's watcher; off the packet path.
//! The client is `etcd-client` (tonic, etcd's v3 gRPC API): README's dependency table says why.

use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions, GetOptions};

use super::layout::PREFIX;
use super::state::State;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `etcd://HOST:PORT[,HOST:PORT...]` as the client's endpoints (`http://HOST:PORT`).
pub fn endpoints(url: &str) -> anyhow::Result<Vec<String>> {
    let Some(list) = url.strip_prefix("etcd://") else {
        bail!("store {url:?}: expected etcd://HOST:PORT[,HOST:PORT...]");
    };
    let eps: Vec<String> = list
        .split(',')
        .map(|hp| {
            let ok = hp.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) && !h.contains('/')
            });
            if ok {
                Ok(format!("http://{hp}"))
            } else {
                Err(anyhow::anyhow!(
                    "store {url:?}: {hp:?} is not HOST:PORT (expected etcd://HOST:PORT[,HOST:PORT...])"
                ))
            }
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(eps)
}

/// Connect to the store at `url`: to the first member (in order) that answers a status
/// request, so a member that is down is passed over (a client balanced over all members would
/// send some requests to it and fail them). A connection that breaks later is made again the
/// same way by its user.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let eps = endpoints(url)?;
    let opts = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let mut last = None;
    for ep in &eps {
        match Client::connect([ep], Some(opts.clone())).await {
            Ok(mut c) => match c.status().await {
                Ok(_) => return Ok(c),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "store {url}: no member answers (last error: {})",
        last.map_or_else(|| "none".into(), |e| e.to_string())
    ))
}

/// Keys a page of [`read_all`] holds at most (a large store read in one response would pass
/// the client's 4 MiB message limit).
const PAGE: i64 = 2000;

/// Everything under the prefix, at one revision, a page at a time.
pub async fn read_all(client: &mut Client) -> anyhow::Result<State> {
    // The prefix's range end: its last byte plus one ("/vxmesh/v1/" -> "/vxmesh/v10").
    let mut end = PREFIX.as_bytes().to_vec();
    if let Some(b) = end.last_mut() {
        *b += 1;
    }
    let mut state = State::default();
    let mut from = PREFIX.as_bytes().to_vec();
    let mut revision = 0;
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            // Every page at the first page's revision: one consistent state.
            opts = opts.with_revision(revision);
        }
        let resp = client
            .get(from.clone(), Some(opts))
            .await
            .context("reading the store")?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        for kv in resp.kvs() {
            match kv.key_str() {
                Ok(k) => state.put_kv(k, kv.value(), kv.mod_revision(), kv.create_revision()),
                Err(_) => {
                    state.bad.insert(
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        "the key is not UTF-8".into(),
                    );
                }
            }
        }
        match (resp.more(), resp.kvs().last()) {
            (true, Some(last)) => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    state.revision = revision;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            endpoints("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap(),
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        for bad in [
            "http://x:1",
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://host:99999",
            "etcd://:2379",
        ] {
            assert!(endpoints(bad).is_err(), "{bad}");
        }
    }
}
