//! The `vxmesh` command line (SPEC.md, "The command line").

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use vxmesh::config::ConfigError;
use vxmesh::daemon::{self, Request};
use vxmesh::store::admin::Admin;

/// Exit code for usage and configuration errors (SPEC.md).
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vxmesh",
    version = version_text(),
    about = "Docker Swarm's overlay dataplane (L2 switch, VXLAN, IPVS-style load balancer), in userspace"
)]
struct Cli {
    /// Talk to the node with this name (control socket /run/vxmesh/NAME.sock).
    #[arg(long, global = true)]
    node: Option<String>,
    /// Talk to the node behind this control socket.
    #[arg(long, global = true)]
    control: Option<PathBuf>,
    /// The cluster store: etcd://HOST:PORT[,HOST:PORT...] (for `run` and the store's commands).
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run this node's switch in the foreground.
    Run {
        /// The cluster file (or --store URL with --vtep).
        #[arg(long, conflicts_with = "store")]
        config: Option<PathBuf>,
        /// This node's VTEP address (with --store: the node registers itself with it).
        #[arg(long, value_name = "IP")]
        vtep: Option<std::net::Ipv4Addr>,
        /// With --store: seconds the node's liveness lease lasts without a keep-alive; after
        /// that the other nodes take its endpoints and backends out.
        #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        node_ttl: u64,
        /// Shortest busy-poll window in microseconds: keep polling at least this long after the
        /// last frame before sleeping in poll(2). Longer lowers latency at low packet rates and
        /// costs CPU; "max" never sleeps (a core per node, as VPP and DPDK do).
        #[arg(long, value_name = "MICROS", default_value = "200", value_parser = daemon::options::parse_busy_poll)]
        busy_poll_us: std::time::Duration,
        /// Longest busy-poll window in microseconds: while frames keep coming within it of each
        /// other, the window grows to twice their gap and the node polls through the gaps
        /// instead of sleeping and paying a wake-up per frame; when they stop it sleeps again.
        /// Equal to --busy-poll-us (or below): a fixed window.
        #[arg(long, value_name = "MICROS", default_value = "5000", value_parser = daemon::options::parse_busy_poll)]
        busy_poll_max_us: std::time::Duration,
        /// Connection-table entries (about 121 bytes each). IPVS holds TIME_WAIT 120 s, so a
        /// node sustaining N new connections per second needs about 120 x N; when the table is
        /// full, new connections are dropped and counted (drop_table_full).
        #[arg(long, value_name = "N", default_value_t = vxmesh::node::MAX_CONNS,
              value_parser = daemon::options::parse_max_conns)]
        max_conns: usize,
        /// Connection timeouts in seconds, as `ipvsadm --set tcp tcpfin udp`: an established
        /// TCP connection, one closing (FIN_WAIT), and a UDP flow; 0 keeps that default. The
        /// defaults are IPVS's: 900,120,300. Every other TCP state keeps IPVS's timeout.
        #[arg(long, value_name = "TCP,TCPFIN,UDP", value_parser = daemon::options::parse_lb_timeouts)]
        lb_timeouts: Option<lb::Timeouts>,
        /// Seconds a learned MAC stays in the FDB without a frame from it, as the Linux
        /// bridge's ageing_time (1 to 1000000).
        #[arg(long, value_name = "SECS", default_value_t = vswitch::fdb::DEFAULT_AGING_SECS,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        fdb_aging: u32,
        /// Let members of this group (a name or a gid) use the control socket: it becomes mode
        /// 0660 with that group. Without it the socket is 0600, for root (the node's user) only.
        #[arg(long, value_name = "GROUP")]
        control_group: Option<String>,
        /// Upstream resolvers (IP or IP:PORT, comma-separated) for names the networks'
        /// resolvers do not serve: such queries are relayed there from the node and the answers
        /// brought back. Without it those names are answered REFUSED.
        #[arg(long, value_name = "IP[,IP]")]
        dns_upstream: Option<String>,
        /// Run the poll thread at real-time priority (SCHED_FIFO, 1 to 99; root or
        /// CAP_SYS_NICE): other programs on a busy machine then never hold a packet up for a
        /// scheduler slice. 0 (the default) keeps ordinary scheduling.
        #[arg(long, value_name = "PRIO", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=99))]
        poll_priority: u8,
        /// Serve the node's counters to Prometheus: `GET http://ADDR:PORT/metrics` answers in
        /// the text exposition format (docs/observability.md). Off unless given.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
        /// Poll threads: each runs a whole switch (its own tables and connections, no lock
        /// between them) with a share of the ports, a port's frames handed between them as
        /// their destinations need (docs/performance.md). 1 runs the node on one thread, as
        /// before. Encrypted networks need 1.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=vxmesh::daemon::MAX_WORKERS as i64))]
        workers: u16,
        /// Early drop for containers that cannot keep up: while datagrams flow to a container,
        /// sample its UDP sockets (sock_diag in its namespace) every this many microseconds;
        /// to a port whose receiver is steadily slower than its senders, let through the share
        /// it takes and drop the rest at the switch (drop_receiver_full) instead of paying
        /// their whole path for the container's kernel to drop them. 0 turns it off.
        /// Containers without a named namespace (netns) are not watched.
        #[arg(long, value_name = "MICROS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
        receiver_watch_us: u64,
        /// Let AF_XDP containers keep their TCP offloads: for an endpoint with a named
        /// namespace (netns in the cluster file or store), the node turns TX checksum and TSO on in the container (every
        /// other segmentation offload off) instead of TX checksum, TSO and GSO off; the port
        /// attaches its XDP program in generic mode, takes the container's 64 KB TCP
        /// super-frames through a packet socket beside the ring (rx_gso_frames), and steers
        /// each flow to one CPU (RPS on the veth) so that it stays in order. TCP sent by such
        /// a container about 1.4x faster; received, 0.75-0.86x; a ping 15-25 us slower
        /// (docs/performance.md). Off by default, as the spec says.
        #[arg(long)]
        afxdp_offloads: bool,
        /// Defer the receive of AF_XDP containers' veths by this many microseconds: the
        /// kernel's interrupt coalescing for the veth's NAPI (gro_flush_timeout, with
        /// napi_defer_hard_irqs 2; put back when the port closes). A busy container's sends
        /// then only queue their frames, and a timer's poll takes them to the ring up to 64 at
        /// a time. With 200: 0.76-0.81x the CPU per packet of a 64-byte UDP flood, HTTP through
        /// a VIP 0.7-0.85x, a ping up to 1.5x slower; below 100 every figure is worse
        /// (scripts/napi-defer.sh, docs/performance.md). Needs native XDP (not with
        /// --afxdp-offloads). 0 (the default): no deferral.
        #[arg(long, value_name = "MICROS", default_value_t = 0,
              value_parser = clap::value_parser!(u64)
                  .range(0..=vswitch::port::afxdp::MAX_NAPI_DEFER.as_micros() as u64))]
        afxdp_napi_defer_us: u64,
        /// Send VXLAN from this many source ports, each inner flow from the one its hash
        /// picks, as the kernel's vxlan device does (the ports are the kernel's picks from
        /// its ephemeral range), so the underlay's routers (ECMP) and the peers' receive
        /// queues spread the flows. 0: every datagram from port 4789.
        #[arg(long, value_name = "N", default_value_t = vxmesh::node::VXLAN_SOURCE_PORTS as u16,
              value_parser = clap::value_parser!(u16).range(0..=vswitch::port::udp::socket::MAX_FLOW_SOURCES as i64))]
        vxlan_source_ports: u16,
        /// Pin the poll threads: worker K runs on the K-th CPU of the list (wrapping), e.g.
        /// "0,1" or "2-3". Without it the scheduler places them.
        #[arg(long, value_name = "LIST")]
        cpus: Option<String>,
        /// Log events of this level and above (error, warn, info, debug, trace). RUST_LOG,
        /// when set, overrides it (an EnvFilter directive, e.g. `vxmesh=debug`).
        #[arg(long, value_name = "LEVEL", default_value = "info",
              value_parser = clap::builder::PossibleValuesParser::new(vxmesh::log::LEVELS))]
        log_level: String,
        /// Log lines as text (under systemd: with journald priority prefixes) or one JSON
        /// object an event.
        #[arg(long, value_name = "FORMAT", default_value = "text",
              value_parser = clap::builder::PossibleValuesParser::new(["text", "json"]))]
        log_format: String,
    },
    /// For packaging: `generate man DIR` writes the man pages (vxmesh.1, vxmesh-run.1, ...)
    /// into DIR; `generate bash|zsh|fish` prints that shell's completions.
    #[command(hide = true)]
    Generate {
        /// man | bash | zsh | fish.
        what: String,
        /// man: the directory to write the pages into.
        dir: Option<PathBuf>,
    },
    /// The one-command tour (root: a real lab of two nodes in network namespaces; `--memory`:
    /// the switch in memory). Runs the `vxmesh-lab` program.
    #[command(disable_help_flag = true)]
    Demo {
        /// Arguments for `vxmesh-lab demo` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Build or remove a network-namespace lab for a cluster file: `lab up|down --config FILE
    /// [--prefix P]`. Runs the `vxmesh-lab` program.
    #[command(disable_help_flag = true)]
    Lab {
        /// Arguments for `vxmesh-lab lab` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// `network inspect NET` on a node; with --store: `network create NAME --subnet CIDR [--vni N]
    /// [--mtu M]`, `network rm NAME`, `network ls`.
    Network {
        /// inspect | create | rm | ls.
        action: String,
        /// The network.
        name: Option<String>,
        /// create: the subnet (CIDR).
        #[arg(long)]
        subnet: Option<String>,
        /// create: the VNI (default: the lowest free from 4096 up).
        #[arg(long)]
        vni: Option<u32>,
        /// create: the containers' IP MTU (default 1450; 1408 for an encrypted network).
        #[arg(long)]
        mtu: Option<u16>,
        /// create: an encrypted network (ESP between nodes; the store's `encryption` keys).
        #[arg(long)]
        encrypted: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// With --store: `encryption set KEY... [--transport esp|udp]` (replace the keys: the first
    /// sends, every one is accepted; base64 of 16 key and 4 salt bytes) and `encryption ls`
    /// (their ids and the transport).
    Encryption {
        /// set | ls.
        action: String,
        /// set: the keys, in order.
        keys: Vec<String>,
        /// set: how ESP travels between nodes, `esp` (IP protocol 50) or `udp` (ESP in UDP
        /// 4500); without it the store's stays.
        #[arg(long, value_parser = ["esp", "udp"])]
        transport: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// With --store: write a cluster file's objects into the store.
    Import {
        /// The cluster file.
        file: PathBuf,
    },
    /// With --store: print the store's state as a cluster file.
    Export,
    /// With --store: `node ls` (NAME VTEP STATUS ENDPOINTS); `node rm NAME` removes a node that
    /// is down, with its endpoints, ingresses and CNI address blocks.
    #[command(name = "node")]
    Nodes {
        /// ls | rm.
        action: String,
        /// rm: the node.
        name: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// With --store: `service create NAME --network NET --vip IP --port PROTO/PORT[:PUBLISHED][->TARGET]...
    /// [--scheduler S] [--backend ENDPOINT[=WEIGHT]]...`, `service update NAME --backend ...`,
    /// `service rm NAME`, `service ls`.
    Service {
        /// create | update | rm | ls.
        action: String,
        /// The service.
        name: Option<String>,
        /// create: its network.
        #[arg(long)]
        network: Option<String>,
        /// create: its VIP.
        #[arg(long)]
        vip: Option<std::net::Ipv4Addr>,
        /// create: a port, PROTO/PORT[:PUBLISHED][->TARGET] (repeat for more).
        #[arg(long = "port")]
        ports: Vec<String>,
        /// create: the scheduler (rr, wrr, lc, wlc, sh, mh).
        #[arg(long)]
        scheduler: Option<String>,
        /// create, update: a backend, ENDPOINT[=WEIGHT] (repeat; update replaces the list).
        #[arg(long = "backend")]
        backends: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// With --store: `endpoint add NAME --node N --network NET --ip IP [--mac MAC] --attach
    /// KIND:IF [--netns NS]`, `endpoint rm NAME`, `endpoint ls`.
    Endpoint {
        /// add | rm | ls.
        action: String,
        /// The endpoint.
        name: Option<String>,
        /// add: its network.
        #[arg(long)]
        network: Option<String>,
        /// add: its address.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// add: its MAC (default 02:42 followed by the address).
        #[arg(long)]
        mac: Option<String>,
        /// add: afxdp:IFNAME or tap:IFNAME.
        #[arg(long)]
        attach: Option<String>,
        /// add: the container's named namespace.
        #[arg(long)]
        netns: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show the forwarding database.
    Fdb {
        /// show.
        action: String,
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show load-balancer services and backends.
    Lb {
        /// show.
        action: String,
        /// Per-backend packet and byte counts.
        #[arg(long)]
        stats: bool,
        /// Per-backend rates.
        #[arg(long)]
        rate: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show tracked connections.
    Conntrack {
        /// show.
        action: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Per-port and per-stage counters.
    Stats {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Live per-stage trace of real packets.
    Trace {
        /// Packets to trace.
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Which packets (e.g. "tcp port 80 host 10.0.9.11").
        #[arg(long)]
        filter: Option<String>,
        /// JSON output (one object per stage record).
        #[arg(long)]
        json: bool,
    },
    /// Capture a port to a pcap file; with --stages, every step of traced packets to pcapng.
    Capture {
        /// The port (not with --stages).
        #[arg(long, required_unless_present = "stages", conflicts_with = "stages")]
        port: Option<String>,
        /// The pcap file (with --stages: pcapng).
        #[arg(short = 'w')]
        file: PathBuf,
        /// Packets to capture (with --stages: packets to follow, 100 if not given).
        #[arg(long)]
        count: Option<u64>,
        /// Follow packets through the pipeline instead: their bytes after every stage, one
        /// pcapng interface per stage (before and after NAT, encapsulation, encryption), the
        /// stage's decision in each packet's comment.
        #[arg(long)]
        stages: bool,
        /// With --stages: which packets (the trace filter language, e.g. "tcp port 80").
        #[arg(long, requires = "stages")]
        filter: Option<String>,
        /// With `--port underlay-esp`: the encrypted networks' traffic decrypted, as plain
        /// VXLAN datagrams (for debugging; docs/encryption.md).
        #[arg(long, conflicts_with = "stages")]
        decrypted: bool,
    },
    /// Re-read the cluster file and apply the difference.
    Reload,
    /// Simulate the whole cluster in this process (no root): every node of the file with its
    /// real pipeline, in-memory ports, a virtual underlay and a clock driven by the inputs'
    /// timestamps. Writes DIR/NODE-PORT.pcap (what each port sent) and DIR/NODE.json (every
    /// counter, the FDB, the connections); the same inputs and seed give the same bytes.
    Sim {
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
        /// A capture (pcap or pcapng, Ethernet) whose frames enter port PORT of node NODE at
        /// their timestamps; repeat for more (e.g. --input c11.pcap@n1/c11).
        #[arg(long = "input", value_name = "PCAP@NODE/PORT", required = true)]
        inputs: Vec<vxmesh::sim::io::InputSpec>,
        /// The output directory (created if missing; its files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The seed of every random choice (hash seeds, the ESP epoch).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop before each packet that matches (the trace filter language, e.g. "tcp port
        /// 80") and read commands on stdin: step, next, continue, show
        /// packet|fdb|conntrack|lb|stats, quit.
        #[arg(long = "break", value_name = "FILTER")]
        break_on: Option<String>,
        /// Also write DIR/stages.pcapng: the packets (all, or those of --break) after every
        /// stage, one interface per NODE/STAGE, the decision in each packet's comment.
        #[arg(long)]
        pcapng: bool,
        /// Connection-table entries of each node, as `vxmesh run --max-conns`.
        #[arg(long, default_value_t = vxmesh::node::MAX_CONNS, value_parser = daemon::options::parse_max_conns)]
        max_conns: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let control = || -> Result<PathBuf, ExitCode> {
        match (&cli.control, &cli.node) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(n)) => Ok(daemon::default_control(n)),
            (None, None) => {
                eprintln!("vxmesh: say which node: --node NAME or --control PATH");
                Err(ExitCode::from(EXIT_USAGE))
            }
        }
    };
    let usage = |msg: String| {
        eprintln!("vxmesh: {msg}");
        ExitCode::from(EXIT_USAGE)
    };
    let req = match &cli.cmd {
        Cmd::Demo { args } => return external("demo", args),
        Cmd::Generate { what, dir } => return generate(what, dir.as_deref()),
        Cmd::Lab { args } => return external("lab", args),
        Cmd::Sim {
            config,
            inputs,
            out,
            seed,
            break_on,
            pcapng,
            max_conns,
        } => {
            let opts = vxmesh::sim::cli::SimOptions {
                config: config.clone(),
                inputs: inputs.clone(),
                out: out.clone(),
                seed: *seed,
                break_on: break_on.clone(),
                pcapng: *pcapng,
                max_conns: *max_conns,
            };
            return match vxmesh::sim::cli::run(&opts) {
                Ok(s) => {
                    let stages = match s.stage_packets {
                        Some(n) => {
                            format!(", {n} stage records in {}", vxmesh::sim::cli::STAGES_FILE)
                        }
                        None => String::new(),
                    };
                    let quit = if s.quit { " (quit before the end)" } else { "" };
                    eprintln!(
                        "sim: {} input frames run{quit}, {} frames sent by the ports{stages}; outputs in {}",
                        s.frames,
                        s.sent,
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) if e.is::<vxmesh::sim::cli::UsageError>() => usage(format!("sim: {e:#}")),
                Err(e) => {
                    eprintln!("vxmesh sim: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::Run {
            config,
            vtep,
            node_ttl,
            busy_poll_us,
            busy_poll_max_us,
            max_conns,
            lb_timeouts,
            fdb_aging,
            control_group,
            dns_upstream,
            poll_priority,
            receiver_watch_us,
            afxdp_offloads,
            afxdp_napi_defer_us,
            vxlan_source_ports,
            metrics,
            workers,
            cpus,
            log_level,
            log_format,
        } => {
            let format = log_format.parse().unwrap_or_default();
            if let Err(e) = vxmesh::log::init(log_level, format) {
                return usage(format!("run: {e}"));
            }
            let dns_upstream = match dns_upstream
                .as_deref()
                .map(daemon::dns_relay::parse_upstreams)
                .transpose()
            {
                Ok(u) => u.unwrap_or_default(),
                Err(e) => return usage(format!("run: {e}")),
            };
            let Some(node) = cli.node.as_deref() else {
                return usage("run: --node NAME is required".into());
            };
            if *afxdp_offloads && *afxdp_napi_defer_us > 0 {
                return usage(
                    "run: --afxdp-napi-defer-us defers native XDP's receive, and --afxdp-offloads runs generic XDP: give one of them".into(),
                );
            }
            let cpus = match cpus.as_deref().map(daemon::parse_cpus).transpose() {
                Ok(c) => c.unwrap_or_default(),
                Err(e) => return usage(format!("run: {e}")),
            };
            let source = match (config, &cli.store, vtep) {
                (Some(c), None, _) => daemon::Source::File(c.clone()),
                (None, Some(url), Some(vtep)) => {
                    daemon::Source::Store(vxmesh::store::watch::StoreOpts {
                        url: url.clone(),
                        node: node.into(),
                        vtep: *vtep,
                        ttl: std::time::Duration::from_secs(*node_ttl),
                    })
                }
                (None, Some(_), None) => {
                    return usage("run --store: --vtep IP (this node's VTEP) is required".into());
                }
                _ => {
                    return usage(
                        "run: --config FILE, or --store URL --vtep IP, says where the cluster is"
                            .into(),
                    );
                }
            };
            return match daemon::run(
                source,
                node,
                cli.control.clone(),
                daemon::RunOptions {
                    busy_poll: *busy_poll_us,
                    busy_poll_max: *busy_poll_max_us,
                    tables: vxmesh::node::TableOpts {
                        max_conns: *max_conns,
                        timeouts: lb_timeouts.unwrap_or_default(),
                        fdb_aging_secs: *fdb_aging,
                    },
                    control_group: control_group.clone(),
                    poll_priority: *poll_priority,
                    dns_upstream,
                    metrics: *metrics,
                    workers: usize::from(*workers),
                    cpus,
                    receiver_watch: std::time::Duration::from_micros(*receiver_watch_us),
                    afxdp_offloads: *afxdp_offloads,
                    afxdp_napi_defer: std::time::Duration::from_micros(*afxdp_napi_defer_us),
                    vxlan_source_ports: usize::from(*vxlan_source_ports),
                },
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // The command's result, on stderr as every command's; under journald with
                    // the error priority, so `journalctl -p err` shows why the node stopped.
                    let prio = if vxmesh::log::journald_stderr() {
                        "<3>"
                    } else {
                        ""
                    };
                    eprintln!("{prio}vxmesh: {e:#}");
                    if e.downcast_ref::<ConfigError>().is_some() {
                        ExitCode::from(EXIT_USAGE)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            };
        }
        Cmd::Network {
            action,
            name,
            subnet,
            vni,
            mtu,
            encrypted,
            json,
        } => {
            if action == "inspect" {
                let Some(name) = name else {
                    return usage("network inspect: which network? `network inspect NET`".into());
                };
                Request::NetworkInspect {
                    network: name.clone(),
                    json: *json,
                }
            } else {
                let cmd = match (action.as_str(), name, subnet) {
                    ("create", Some(name), Some(subnet)) => Admin::NetworkCreate {
                        name: name.clone(),
                        subnet: subnet.clone(),
                        vni: *vni,
                        mtu: *mtu,
                        encrypted: *encrypted,
                    },
                    ("rm", Some(name), _) => Admin::NetworkRm(name.clone()),
                    ("ls", None, _) => Admin::NetworkLs { json: *json },
                    _ => {
                        return usage(format!(
                            "network {action}: the commands are `network inspect NET`, and with --store `network create NAME --subnet CIDR [--vni N] [--mtu M] [--encrypted]`, `network rm NAME`, `network ls`"
                        ));
                    }
                };
                return admin(&cli.store, cmd);
            }
        }
        Cmd::Encryption {
            action,
            keys,
            transport,
            json,
        } => {
            let cmd = match action.as_str() {
                "set" => Admin::EncryptionSet {
                    keys: keys.clone(),
                    transport: transport.clone(),
                },
                "ls" if keys.is_empty() && transport.is_none() => {
                    Admin::EncryptionLs { json: *json }
                }
                _ => {
                    return usage(format!(
                        "encryption {action}: the commands are `encryption set KEY... [--transport esp|udp]` and `encryption ls` (with --store)"
                    ));
                }
            };
            return admin(&cli.store, cmd);
        }
        Cmd::Import { file } => return admin(&cli.store, Admin::Import(file.clone())),
        Cmd::Export => return admin(&cli.store, Admin::Export),
        Cmd::Nodes { action, name, json } => {
            let cmd = match (action.as_str(), name) {
                ("ls", None) => Admin::NodeLs { json: *json },
                ("rm", Some(name)) => Admin::NodeRm(name.clone()),
                _ => {
                    return usage(format!(
                        "node {action}: the commands are `node ls` and `node rm NAME` (with --store)"
                    ));
                }
            };
            return admin(&cli.store, cmd);
        }
        Cmd::Service {
            action,
            name,
            network,
            vip,
            ports,
            scheduler,
            backends,
            json,
        } => {
            let cmd = match (action.as_str(), name) {
                ("create", Some(name)) => {
                    let (Some(network), Some(vip)) = (network, vip) else {
                        return usage(
                            "service create: --network NET and --vip IP are required".into(),
                        );
                    };
                    Admin::ServiceCreate {
                        name: name.clone(),
                        network: network.clone(),
                        vip: *vip,
                        ports: ports.clone(),
                        scheduler: scheduler.clone(),
                        backends: backends.clone(),
                    }
                }
                ("update", Some(name)) => Admin::ServiceUpdate {
                    name: name.clone(),
                    backends: backends.clone(),
                },
                ("rm", Some(name)) => Admin::ServiceRm(name.clone()),
                ("ls", None) => Admin::ServiceLs { json: *json },
                _ => {
                    return usage(format!(
                        "service {action}: the commands are (with --store) `service create NAME --network NET --vip IP --port PROTO/PORT...`, `service update NAME --backend E...`, `service rm NAME`, `service ls`"
                    ));
                }
            };
            return admin(&cli.store, cmd);
        }
        Cmd::Endpoint {
            action,
            name,
            network,
            ip,
            mac,
            attach,
            netns,
            json,
        } => {
            let cmd = match (action.as_str(), name) {
                ("add", Some(name)) => {
                    let (Some(node), Some(network), Some(ip)) = (&cli.node, network, ip) else {
                        return usage(
                            "endpoint add: --node N, --network NET and --ip IP are required".into(),
                        );
                    };
                    Admin::EndpointAdd {
                        name: name.clone(),
                        node: node.clone(),
                        network: network.clone(),
                        ip: *ip,
                        mac: mac.clone(),
                        attach: attach.clone(),
                        netns: netns.clone(),
                    }
                }
                ("rm", Some(name)) => Admin::EndpointRm(name.clone()),
                ("ls", None) => Admin::EndpointLs { json: *json },
                _ => {
                    return usage(format!(
                        "endpoint {action}: the commands are (with --store) `endpoint add NAME --node N --network NET --ip IP ...`, `endpoint rm NAME`, `endpoint ls`"
                    ));
                }
            };
            return admin(&cli.store, cmd);
        }
        Cmd::Fdb {
            action,
            network,
            json,
        } => {
            if action != "show" {
                return usage(format!("fdb {action}: the command is `fdb show`"));
            }
            Request::FdbShow {
                network: network.clone(),
                json: *json,
            }
        }
        Cmd::Lb {
            action,
            stats,
            rate,
            json,
        } => {
            if action != "show" {
                return usage(format!("lb {action}: the command is `lb show`"));
            }
            Request::LbShow {
                stats: *stats,
                rate: *rate,
                json: *json,
            }
        }
        Cmd::Conntrack { action, json } => {
            if action != "show" {
                return usage(format!(
                    "conntrack {action}: the command is `conntrack show`"
                ));
            }
            Request::ConntrackShow { json: *json }
        }
        Cmd::Stats { json } => Request::Stats { json: *json },
        Cmd::Trace {
            count,
            filter,
            json,
        } => Request::Trace {
            count: *count,
            filter: filter.clone(),
            json: *json,
        },
        Cmd::Capture {
            port,
            file,
            count,
            decrypted,
            stages,
            filter,
        } => {
            let file = match std::path::absolute(file) {
                Ok(f) => f,
                Err(e) => return usage(format!("capture: {}: {e}", file.display())),
            };
            Request::Capture {
                port: port.clone().unwrap_or_default(),
                file,
                count: *count,
                decrypted: *decrypted,
                stages: *stages,
                filter: filter.clone(),
            }
        }
        Cmd::Reload => Request::Reload,
    };
    let path = match control() {
        Ok(p) => p,
        Err(code) => return code,
    };
    ExitCode::from(daemon::client(&path, &req))
}

/// `vxmesh --version`: the version, the git revision and the parts compiled in.
fn version_text() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(vxmesh::version::long);
    TEXT.as_str()
}

/// `vxmesh generate`: the man pages into a directory, or a shell's completions on stdout.
fn generate(what: &str, dir: Option<&std::path::Path>) -> ExitCode {
    let mut cmd = Cli::command();
    let shell = match what {
        "man" => {
            let Some(dir) = dir else {
                eprintln!("vxmesh generate man: the directory to write into is missing");
                return ExitCode::from(EXIT_USAGE);
            };
            return match clap_mangen::generate_to(cmd, dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vxmesh generate man: {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            };
        }
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        _ => {
            eprintln!("vxmesh generate {what}: expected man, bash, zsh or fish");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    clap_complete::generate(shell, &mut cmd, "vxmesh", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Run a store command: needs `--store URL`.
fn admin(store: &Option<String>, cmd: Admin) -> ExitCode {
    let Some(url) = store else {
        eprintln!("vxmesh: this command works on the cluster store: give --store etcd://HOST:PORT");
        return ExitCode::from(EXIT_USAGE);
    };
    let o = vxmesh::store::admin::run(url, cmd);
    print!("{}", o.out);
    eprint!("{}", o.err);
    ExitCode::from(o.code)
}

/// The program that carries `vxmesh demo` and `vxmesh lab` (package `vxmesh-lab`): the node
/// does not depend on the lab, so these two are external subcommands, as git and cargo have them.
const LAB_PROGRAM: &str = "vxmesh-lab";

/// Run `vxmesh-lab SUB ARGS` in place of this process (its exit code and signals are the
/// user's), found next to this executable, else on PATH; exit 2 with one line if it is missing.
fn external(sub: &str, args: &[OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let Some(prog) = lab_program() else {
        eprintln!(
            "vxmesh {sub}: needs the {LAB_PROGRAM} program (next to vxmesh or on PATH), which is not installed; `cargo build --workspace` builds both"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let err = std::process::Command::new(&prog).arg(sub).args(args).exec();
    eprintln!("vxmesh {sub}: cannot run {}: {err}", prog.display());
    ExitCode::from(EXIT_USAGE)
}

/// `vxmesh-lab` next to this executable, else the first on PATH.
fn lab_program() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(LAB_PROGRAM));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(LAB_PROGRAM));
    beside.into_iter().chain(on_path).find(|p| runnable(p))
}
