//! A running lab: the [`Lab`]'s namespaces plus a `vxmesh run` process in each vxmesh node,
//! for `vxmesh demo` and the end-to-end tests. Off the packet path: this is the harness around
//! real nodes.
//!
//! [`Running::start`] writes the cluster file, builds the lab, starts the nodes (each in its
//! namespace, with a control socket named after the lab's prefix so two runs never collide) and
//! waits, bounded, until each node answers on its socket. Dropping it stops the nodes with
//! SIGTERM (as an operator would), waits for them, and removes the lab and the file: cleanup by
//! name, also when a test fails half-way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::Lab;
use vxmesh::config::Cluster;

/// How long a node may take to answer on its control socket after starting.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM before it is killed.
pub const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The `vxmesh` executable of this build: next to the running program (`vxmesh-lab`,
/// `vxmesh-compare`), or one folder up from it (a test in `target/<profile>/deps/`). `cargo build
/// --workspace` and `cargo test --workspace` build it; `cargo test -p vxmesh-lab` alone does not.
pub fn vxmesh_exe() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating this program")?;
    let dirs = me.ancestors().skip(1).take(2);
    let found = dirs.map(|d| d.join(VXMESH)).find(|p| p.is_file());
    found.with_context(|| {
        format!(
            "no {VXMESH} executable next to {} or in its parent folder: build it with `cargo build --workspace`",
            me.display()
        )
    })
}

/// The node's program.
const VXMESH: &str = "vxmesh";

/// A lab with its vxmesh nodes running.
pub struct Running {
    /// The lab.
    pub lab: Lab,
    /// The cluster file.
    pub config: PathBuf,
    /// The parsed cluster.
    pub cluster: Cluster,
    /// The `vxmesh` executable.
    pub exe: PathBuf,
    /// Node name, control socket, process.
    nodes: Vec<(String, PathBuf, Option<Child>)>,
    /// Where the nodes' stderr goes; removed with the lab unless `keep_logs`.
    pub logs: PathBuf,
    /// Leave `logs` behind when dropped (for a user who was told where they are).
    pub keep_logs: bool,
    /// Extra arguments for every `vxmesh run` started after they are set (e.g. `--busy-poll-us`).
    pub run_args: Vec<String>,
    /// Nodes started while this is set follow this store (`--store URL --vtep IP`) instead of
    /// reading the cluster file.
    pub store: Option<String>,
}

/// Writes `cluster_text` to `PREFIXcluster.toml` in the temporary directory and parses it; the
/// file is removed again if it does not parse. Returns the file (the caller removes it with the
/// lab) and the cluster.
pub fn write_cluster(prefix: &str, cluster_text: &str) -> Result<(PathBuf, Cluster)> {
    let config = std::env::temp_dir().join(format!("{prefix}cluster.toml"));
    std::fs::write(&config, cluster_text)
        .with_context(|| format!("writing {}", config.display()))?;
    match Cluster::load(&config) {
        Ok(cluster) => Ok((config, cluster)),
        Err(e) => {
            let _ = std::fs::remove_file(&config);
            Err(e.into())
        }
    }
}

impl Running {
    /// Write `cluster_text` to a file, build the lab with `prefix`, start `vxmesh run` for each
    /// of `nodes` with the executable `exe`.
    pub fn start(exe: &Path, prefix: &str, cluster_text: &str, nodes: &[&str]) -> Result<Running> {
        Running::start_with(exe, prefix, cluster_text, nodes, &[])
    }

    /// [`Running::start`], with extra arguments for each `vxmesh run` ([`Running::run_args`]).
    pub fn start_with(
        exe: &Path,
        prefix: &str,
        cluster_text: &str,
        nodes: &[&str],
        run_args: &[String],
    ) -> Result<Running> {
        let dir = std::env::temp_dir();
        let (config, cluster) = write_cluster(prefix, cluster_text)?;
        let lab = Lab::new(&cluster, prefix);
        let mut run = Running {
            lab,
            config,
            cluster,
            exe: exe.to_path_buf(),
            nodes: Vec::new(),
            logs: dir.join(format!("{prefix}nodes.log")),
            keep_logs: false,
            run_args: run_args.to_vec(),
            store: None,
        };
        run.lab.up()?;
        for n in nodes {
            run.start_node(n)?;
        }
        Ok(run)
    }

    /// The control socket of `node`.
    pub fn control(&self, node: &str) -> PathBuf {
        Path::new(vxmesh::daemon::CONTROL_DIR).join(format!("{}.sock", self.lab.node_netns(node)))
    }

    /// Start `vxmesh run` for `node` in its namespace and wait until it answers.
    pub fn start_node(&mut self, node: &str) -> Result<()> {
        let control = self.control(node);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.logs)
            .with_context(|| format!("opening {}", self.logs.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.lab.node_netns(node)])
            .arg(&self.exe)
            .arg("run");
        match &self.store {
            Some(url) => {
                let vtep = self
                    .cluster
                    .node(node)
                    .with_context(|| format!("node {node} is not in the cluster file"))?
                    .vtep;
                cmd.args(["--store", url, "--vtep", &vtep.to_string()]);
            }
            None => {
                cmd.arg("--config").arg(&self.config);
            }
        }
        let child = cmd
            .args(["--node", node, "--control"])
            .arg(&control)
            .args(&self.run_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {node}"))?;
        // A node started again takes the place of its stopped entry.
        self.nodes.retain(|n| n.0 != node || n.2.is_some());
        self.nodes
            .push((node.to_string(), control.clone(), Some(child)));
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        loop {
            if answers(&control) {
                return Ok(());
            }
            let child = self
                .nodes
                .last_mut()
                .and_then(|n| n.2.as_mut())
                .expect("just pushed");
            if let Some(st) = child.try_wait()? {
                bail!(
                    "node {node} exited ({st}) before its control socket came up:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "node {node}: no control socket at {} after {:?}:\n{}",
                    control.display(),
                    NODE_START_TIMEOUT,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of `node`'s running `vxmesh run` (`ip netns exec` runs it in its own
    /// place, so it is the child's).
    pub fn node_pid(&self, node: &str) -> Option<u32> {
        self.nodes
            .iter()
            .rev()
            .find(|n| n.0 == node)
            .and_then(|n| n.2.as_ref())
            .map(Child::id)
    }

    /// The last lines the nodes wrote.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.logs).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Run `vxmesh --control <node's socket> ARGS`.
    pub fn ctl(&self, node: &str, args: &[&str]) -> Result<Output> {
        Command::new(&self.exe)
            .arg("--control")
            .arg(self.control(node))
            .args(args)
            .output()
            .with_context(|| format!("vxmesh {}", args.join(" ")))
    }

    /// Write `cluster_text` over the cluster file and `vxmesh reload` `node`; what it printed,
    /// or why it failed (its output and the nodes' last log lines).
    pub fn reload(&self, node: &str, cluster_text: &str) -> Result<String> {
        std::fs::write(&self.config, cluster_text)
            .with_context(|| format!("writing {}", self.config.display()))?;
        let o = self.ctl(node, &["reload"])?;
        if !o.status.success() {
            bail!(
                "reload of {node} failed: {}{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                self.log_tail()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `ctl`, requiring success; its standard output.
    pub fn ctl_ok(&self, node: &str, args: &[&str]) -> Result<String> {
        let o = self.ctl(node, args)?;
        if !o.status.success() {
            bail!(
                "vxmesh --node {node} {} failed ({}): {}",
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Counter `name` (a drop or an event) of stage `stage` on `node`, from `stats --json`.
    pub fn stage_counter(&self, node: &str, stage: &str, name: &str) -> Result<u64> {
        let out = self.ctl_ok(node, &["stats", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("stats --json")?;
        let st = v["stages"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == stage))
            .with_context(|| format!("no stage {stage} on {node}: {out}"))?;
        st["drops"][name]
            .as_u64()
            .or_else(|| st["events"][name].as_u64())
            .with_context(|| format!("no counter {name} in {stage} on {node}: {out}"))
    }

    /// Stop `node` with SIGTERM; its exit status (killed after [`NODE_STOP_TIMEOUT`]).
    pub fn stop_node(&mut self, node: &str) -> Result<std::process::ExitStatus> {
        let Some(entry) = self.nodes.iter_mut().find(|n| n.0 == node && n.2.is_some()) else {
            bail!("node {node} is not running");
        };
        let Some(mut child) = entry.2.take() else {
            bail!("node {node} was stopped already");
        };
        stop_child(&mut child)
    }
}

impl Running {
    /// Kill `node` with SIGKILL (a crash: no clean leave), and reap it.
    pub fn kill_node(&mut self, node: &str) -> Result<()> {
        let Some(mut child) = self
            .nodes
            .iter_mut()
            .find(|n| n.0 == node && n.2.is_some())
            .and_then(|n| n.2.take())
        else {
            bail!("node {node} is not running");
        };
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

fn stop_child(child: &mut Child) -> Result<std::process::ExitStatus> {
    // `ip netns exec` execs the program, so the child's pid is the node's.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + NODE_STOP_TIMEOUT;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let st = child.wait()?;
            bail!("did not stop within {NODE_STOP_TIMEOUT:?} of SIGTERM (killed: {st})");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for (_, control, child) in &mut self.nodes {
            if let Some(c) = child.as_mut() {
                let _ = stop_child(c);
            }
            // The node's files beside its socket (tables, ESP epochs, CNI attachments,
            // interface settings), by name: a later run of the same prefix starts clean.
            for f in vxmesh::daemon::node_files(control) {
                let _ = std::fs::remove_file(f);
            }
            let _ = std::fs::remove_file(control);
        }
        let _ = self.lab.down();
        let _ = std::fs::remove_file(&self.config);
        if !self.keep_logs {
            let _ = std::fs::remove_file(&self.logs);
        }
    }
}

/// Whether the node at `control` answers a request. A node binds its control socket before it
/// opens its ports (so a second node on the same socket fails before touching any), and the
/// kernel accepts connections from then on; only an answer says the ports are up.
fn answers(control: &Path) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let Ok(stream) = std::os::unix::net::UnixStream::connect(control) else {
        return false;
    };
    if stream.set_read_timeout(Some(NODE_START_TIMEOUT)).is_err() {
        return false;
    }
    let req = vxmesh::daemon::Request::Stats { json: true };
    let mut line = serde_json::to_string(&req).expect("requests serialize");
    line.push('\n');
    if (&stream).write_all(line.as_bytes()).is_err() {
        return false;
    }
    BufReader::new(&stream)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<vxmesh::daemon::Reply>(&l).ok())
        .any(|r| r == vxmesh::daemon::Reply::Exit(vxmesh::daemon::EXIT_OK))
}

/// Run `f` on a thread that has entered the named namespace `netns`; sockets it creates stay
/// in that namespace.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = netns.to_string();
    let h = thread::spawn(move || {
        // Held for the thread's whole life: `f` runs in the namespace, never anywhere else.
        let entered = vswitch::port::netns::NetnsSwitch::enter(&name);
        let ok = entered.is_ok();
        let _ = tx.send(entered.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        if !ok {
            // The caller has the error; end this thread without a T (and without the panic
            // hook's message): unwinding with a payload skips the hook.
            std::panic::resume_unwind(Box::new(()));
        }
        f()
    });
    match rx.recv() {
        Ok(Ok(())) => Ok(h),
        Ok(Err(e)) => bail!("{e}"),
        Err(_) => bail!("netns {netns}: thread died"),
    }
}

/// How often the HTTP server's accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// A tiny HTTP/1.1 server for the demo: answers every request with `served by NAME`.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serve on `port` in namespace `netns`.
    pub fn start(netns: &str, port: u16, name: &str) -> Result<HttpServer> {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, name) = (stop.clone(), name.to_string());
        let h = in_netns(netns, move || {
            let l = match TcpListener::bind(("0.0.0.0", port)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            // Non-blocking accepts, the stop flag checked between them: stopping never
            // depends on reaching the listener (a namespace without loopback, say).
            if let Err(e) = l.set_nonblocking(true) {
                let _ = tx.send(Err(e));
                return;
            }
            let _ = tx.send(l.local_addr());
            while !stop2.load(Ordering::Relaxed) {
                let mut s = match l.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(ACCEPT_POLL);
                        continue;
                    }
                    Err(_) => continue,
                };
                if s.set_nonblocking(false).is_err() {
                    continue;
                }
                let name = name.clone();
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut r = BufReader::new(match s.try_clone() {
                        Ok(c) => c,
                        Err(_) => return,
                    });
                    loop {
                        let mut line = String::new();
                        // Read one request head.
                        let mut n = 0;
                        loop {
                            line.clear();
                            match r.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" || line == "\n" => break,
                                Ok(_) => n += 1,
                            }
                        }
                        if n == 0 {
                            return;
                        }
                        let body = format!("served by {name}\n");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        })?;
        rx.recv_timeout(Duration::from_secs(5))
            .context("http server did not start")?
            .with_context(|| format!("http server in {netns}: bind port {port}"))?;
        Ok(HttpServer {
            stop,
            thread: Some(h),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // The accept loop sees the flag within one ACCEPT_POLL.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP GET from namespace `netns` to `addr` on a new connection; the response body.
pub fn http_get(netns: &str, addr: SocketAddr) -> Result<String> {
    let h = in_netns(netns, move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut resp = String::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf)? {
                0 => break,
                n => resp.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
            if let Some(i) = resp.find("\r\n\r\n")
                && resp.contains("served by")
                && resp[i..].contains('\n')
                && resp.ends_with('\n')
            {
                break;
            }
        }
        Ok(resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
            .unwrap_or(resp))
    })?;
    h.join()
        .map_err(|_| anyhow::anyhow!("http client thread panicked"))?
        .with_context(|| format!("GET http://{addr}/ from {netns}"))
}

/// Write an nginx configuration for backend `name` under `dir`: one worker, no access log,
/// keep-alive for the whole test, each request answered with the backend's name.
pub fn nginx_conf(dir: &Path, name: &str) -> Result<PathBuf> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    let conf = d.join("nginx.conf");
    let p = d.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; user root; pid {p}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;
  uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;
  tcp_nodelay on;
  keepalive_timeout 120s; keepalive_requests 100000000;
  server {{ listen 80 backlog=4096; location / {{ default_type text/plain; return 200 \"{name}\\n\"; }} }}
}}
"
        ),
    )
    .with_context(|| format!("writing {}", conf.display()))?;
    Ok(conf)
}

/// nginx backends, one per endpoint, each in its endpoint's namespace answering with its name
/// ([`nginx_conf`]); killed by PID and their folder removed when dropped.
pub struct Nginx {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Nginx {
    /// Start one nginx per endpoint of `backends` (configurations under `dir`), each waited
    /// for until it listens on port 80.
    pub fn start(run: &Running, backends: &[&str], dir: &Path) -> Result<Nginx> {
        let mut n = Nginx {
            children: Vec::new(),
            dir: dir.to_path_buf(),
        };
        for b in backends {
            let conf = nginx_conf(dir, b)?;
            let ns = run.lab.endpoint_netns(b);
            n.children.push(
                Command::new("ip")
                    .args(["netns", "exec", &ns, "nginx", "-c"])
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("starting nginx (Debian package nginx-light)")?,
            );
            wait_listening(&ns, 80)?;
        }
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait (bounded, 10 s) until something listens on TCP `port` in namespace `ns`.
pub fn wait_listening(ns: &str, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pat = format!(":{port} ");
    while Instant::now() < deadline {
        let o = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Htln"])
            .output()
            .context("ss")?;
        if String::from_utf8_lossy(&o.stdout).contains(&pat) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port} in {ns}")
}
