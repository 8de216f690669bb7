//! `vxmesh sim`: read the cluster file and the inputs, run them through the simulated cluster
//! (stepping with `--break`), write the outputs, print a summary.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use vswitch::trace::TraceFilter;

use super::Sim;
use super::debug::{Console, Debugger};
use super::io::{self, InputSpec, PcapSink};
use crate::config::Cluster;
use crate::pcapng::StageWriter;

/// Name of the per-stage capture in the output directory (`--pcapng`).
pub const STAGES_FILE: &str = "stages.pcapng";

/// What `vxmesh sim` was asked to do.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The cluster file.
    pub config: PathBuf,
    /// The inputs.
    pub inputs: Vec<InputSpec>,
    /// The output directory.
    pub out: PathBuf,
    /// The seed of every random choice.
    pub seed: u64,
    /// Stop on packets matching this (the trace filter language).
    pub break_on: Option<String>,
    /// Write the per-stage capture `DIR/stages.pcapng`.
    pub pcapng: bool,
    /// Connection-table entries of each node (as `vxmesh run --max-conns`).
    pub max_conns: usize,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSummary {
    /// Input frames run.
    pub frames: usize,
    /// Frames the ports sent, all nodes.
    pub sent: u64,
    /// Packets in the per-stage capture.
    pub stage_packets: Option<u64>,
    /// Whether the user quit before the end.
    pub quit: bool,
    /// The virtual time of the last input.
    pub end_ns: u64,
}

/// A mistake in what `vxmesh sim` was given (the cluster file, an input, the filter): the
/// command exits 2 for it, as for any usage or configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Run `opts`; the debugger (with `--break`) reads stdin and writes stdout.
pub fn run(opts: &SimOptions) -> anyhow::Result<SimSummary> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let console = Console {
        input: Box::new(std::io::BufReader::new(stdin)),
        out: Box::new(std::io::stdout()),
        interactive,
    };
    run_with(opts, console)
}

/// Run `opts` with the debugger's commands and output on `console`.
pub fn run_with(opts: &SimOptions, console: Console) -> anyhow::Result<SimSummary> {
    let usage = |e: anyhow::Error| anyhow::Error::new(UsageError(format!("{e:#}")));
    let cluster = Cluster::load(&opts.config).map_err(|e| usage(e.into()))?;
    let filter = opts
        .break_on
        .as_deref()
        .map(TraceFilter::parse)
        .transpose()
        .context("--break")
        .map_err(usage)?;
    let mut sim = Sim::with_max_conns(&cluster, opts.seed, opts.max_conns)?;
    let inputs = io::read_inputs(&sim, &opts.inputs).map_err(usage)?;
    let mut sink = PcapSink::create(&opts.out, &sim)?;
    let stages = if opts.pcapng {
        let path = opts.out.join(STAGES_FILE);
        let f = std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?;
        let w: Box<dyn std::io::Write + Send> = Box::new(std::io::BufWriter::new(f));
        Some(StageWriter::new(w)?)
    } else {
        None
    };
    let debugger = match (&filter, stages) {
        (None, None) => None,
        (f, stages) => Some(Debugger::attach(
            &mut sim,
            f.clone().unwrap_or_default(),
            f.is_some().then_some(console),
            stages,
        )),
    };
    let mut frames = 0;
    let mut quit = false;
    for f in &inputs {
        if debugger.as_ref().is_some_and(Debugger::quit) {
            quit = true;
            break;
        }
        sim.input(f.node, f.port, f.time, &f.data, &mut sink)?;
        frames += 1;
    }
    let stage_packets = match &debugger {
        Some(d) => d.finish()?,
        None => None,
    };
    sink.finish()?;
    io::write_stats(&opts.out, &mut sim)?;
    let sent = sim.stats.iter().map(|s| s.frames_out).sum();
    Ok(SimSummary {
        frames,
        sent,
        stage_packets,
        quit,
        end_ns: sim.now.0,
    })
}
