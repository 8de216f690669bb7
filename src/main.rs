//! The `vxmesh` command line (SPEC.md, "The command line").

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for usage and configuration errors (SPEC.md).
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vxmesh",
    version,
    about = "Docker Swarm's overlay dataplane (L2 switch, VXLAN, IPVS-style load balancer), in userspace"
)]
struct Cli {
    /// Talk to the node with this name (control socket /run/vxmesh/NAME.sock).
    #[arg(long, global = true)]
    node: Option<String>,
    /// Talk to the node behind this control socket.
    #[arg(long, global = true)]
    control: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run this node's switch in the foreground.
    Run {
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
    },
    /// The one-command tour.
    Demo,
    /// Build or remove a network-namespace lab for a cluster file.
    Lab {
        /// up or down.
        action: String,
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Show a network: VNI, subnet, MTU, peers, endpoints.
    Network {
        /// inspect.
        action: String,
        /// The network.
        name: String,
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
    },
    /// Capture a port to a pcap file.
    Capture {
        /// The port.
        #[arg(long)]
        port: String,
        /// The pcap file.
        #[arg(short = 'w')]
        file: PathBuf,
        /// Packets to capture.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Re-read the cluster file and apply the difference.
    Reload,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo => {
            print!("{}", vxmesh::demo::memory_tour());
            ExitCode::SUCCESS
        }
        other => {
            let what = match other {
                Cmd::Run { .. } => "run",
                Cmd::Lab { .. } => "lab",
                Cmd::Network { .. } => "network inspect",
                Cmd::Fdb { .. } => "fdb show",
                Cmd::Lb { .. } => "lb show",
                Cmd::Conntrack { .. } => "conntrack show",
                Cmd::Stats { .. } => "stats",
                Cmd::Trace { .. } => "trace",
                Cmd::Capture { .. } => "capture",
                Cmd::Reload => "reload",
                Cmd::Demo => unreachable!("handled above"),
            };
            eprintln!(
                "vxmesh: `{what}` is not available in this build: the node daemon (AF_XDP/TAP ports, control socket) is not built yet; `vxmesh demo` runs the switch in memory"
            );
            ExitCode::from(EXIT_USAGE)
        }
    }
}
