//! The upstream relay of the networks' resolvers (`vxmesh run --dns-upstream IP[,IP]`).
//!
//! Where it sits: on a thread of its own, off the packet path. The `dns` stage hands it the
//! queries for names the switch does not serve (a bounded channel of fixed-size records: no
//! allocation or system call per packet on the poll thread); the relay sends each to an upstream
//! resolver from a socket of the node (in the node's namespace) under a fresh random transaction
//! id, matches the reply by upstream address and id, restores the container's id, and has the
//! poll thread send the answer, as a frame from the resolver's address and MAC, out of the port
//! the query came in on (if that port still belongs to the same endpoint). Queries that get no
//! answer in [`ANSWER_WAIT`] are forgotten (the container's resolver library retries).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use vswitch::dns::Forward;

/// Queries the stage may have waiting for the relay.
pub const QUEUE: usize = 256;
/// Queries waiting for an upstream's answer, at most.
const PENDING: usize = 4096;
/// How long an upstream may take to answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);
/// How long the relay blocks on its socket at a time (it also looks at its queue then).
const TICK: Duration = Duration::from_millis(5);

/// A query sent upstream, waiting for its answer.
struct Pending {
    query: Forward,
    upstream: SocketAddrV4,
    deadline: Instant,
}

/// Run the relay until `stop`: queries from `queries`, answers handed to `answer` (port,
/// container address, frame), which sends them through the poll thread.
pub fn run(
    upstreams: Vec<SocketAddrV4>,
    queries: Receiver<Forward>,
    stop: Arc<AtomicBool>,
    answer: impl Fn(vswitch::PortId, Ipv4Addr, Vec<u8>),
) -> std::io::Result<()> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.set_read_timeout(Some(TICK))?;
    let mut pending: HashMap<u16, Pending> = HashMap::new();
    let mut next = 0usize;
    let mut buf = [0u8; 4096];
    let ids = std::hash::RandomState::new();
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Send what the stage handed over.
        while let Ok(q) = queries.try_recv() {
            if pending.len() >= PENDING || upstreams.is_empty() {
                continue;
            }
            // A fresh, unpredictable id per query (an off-path sender cannot guess it), not in
            // use by another waiting query.
            let id = loop {
                counter += 1;
                let id = std::hash::BuildHasher::hash_one(&ids, counter) as u16;
                if !pending.contains_key(&id) {
                    break id;
                }
            };
            let upstream = upstreams[next % upstreams.len()];
            next += 1;
            let len = usize::from(q.len);
            let mut msg = q.query[..len].to_vec();
            msg[..2].copy_from_slice(&id.to_be_bytes());
            if sock.send_to(&msg, upstream).is_ok() {
                pending.insert(
                    id,
                    Pending {
                        query: q,
                        upstream,
                        deadline: Instant::now() + ANSWER_WAIT,
                    },
                );
            }
        }
        // Answers: from the upstream the query went to, with its id.
        if let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf)
            && n >= 12
        {
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            if pending.get(&id).is_some_and(|p| p.upstream == from)
                && let Some(p) = pending.remove(&id)
            {
                let q = p.query;
                buf[..2].copy_from_slice(&q.query[..2]);
                let n = fit(&mut buf, n, &q);
                let frame = vswitch::frames::udp(
                    q.resolver_mac,
                    q.client_mac,
                    q.resolver_ip,
                    q.client_ip,
                    vswitch::wire::dns::PORT,
                    q.client_port,
                    &buf[..n],
                );
                answer(q.port, q.client_ip, frame);
            }
        }
        let now = Instant::now();
        pending.retain(|_, p| p.deadline > now);
    }
    Ok(())
}

/// An upstream answer of `n` bytes in `buf` cut to what the container takes (`q.limit`: its
/// EDNS0 size or 512, within the network's MTU), as the switch cuts its own answers: when it
/// is longer, the header with TC set and no records, and the query's question. Its length.
fn fit(buf: &mut [u8], n: usize, q: &vswitch::dns::Forward) -> usize {
    let qend = usize::from(q.question_end);
    if n <= usize::from(q.limit) || qend < 12 || qend > usize::from(q.len) || qend > buf.len() {
        return n;
    }
    // Flags: TC on (the rest as the upstream answered); one question, no records.
    buf[2] |= 0x02;
    buf[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    buf[12..qend].copy_from_slice(&q.query[12..qend]);
    qend
}

/// `IP[:PORT][,IP[:PORT]...]` (port 53 unless given).
pub fn parse_upstreams(s: &str) -> Result<Vec<SocketAddrV4>, String> {
    s.split(',')
        .map(|x| {
            let x = x.trim();
            x.parse::<SocketAddrV4>()
                .or_else(|_| x.parse::<Ipv4Addr>().map(|ip| SocketAddrV4::new(ip, 53)))
                .map_err(|_| format!("--dns-upstream: {x:?} is not IP or IP:PORT"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for the root's A record (17 bytes, id 0xabcd) from c11, without EDNS0 (512
    /// bytes at most back), and its bytes.
    fn forward() -> (Forward, [u8; 17]) {
        let msg = [0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        let mut q = Forward {
            port: vswitch::PortId(3),
            client_mac: vswitch::Mac([2, 0x42, 10, 0, 9, 11]),
            client_ip: Ipv4Addr::new(10, 0, 9, 11),
            client_port: 40000,
            resolver_mac: vswitch::Mac([2, 0x42, 10, 0, 9, 1]),
            resolver_ip: Ipv4Addr::new(10, 0, 9, 1),
            len: 17,
            question_end: 17,
            limit: 512,
            query: [0; vswitch::dns::FORWARD_MAX],
        };
        q.query[..17].copy_from_slice(&msg);
        (q, msg)
    }

    /// The test's thread in a network namespace of its own, its loopback out of the host's
    /// ([`nslab::own_netns`]); false (the test skips, saying why) without root.
    fn own_netns() -> bool {
        nslab::own_netns()
            .map_err(|e| eprintln!("skipped: {e}"))
            .is_ok()
    }

    #[test]
    fn upstream_lists() {
        assert_eq!(
            parse_upstreams("192.0.2.53, 10.0.0.1:5353").unwrap(),
            [
                SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 53), 53),
                SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5353)
            ]
        );
        assert!(parse_upstreams("").is_err());
        assert!(parse_upstreams("dns.example").is_err());
    }

    /// A query through a real UDP "upstream" on loopback: the relay sends it under a new id,
    /// and the answer comes back with the container's id, addressed to the container.
    #[test]
    fn a_query_goes_upstream_and_its_answer_comes_back_to_the_container() {
        if !own_netns() {
            return;
        }
        let upstream = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        upstream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let std::net::SocketAddr::V4(addr) = upstream.local_addr().unwrap() else {
            unreachable!()
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let (atx, arx) = std::sync::mpsc::channel();
        let relay = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                run(vec![addr], rx, stop, move |port, ip, frame| {
                    let _ = atx.send((port, ip, frame));
                })
            })
        };
        let (q, msg) = forward();
        tx.send(q).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = upstream
            .recv_from(&mut buf)
            .expect("the query arrives upstream");
        assert_eq!(n, 17);
        assert_eq!(&buf[2..n], &msg[2..], "the same query, under its own id");
        buf[2] |= 0x80; // QR: an answer
        upstream.send_to(&buf[..n], from).unwrap();
        let (port, ip, frame) = arx
            .recv_timeout(Duration::from_secs(5))
            .expect("the answer comes back");
        stop.store(true, Ordering::Relaxed);
        relay.join().unwrap().unwrap();
        assert_eq!((port, ip), (q.port, q.client_ip));
        assert_eq!(&frame[..6], &q.client_mac.0, "to the container's MAC");
        let dns = &frame[frame.len() - 17..];
        assert_eq!(&dns[..2], &[0xab, 0xcd], "with the container's id");
        assert_eq!(dns[2] & 0x80, 0x80);
    }

    /// An upstream answer longer than the container takes (its EDNS0 size, else 512, within
    /// the network's MTU) comes back as the switch's own would: TC set, the question, no
    /// records. One that fits comes back whole.
    #[test]
    fn an_answer_longer_than_the_container_takes_comes_back_truncated() {
        let (q, msg) = forward();
        // An answer of 900 bytes: the header (QR, RD, RA; one question, 30 answers), the
        // question, then records.
        let mut buf = vec![0u8; 4096];
        buf[..17].copy_from_slice(&msg);
        buf[2..4].copy_from_slice(&[0x81, 0x80]);
        buf[6..8].copy_from_slice(&30u16.to_be_bytes());
        for (i, b) in buf[17..900].iter_mut().enumerate() {
            *b = i as u8;
        }
        assert_eq!(
            fit(&mut buf.clone(), 900, &Forward { limit: 1400, ..q }),
            900
        );
        let n = fit(&mut buf, 900, &q);
        assert_eq!(n, 17);
        assert_eq!(&buf[..2], &[0xab, 0xcd]);
        assert_eq!(buf[2..4], [0x83, 0x80], "TC set, the rest as answered");
        assert_eq!(
            buf[4..12],
            [0, 1, 0, 0, 0, 0, 0, 0],
            "one question, no records"
        );
        assert_eq!(buf[12..17], msg[12..17], "the question");
    }
}
