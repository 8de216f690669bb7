//! Connections that survive the process (issue 17): two `vxmesh run` nodes in a namespace lab,
//! nginx in the three backends, and keep-alive HTTP/1.1 connections that stay open across a
//! restart of the node that tracks them:
//!
//! 1. c11 -> VIP (n1's `lb-nat` holds the entry): a request every 10 ms on one connection;
//!    n1 is killed with SIGKILL and started again; the same connection answers again, from the
//!    same backend, with no reset and no failed request (`conntrack_restored` on n1).
//! 2. The same with SIGTERM.
//! 3. x-n1 -> n1's ingress 192.0.2.1:8080 (the routing mesh: DNAT and SNAT), SIGKILL.
//! 4. A corrupt table file (garbage written over it while n1 is stopped) is discarded with a
//!    message and `conntrack_files_discarded`, and the node serves new connections.
//! 5. What a crash leaves on an interface: n1 runs with `--afxdp-napi-defer-us 200` (c11's veth
//!    `vc11` deferred, the record in `/run/vxmesh/..ifsaved`), is killed with SIGKILL (the
//!    veth stays deferred), and starts again without the option: the veth's settings are as
//!    they were before the first start, and a clean stop leaves no record.
//!
//! For each restart the test prints the gap (not asserted: the machine's load decides it): how
//! long the node was away, how long the connection went without an answer, how long after the
//! node was back the first answer came, and the connection's TCP retransmissions (`ss -ti`).
//! `cargo test -p vxmesh-lab --test restart -- --nocapture` shows them (docs/performance.md).
//!
//! Privileged: without root (or without nginx) the test says so and passes. Namespaces carry a
//! per-run prefix (`vxr{pid}-`) and are removed by name when `Running` drops, with the nodes'
//! table files, also when a check panics; the nginx processes are killed by their PIDs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Nginx, Running, in_netns, vxmesh_exe};
use vxmesh_lab::{have, is_root};

/// Time between two requests of the steady client.
const EVERY: Duration = Duration::from_millis(10);
/// How long one request may wait for its answer (TCP retransmits across the restart).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

fn sh(ns: &str, args: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One keep-alive HTTP/1.1 connection, opened from inside a namespace.
struct KeepAlive {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl KeepAlive {
    fn open(ns: &str, to: SocketAddr) -> KeepAlive {
        let s = in_netns(ns, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })
        .unwrap()
        .join()
        .expect("connect thread")
        .unwrap_or_else(|e| panic!("connect to {to} from {ns}: {e}"));
        s.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        KeepAlive {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// One request; the body of its answer.
    fn get(&mut self) -> std::io::Result<String> {
        self.w
            .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive\r\n\r\n")?;
        let mut len = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0u8; len.ok_or(std::io::ErrorKind::InvalidData)?];
        self.r.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).trim().to_string())
    }
}

/// How a node goes away.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    Term,
}

/// Keep `conn` busy (a request every [`EVERY`]) while `node` is stopped as `how` says and
/// started again; every answer must come from `backend`. Prints the gap; returns the
/// connection.
fn across_restart(
    run: &mut Running,
    node: &str,
    how: Stop,
    mut conn: KeepAlive,
    backend: &str,
    what: &str,
    ss: (&str, &str),
) -> KeepAlive {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let client = std::thread::spawn(move || {
        let mut answers: Vec<(Instant, String)> = Vec::new();
        let mut error = None;
        while !stop2.load(Ordering::Relaxed) {
            match conn.get() {
                Ok(b) => answers.push((Instant::now(), b)),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
            std::thread::sleep(EVERY);
        }
        (conn, answers, error)
    });
    std::thread::sleep(Duration::from_millis(300));
    let t_stop = Instant::now();
    match how {
        Stop::Kill => run.kill_node(node).unwrap(),
        Stop::Term => {
            let st = run.stop_node(node).unwrap();
            assert!(st.success(), "{node} after SIGTERM: {st}");
        }
    }
    let t_down = Instant::now();
    run.start_node(node).unwrap_or_else(|e| panic!("{e:#}"));
    let t_up = Instant::now();
    // Let the connection answer a few times after the restart (bounded by the answer timeout).
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (conn, answers, error) = client.join().expect("client thread");
    assert!(
        error.is_none(),
        "{what}: the connection failed across the {how:?} restart: {error:?}\n{}",
        run.log_tail()
    );
    assert!(
        answers.iter().all(|(_, b)| b == backend),
        "{what}: answered by another backend than {backend}"
    );
    let before = answers.iter().rev().find(|(t, _)| *t < t_stop).map(|a| a.0);
    // An answer between the signal and the node's end may have crossed the switch before the
    // signal: the first answer that counts comes after the node was reaped.
    let after = answers.iter().find(|(t, _)| *t > t_down).map(|a| a.0);
    let (Some(before), Some(after)) = (before, after) else {
        panic!(
            "{what}: no answers on both sides of the restart ({} in all)",
            answers.len()
        );
    };
    // The node was reaped at `t_down` (`kill_node`/`stop_node` wait for it), so `after` was
    // answered by the new process; it may come before `start_node` returned (the node forwards
    // once its ports are up, before its control socket has been seen to answer).
    assert!(after > before, "{what}: answers out of order");
    let retrans = sh(ss.0, &["ss", "-tinH", "dst", ss.1]);
    let retrans = retrans
        .split_whitespace()
        .find(|w| w.starts_with("retrans:"))
        .unwrap_or("retrans:0/0");
    eprintln!(
        "restart gap, {what}, {how:?}: node away {:.0} ms (stopped in {:.0} ms), connection silent {:.0} ms, first answer {:.0} ms after the node was back; {} answers, {retrans}",
        (t_up - t_stop).as_secs_f64() * 1e3,
        (t_down - t_stop).as_secs_f64() * 1e3,
        (after - before).as_secs_f64() * 1e3,
        (after - t_up).as_secs_f64() * 1e3,
        answers.len(),
    );
    assert!(
        run.stage_counter(node, "lb-nat", "conntrack_restored")
            .unwrap()
            >= 1
    );
    conn
}

#[test]
fn established_connections_survive_a_restart_of_the_node() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, AF_XDP, TAP)");
        return;
    }
    if !have("nginx") {
        eprintln!("skipped: no nginx (scripts/test.sh installs it)");
        return;
    }
    let prefix = format!("vxr{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let mut run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &["n1", "n2"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = std::env::temp_dir().join(format!("{prefix}nginx"));
    let _nginx =
        Nginx::start(&run, &["c12", "c21", "c22"], &dir).unwrap_or_else(|e| panic!("{e:#}"));
    let c11 = run.lab.endpoint_netns("c11");
    let vip: SocketAddr = "10.0.9.100:80".parse().unwrap();

    // 1-2. Through the VIP, across SIGKILL and SIGTERM.
    let mut conn = KeepAlive::open(&c11, vip);
    let backend = conn.get().unwrap();
    for how in [Stop::Kill, Stop::Term] {
        conn = across_restart(
            &mut run,
            "n1",
            how,
            conn,
            &backend,
            "c11 -> VIP",
            (&c11, "10.0.9.100"),
        );
    }
    assert_eq!(conn.get().unwrap(), backend);

    // 3. Through n1's published port (routing mesh), across SIGKILL.
    let x = run.lab.client_netns("n1");
    let mut mesh = KeepAlive::open(&x, "192.0.2.1:8080".parse().unwrap());
    let mesh_backend = mesh.get().unwrap();
    let mut mesh = across_restart(
        &mut run,
        "n1",
        Stop::Kill,
        mesh,
        &mesh_backend,
        "x-n1 -> 192.0.2.1:8080",
        (&x, "192.0.2.1"),
    );
    assert_eq!(mesh.get().unwrap(), mesh_backend);
    drop(mesh);
    drop(conn);

    // 4. A corrupt file: discarded with a message and a count; the node works on.
    run.stop_node("n1").unwrap();
    let file = vxmesh::daemon::conntrack_file(&run.control("n1"));
    assert!(file.exists(), "{} after a clean stop", file.display());
    std::fs::write(&file, vec![0xa5u8; 1 << 16]).unwrap();
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        run.stage_counter("n1", "lb-nat", "conntrack_files_discarded")
            .unwrap(),
        1
    );
    assert_eq!(
        run.stage_counter("n1", "lb-nat", "conntrack_restored")
            .unwrap(),
        0
    );
    assert!(run.log_tail().contains("discarded"), "{}", run.log_tail());
    let mut fresh = KeepAlive::open(&c11, vip);
    fresh.get().unwrap();
    drop(fresh);

    // 5. A crash with the receive deferral on: the next start puts c11's veth back.
    let n1 = run.lab.node_netns("n1");
    let deferral = || {
        let read = |f: &str| sh(&n1, &["cat", &format!("/sys/class/net/vc11/{f}")]);
        (read("napi_defer_hard_irqs"), read("gro_flush_timeout"))
    };
    let before = deferral();
    assert!(!before.0.is_empty(), "vc11's sysfs in {n1}");
    let record = vxmesh::node::ifsaved::file_of(&run.control("n1"));
    run.stop_node("n1").unwrap();
    run.run_args = vec!["--afxdp-napi-defer-us".into(), "200".into()];
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(deferral(), ("2\n".into(), "200000\n".into()));
    assert!(
        record.exists(),
        "{} while the port is open",
        record.display()
    );
    run.kill_node("n1").unwrap();
    assert_eq!(
        deferral(),
        ("2\n".into(), "200000\n".into()),
        "a crash leaves the veth deferred"
    );
    run.run_args.clear();
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(deferral(), before, "put back at the next start");
    assert!(run.log_tail().contains("put back"), "{}", run.log_tail());
    assert!(!record.exists(), "no port of this run changed anything");
    run.stop_node("n1").unwrap();
    assert!(!record.exists());
}
