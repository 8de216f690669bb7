//! Stepping through the simulated pipelines (`vxmesh sim --break FILTER`), as a debugger steps
//! through code. Every node's tracer marks the packets that match the filter (the `trace`
//! language; an underlay datagram is matched by its inner frame) with snapshots on, and the
//! switch's step hook (`vswitch::switch::step`) hands each step of a marked packet here while
//! the next step has not run: the debugger prints it and reads commands.
//!
//! Stops: before a marked packet's first stage (its receive on a port), then, while stepping,
//! after every step (so before the next): the stage, its decision, the table entry it used and
//! the packet's headers before and after. Commands:
//!
//! ```text
//! step | s          run one stage and stop again
//! next | n          run this packet to the end; stop at the next matching packet
//! continue | c      run to the end of the inputs without stopping
//! show packet|fdb|conntrack|lb|stats
//! help | h | ?      the commands
//! quit | q          stop the simulation (the outputs hold what ran so far)
//! ```
//!
//! Scriptable: commands come from stdin one per line; the prompt and help appear only when
//! stdin is a terminal, and the end of stdin means `continue`.
//!
//! The same hook writes the per-stage capture (`--pcapng`): every step of every marked packet,
//! stopped at or not.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use lb::LbStage;
use vswitch::trace::{Summary, TraceFilter, TraceRecord};
use vswitch::{StageHandle, Switch};

use super::Sim;
use crate::pcapng::StageWriter;

/// The commands, for `help` and a terminal's first stop.
pub const HELP: &str = "\
commands: step (s): run one stage | next (n): to the next matching packet | \
continue (c): run to the end | show packet|fdb|conntrack|lb|stats | quit (q)";

/// How the debugger goes on after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Stop after every step of a marked packet.
    Step,
    /// Stop at the next marked packet's receive.
    Next,
    /// Never stop again.
    Run,
    /// Stop the simulation.
    Quit,
}

/// Where the debugger reads commands and writes what it shows.
pub struct Console {
    /// The commands.
    pub input: Box<dyn BufRead + Send>,
    /// What it shows.
    pub out: Box<dyn Write + Send>,
    /// A terminal: a prompt, and the commands at the first stop.
    pub interactive: bool,
}

/// A per-stage capture being written.
pub type Stages = StageWriter<Box<dyn Write + Send>>;

/// The debugger's state, shared by the hooks of every node.
struct State {
    stages: Option<Stages>,
    stages_error: Option<anyhow::Error>,
    input: Box<dyn BufRead + Send>,
    out: Box<dyn Write + Send>,
    interactive: bool,
    mode: Mode,
    /// The last snapshot of each marked packet, by (node, trace id).
    last: HashMap<(usize, u32), Box<[u8]>>,
    /// The packet stopped at: node and trace id.
    current: Option<(usize, u32)>,
    /// Stops so far.
    stops: u64,
    helped: bool,
}

/// The stepping debugger of a simulation.
#[derive(Clone)]
pub struct Debugger {
    state: Arc<Mutex<State>>,
}

impl Debugger {
    /// Mark the packets matching `filter` on every node of `sim`: with a `console`, stop on
    /// them and take its commands; with `stages`, write each of their steps there.
    pub fn attach(
        sim: &mut Sim,
        filter: TraceFilter,
        console: Option<Console>,
        stages: Option<Stages>,
    ) -> Debugger {
        let (mode, console) = match console {
            Some(c) => (Mode::Next, c),
            None => (
                Mode::Run,
                Console {
                    input: Box::new(std::io::empty()),
                    out: Box::new(std::io::sink()),
                    interactive: false,
                },
            ),
        };
        let state = Arc::new(Mutex::new(State {
            stages,
            stages_error: None,
            input: console.input,
            out: console.out,
            interactive: console.interactive,
            mode,
            last: HashMap::new(),
            current: None,
            stops: 0,
            helped: false,
        }));
        for (i, n) in sim.nodes.iter_mut().enumerate() {
            let name = n.name.clone();
            let lb = n.node.lb_stage();
            let st = state.clone();
            n.node.sw.env.tracer.set_snapshots(true);
            n.node.sw.env.tracer.arm(u32::MAX, filter.clone());
            n.node.sw.set_step_hook(Some(Box::new(move |sw, recs| {
                let mut st = st.lock().unwrap_or_else(|e| e.into_inner());
                for r in recs {
                    st.on_record(i, &name, sw, lb, r);
                }
            })));
        }
        Debugger { state }
    }

    /// Whether the user quit.
    pub fn quit(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.mode == Mode::Quit)
            .unwrap_or(true)
    }

    /// Finish the per-stage capture, if any: packets written, or the first error.
    pub fn finish(&self) -> anyhow::Result<Option<u64>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = st.stages_error.take() {
            return Err(e);
        }
        match st.stages.take() {
            Some(w) => {
                let n = w.written();
                w.finish()?;
                Ok(Some(n))
            }
            None => Ok(None),
        }
    }
}

impl State {
    fn on_record(
        &mut self,
        node: usize,
        name: &str,
        sw: &Switch,
        lb: StageHandle<LbStage>,
        r: TraceRecord,
    ) {
        if let Some(w) = &mut self.stages
            && self.stages_error.is_none()
        {
            let iface = format!("{name}/{}", r.stage);
            if let Err(e) = w.record(&iface, sw.env.now.0, &r, &decision(sw, &r)) {
                self.stages_error = Some(e.context("writing the per-stage capture"));
            }
        }
        if self.mode == Mode::Run || self.mode == Mode::Quit {
            return;
        }
        let key = (node, r.id);
        let before = match &r.data {
            Some(d) => self.last.insert(key, d.clone()),
            None => self.last.get(&key).cloned(),
        };
        let stop = match self.mode {
            Mode::Quit | Mode::Run => false,
            Mode::Next => r.stage == "rx",
            Mode::Step => true,
        };
        if !stop {
            return;
        }
        self.current = Some(key);
        self.stops += 1;
        let t = sw.env.now.0;
        let mut o = String::new();
        if r.stage == "rx" {
            let _ = writeln!(
                o,
                "\nbreak {}: node {name}, packet {} at {}.{:09}: {}",
                self.stops,
                r.id,
                t / 1_000_000_000,
                t % 1_000_000_000,
                r.detail
            );
            if let Some(d) = &r.data {
                let _ = writeln!(o, "  headers  {}", headers(d));
            }
        } else {
            let _ = writeln!(
                o,
                "{name} {:<12} {:<24} {}",
                r.stage,
                decision(sw, &r),
                r.detail
            );
            match (&before, &r.data) {
                (Some(b), Some(a)) if b == a => {
                    let _ = writeln!(o, "  headers  {} (unchanged)", headers(a));
                }
                (Some(b), Some(a)) => {
                    let _ = writeln!(o, "  before   {}", headers(b));
                    let _ = writeln!(o, "  after    {}", headers(a));
                }
                (None, Some(a)) => {
                    let _ = writeln!(o, "  after    {}", headers(a));
                }
                _ => {}
            }
        }
        self.print(&o);
        self.prompt(sw, lb);
    }

    fn print(&mut self, s: &str) {
        let _ = self.out.write_all(s.as_bytes());
        let _ = self.out.flush();
    }

    /// Read commands until one that goes on.
    fn prompt(&mut self, sw: &Switch, lb: StageHandle<LbStage>) {
        if self.interactive && !self.helped {
            self.helped = true;
            self.print(&format!("{HELP}\n"));
        }
        loop {
            if self.interactive {
                self.print("(vxmesh-sim) ");
            }
            let mut line = String::new();
            match self.input.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    // The end of the script: run to the end.
                    self.mode = Mode::Run;
                    return;
                }
                Ok(_) => {}
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if !self.interactive && !words.is_empty() {
                self.print(&format!("> {}\n", words.join(" ")));
            }
            match words.as_slice() {
                [] => continue,
                ["step" | "s"] => self.mode = Mode::Step,
                ["next" | "n"] => self.mode = Mode::Next,
                ["continue" | "c"] => self.mode = Mode::Run,
                ["quit" | "q"] => self.mode = Mode::Quit,
                ["help" | "h" | "?"] => {
                    self.print(&format!("{HELP}\n"));
                    continue;
                }
                ["show", what] => {
                    let text = self.show(what, sw, lb);
                    self.print(&text);
                    continue;
                }
                _ => {
                    self.print(&format!("unknown command {:?}; {HELP}\n", line.trim()));
                    continue;
                }
            }
            return;
        }
    }

    fn show(&self, what: &str, sw: &Switch, lb: StageHandle<LbStage>) -> String {
        match what {
            "packet" => match self.current.and_then(|k| self.last.get(&k)) {
                Some(d) => format!("{}\n{}", headers(d), hexdump(d)),
                None => "no packet\n".into(),
            },
            "fdb" => crate::show::fdb(sw, None),
            "stats" => crate::show::stats(sw),
            "conntrack" => {
                let conns = sw.stage(lb).lb.conns(sw.env.now);
                if conns.is_empty() {
                    "no connections\n".into()
                } else {
                    lb::listing::format_conns(&conns)
                }
            }
            "lb" => lb::listing::format_services(
                &sw.stage(lb).lb.services(),
                lb::listing::ListMode::Stats,
            ),
            other => format!("show {other:?}: show packet|fdb|conntrack|lb|stats\n"),
        }
    }
}

/// A frame's headers on one line (an underlay packet's outer ones, then its length).
fn headers(frame: &[u8]) -> String {
    format!("{}, {} bytes", Summary::of(frame), frame.len())
}

/// The decision of a record, as `trace` prints it.
fn decision(sw: &Switch, r: &TraceRecord) -> String {
    crate::show::decision(sw, r)
}

/// `frame` as 16 bytes a line, with offsets.
fn hexdump(frame: &[u8]) -> String {
    let mut o = String::new();
    for (k, line) in frame.chunks(16).enumerate() {
        let _ = write!(o, "  {:04x} ", k * 16);
        for b in line {
            let _ = write!(o, " {b:02x}");
        }
        o.push('\n');
    }
    o
}
