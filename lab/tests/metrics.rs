//! The Prometheus scrape target (issue 19, `vxmesh run --metrics`), end to end: a real node in
//! a lab started with `--metrics 127.0.0.1:9417` in its namespace; `GET /metrics` from inside
//! the namespace answers 200 in the text format 0.0.4 (anything else 404), `promtool check
//! metrics` (Debian's prometheus) finds nothing wrong with it, and a real `prometheus` server in
//! the node's namespace, scraping every second, reports the target up, the drop counters by
//! reason and the packets a ping from an endpoint made.
//!
//! Privileged: without root, promtool or prometheus the test says so and passes. Namespaces
//! carry a per-run prefix (`vxp{pid}-`) and are removed by name when `Running` drops, also when
//! a check panics; prometheus is killed by its PID and its directory removed on drop. Waits are
//! bounded; nothing is timed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vxmesh_lab::fixture::Fixture;
use vxmesh_lab::labrun::{Running, in_netns, vxmesh_exe, wait_listening};
use vxmesh_lab::{have, is_root};

/// The node's metrics port, in its namespace.
const METRICS_PORT: u16 = 9417;
/// The prometheus server's port, in the node's namespace.
const PROM_PORT: u16 = 9090;
/// How long prometheus may take to start and scrape.
const PROM_WAIT: Duration = Duration::from_secs(60);

/// One HTTP/1.0 GET (no chunked answers) of `path` at 127.0.0.1:`port` from namespace `ns`: the status line, the
/// head and the body.
fn get(ns: &str, port: u16, path: &str) -> (String, String, String) {
    let path = path.to_string();
    let h = in_netns(ns, move || -> std::io::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        Ok(String::from_utf8_lossy(&resp).into_owned())
    })
    .expect("entering the namespace");
    let resp = h.join().expect("client thread").unwrap_or_default();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_string(), body.to_string())
}

/// A prometheus server in a namespace: killed by its PID, its directory removed, on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    fn start(ns: &str, dir: PathBuf) -> Prometheus {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: vxmesh\n    static_configs:\n      - targets: ['127.0.0.1:{METRICS_PORT}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        // `ip netns exec` execs the program: the child's PID is prometheus's.
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "prometheus"])
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROM_PORT}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus");
        Prometheus { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The result vector of an instant query to prometheus's HTTP API.
fn query(ns: &str, q: &str) -> Vec<serde_json::Value> {
    let (status, _, body) = get(ns, PROM_PORT, &format!("/api/v1/query?query={q}"));
    if !status.contains(" 200 ") {
        return Vec::new();
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
}

/// The value of a vector sample.
fn value(s: &serde_json::Value) -> f64 {
    s["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn prometheus_scrapes_the_node_and_promtool_accepts_its_metrics() {
    if !is_root() || !have("promtool") || !have("prometheus") {
        eprintln!("skipped: needs root and promtool and prometheus (Debian's prometheus)");
        return;
    }
    let prefix = format!("vxp{}-", std::process::id());
    let exe = vxmesh_exe().unwrap_or_else(|e| panic!("{e:#}"));
    let mut run = Running::start(&exe, &prefix, &Fixture::new(&prefix).text(), &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    run.run_args = vec!["--metrics".into(), format!("127.0.0.1:{METRICS_PORT}")];
    run.start_node("n1").unwrap_or_else(|e| panic!("{e:#}"));
    let ns = run.lab.node_netns("n1");
    wait_listening(&ns, METRICS_PORT).unwrap_or_else(|e| panic!("{e:#}"));

    // The endpoint: 200, the format's content type, and only /metrics.
    let (status, head, body) = get(&ns, METRICS_PORT, "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{}", run.log_tail());
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for family in [
        "# TYPE vxmesh_drops_total counter",
        "# TYPE vxmesh_port_rx_packets_total counter",
        "# TYPE vxmesh_stage_packets_total counter",
        "# TYPE vxmesh_fdb_entries gauge",
        "# TYPE vxmesh_conntrack_capacity gauge",
        "# TYPE vxmesh_service_connections_total counter",
        "# TYPE vxmesh_backend_connections gauge",
    ] {
        assert!(body.contains(family), "{family} missing:\n{body}");
    }
    assert!(
        body.contains("vxmesh_service_connections_total{node=\"n1\",service=\"web\""),
        "the service by its cluster name:\n{body}"
    );
    let (status, _, _) = get(&ns, METRICS_PORT, "/");
    assert!(status.contains(" 404 "), "{status}");

    // promtool's parser and linter.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Traffic through the node: a ping from an endpoint to the service's VIP.
    let c11 = run.lab.endpoint_netns("c11");
    let _ = Command::new("ip")
        .args([
            "netns", "exec", &c11, "ping", "-c", "3", "-i", "0.2", "-W", "1",
        ])
        .arg("10.0.9.100")
        .output();

    // A real prometheus, scraping every second.
    let prom = Prometheus::start(
        &ns,
        std::env::temp_dir().join(format!("{prefix}prometheus")),
    );
    let start = Instant::now();
    let (mut up, mut drops, mut rx) = (Vec::new(), Vec::new(), Vec::new());
    while start.elapsed() < PROM_WAIT {
        up = query(&ns, "up");
        drops = query(&ns, "vxmesh_drops_total");
        rx = query(&ns, "sum(vxmesh_port_rx_packets_total)");
        if up.iter().any(|s| value(s) == 1.0)
            && !drops.is_empty()
            && rx.iter().any(|s| value(s) > 0.0)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        up.iter().any(|s| value(s) == 1.0),
        "up: {up:?}\n{}",
        prom.log()
    );
    assert!(
        drops
            .iter()
            .any(|s| s["metric"]["reason"].as_str().is_some() && s["metric"]["node"] == "n1"),
        "drops: {drops:?}"
    );
    assert!(rx.iter().any(|s| value(s) > 0.0), "rx: {rx:?}");
}
