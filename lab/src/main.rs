//! `vxmesh-lab`: the `vxmesh demo` and `vxmesh lab up|down` commands of SPEC.md. The `vxmesh`
//! program runs this one for them (with the same arguments), so its messages speak as `vxmesh`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vxmesh::config::Cluster;
use vxmesh_lab::lab::Lab;

/// Exit code for usage and configuration errors (SPEC.md).
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vxmesh-lab",
    version,
    about = "vxmesh on one machine: the demo and network-namespace labs (run as `vxmesh demo`, `vxmesh lab`)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The one-command tour (root: a real lab of two nodes in network namespaces).
    Demo {
        /// The in-memory tour of the switch instead (no root needed).
        #[arg(long)]
        memory: bool,
    },
    /// Build or remove a network-namespace lab for a cluster file.
    Lab {
        /// up or down.
        action: String,
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
        /// Prefix of every namespace the lab creates.
        #[arg(long, default_value = "vxm-")]
        prefix: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Demo { memory } => ExitCode::from(vxmesh_lab::demo::run(memory)),
        Cmd::Lab {
            action,
            config,
            prefix,
        } => lab_cmd(&action, &config, &prefix),
    }
}

fn lab_cmd(action: &str, config: &Path, prefix: &str) -> ExitCode {
    let cluster = match Cluster::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vxmesh: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let lab = Lab::new(&cluster, prefix);
    let r = match action {
        "up" => lab.up().map(|()| print!("{}", lab.describe())),
        "down" => lab.down(),
        other => {
            eprintln!("vxmesh: lab {other}: the command is `lab up` or `lab down`");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vxmesh: lab {action}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
