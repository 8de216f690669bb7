//! The node: turns this node's part of the cluster file into a running switch.
//!
//! Two steps. [`Plan::of`] reads the checked [`Cluster`] and computes, without touching the
//! system, everything the node's dataplane holds: the networks it serves (with their ARP tables
//! and peer VTEPs), the static FDB entries (every other node's endpoints and load-balancer MACs
//! point at that node's VTEP, this node's endpoints at their ports), the load-balancer services
//! (each VIP port, and on a node with an ingress each published port, source-NATed to the node's
//! load-balancer address), and the ports to open. [`Node::build`] then assembles the pipeline
//! with the UDP underlay and takes the plan as its first change (the ports opened: AF_XDP, TAP):
//!
//! ```text
//! container port: l2-parse ─► l2-learn ─► arp-proxy ─► dns ─► lb-nat ─► own-addr ─► l2-fwd
//! underlay:       vxlan-decap ─► l2-parse ─► l2-learn ─► lb-nat ─► own-addr ─► l2-fwd
//! ingress:        l2-parse ─► l2-learn ─► arp-proxy ─► dns ─► lb-nat ─► own-addr ─► l2-fwd
//!
//! (`l2-parse` includes port security: each endpoint port's guard is set when it attaches.)
//! ```
//!
//! Each overlay network's resolver address is in its ARP table and the switch's own MACs, and
//! its names ([`DnsPlan`]: endpoints and aliases, services, `tasks.SERVICE`, and back) are a
//! table of the `dns` stage, built off the poll thread like the ARP tables.
//!
//! Every later change (a reloaded file, the store) goes the same way: [`Change::prepare`] plans
//! it against the plan in force off the poll thread (ids kept, tables built, new ports opened),
//! and [`Node::begin`]/[`Node::step`] commit it between batches, in bounded steps, whole or not
//! at all (`node/change.rs`, `node/apply.rs`). Only this node's own VTEP address needs a restart.
//!
//! Here the [`Node`] itself; the plan in `node/plan.rs`, the ports in `node/ports.rs`, and a node
//! on several poll threads (`vxmesh run --workers`, one `Node` per worker) in `node/workers.rs`.

use std::sync::Arc;

use anyhow::Context;

use lb::{Balancer, BalancerConfig, LbStage};
use vswitch::{Env, FdbConfig, OwnAddr, PortRole, StageHandle, StageIdx, Switch};

use crate::config::Cluster;

mod apply;
mod change;
mod delta;
pub mod ifsaved;
mod plan;
mod ports;
pub mod receivers;
pub mod workers;

pub use apply::{Commit, STEP_ENTRIES};
pub use change::{Change, Leftovers};
pub use delta::PlanDiff;
pub use plan::{
    BackendPlan, DestPlan, DnsPlan, INGRESS_MTU, INGRESS_VNI, NetPlan, Plan, PortKind, PortPlan,
    ServicePlan,
};
pub use ports::{MemPorts, PortOpener, SystemPorts, VXLAN_SOURCE_PORTS};

/// Name of the underlay port.
pub const UNDERLAY_PORT: &str = "underlay";
/// Name of the encrypted underlay port (ESP).
pub const ESP_PORT: &str = "underlay-esp";
/// Name of the encrypted underlay port of ESP in UDP (RFC 3948, port 4500).
pub const ESP_UDP_PORT: &str = "underlay-esp-udp";

/// A node's running dataplane: the switch and the plan in force.
pub struct Node {
    /// The switch.
    pub sw: Switch,
    /// The plan in force (shared with the control side, which computes the next change
    /// against it off the packet thread).
    pub plan: Arc<Plan>,
    /// The cluster file in force.
    pub cluster: Cluster,
    /// The `lb-nat` stage, for the control plane.
    lb: StageHandle<LbStage>,
    /// The `own-addr` stage: its MACs and ingress ports follow the plan.
    own: StageHandle<OwnAddr>,
    /// The `dns` stage: its tables and port addresses follow the plan.
    dns: StageHandle<vswitch::dns::Dns>,
    /// The receive path of a local port (endpoints and ingresses alike).
    local_path: Vec<StageIdx>,
    /// The ESP stages, their security associations following the plan's keys and peers.
    esp: EspStages,
    /// When the load balancer's rates are next estimated ([`Node::housekeeping`]).
    next_estimate: vswitch::Time,
}

/// The encrypted underlay's stages and port.
struct EspStages {
    decrypt: StageHandle<esp::EspDecrypt>,
    encrypt: StageHandle<esp::EspEncrypt>,
    /// The ESP port, if the node could open one (root: a raw socket); a change that serves an
    /// encrypted network without the transport's port is refused.
    port: Option<vswitch::PortId>,
    /// The ESP-in-UDP port (4500), if the node could open one.
    udp_port: Option<vswitch::PortId>,
    /// Why a port is missing.
    missing: String,
    /// The epoch new outbound security associations start at (`esp` crate: with the sequence
    /// number it makes each packet's IV; never used twice for one key and peer): unix seconds
    /// at start, or past the last one a previous process of this node reserved
    /// ([`Node::reserve_esp_epochs`]), one more for every change that makes new ones.
    epoch: u32,
    /// The last epoch reserved in the state file (`None`: none kept, the node's first).
    reserved: Option<(std::path::PathBuf, u32)>,
    /// Frames the decrypted capture still takes.
    capture_left: u64,
}

/// Epochs an ESP state file reserves at a time ([`Node::reserve_esp_epochs`]).
const ESP_EPOCH_RESERVE: u32 = 4096;

/// Seconds since the Unix epoch, as an ESP epoch.
fn unix_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Housekeeping period: FDB aging, connection expiry, rate estimation ([`Node::housekeeping`]).
/// It is also the longest sleep of an idle poll thread
/// (`vswitch::worker::PollConfig::housekeeping`), so housekeeping runs on an idle node too.
pub const HOUSEKEEPING: std::time::Duration = std::time::Duration::from_millis(100);
/// Rate estimator period (IPVS estimates every 2 s).
pub const ESTIMATE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// FDB entries examined per housekeeping tick.
pub const FDB_AGE_BUDGET: usize = 4096;
/// Connection-table slots examined per housekeeping tick.
pub const CONN_EXPIRE_BUDGET: usize = 4096;

/// The packet buffer size of a node serving `plan`: TAPs with offloads, and AF_XDP containers
/// in named namespaces, hand over 64 KB TCP super-frames, so every buffer of a node with such
/// endpoints holds one (buffers move between batches); the others keep 2 KB buffers, and such
/// an endpoint added to one later runs without offloads.
pub fn buf_size_for(plan: &Plan, afxdp_offloads: bool) -> usize {
    if plan.has_super_frame_endpoints(afxdp_offloads) {
        vswitch::offload::GSO_BUF_SIZE
    } else {
        vswitch::packet::DEFAULT_BUF_SIZE
    }
}

/// Default connection-table size of a node (`vxmesh run --max-conns`): about 30 MB. IPVS keeps
/// TIME_WAIT entries 120 s, so this holds about 2,200 new connections per second sustained.
pub const MAX_CONNS: usize = 1 << 18;

/// The sizes and times of a node's tables: `vxmesh run --max-conns`, `--lb-timeouts` and
/// `--fdb-aging`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOpts {
    /// Connection-table entries; a full table drops new connections (`drop_table_full`).
    pub max_conns: usize,
    /// The connections' timeouts per TCP state and for UDP (IPVS's, by default).
    pub timeouts: lb::Timeouts,
    /// Seconds a learned MAC stays in the FDB without a frame from it (the bridge's
    /// `ageing_time`, 300 by default).
    pub fdb_aging_secs: u32,
}

impl Default for TableOpts {
    fn default() -> TableOpts {
        TableOpts {
            max_conns: MAX_CONNS,
            timeouts: lb::Timeouts::default(),
            fdb_aging_secs: vswitch::fdb::DEFAULT_AGING_SECS,
        }
    }
}

impl Node {
    /// Build this node's switch: plan, open every port, assemble the pipeline.
    pub fn build(cluster: Cluster, node: &str, ports: &mut dyn PortOpener) -> anyhow::Result<Node> {
        Node::build_with(cluster, node, ports, TableOpts::default())
    }

    /// [`Node::build`] with the tables `tables` says.
    pub fn build_with(
        cluster: Cluster,
        node: &str,
        ports: &mut dyn PortOpener,
        tables: TableOpts,
    ) -> anyhow::Result<Node> {
        let fdb = FdbConfig {
            aging_secs: tables.fdb_aging_secs,
            ..FdbConfig::default()
        };
        Node::build_inner(cluster, node, ports, tables, fdb, None)
    }

    /// [`Node::build_with`] with an FDB of the given sizes (tests fill a small one).
    ///
    /// The switch starts with the pipeline and the underlay only, then takes the cluster file
    /// as its first change, through the same [`Change`] as every later one.
    pub fn build_sized(
        cluster: Cluster,
        node: &str,
        ports: &mut dyn PortOpener,
        max_conns: usize,
        fdb: FdbConfig,
    ) -> anyhow::Result<Node> {
        let tables = TableOpts {
            max_conns,
            ..TableOpts::default()
        };
        Node::build_inner(cluster, node, ports, tables, fdb, None)
    }

    /// [`Node::build`] with every source of randomness and wall-clock time fixed by `seed`:
    /// the connection table's and the FDB's hash seeds, and the ESP epoch. Two nodes built
    /// alike from the same seed forward alike, slot for slot (the simulator, `vxmesh sim`).
    pub fn build_seeded(
        cluster: Cluster,
        node: &str,
        ports: &mut dyn PortOpener,
        max_conns: usize,
        seed: u64,
    ) -> anyhow::Result<Node> {
        let tables = TableOpts {
            max_conns,
            ..TableOpts::default()
        };
        Node::build_inner(
            cluster,
            node,
            ports,
            tables,
            FdbConfig::default(),
            Some(seed),
        )
    }

    fn build_inner(
        cluster: Cluster,
        node: &str,
        ports: &mut dyn PortOpener,
        tables: TableOpts,
        fdb: FdbConfig,
        fixed: Option<u64>,
    ) -> anyhow::Result<Node> {
        let plan = Plan::of(&cluster, node)?;
        let mut env = Env::new(fdb);
        if let Some(s) = fixed {
            env.fdb.reseed(s ^ 0xfdb);
        }
        env.local_vtep = Some(plan.vtep);
        let buf_size = buf_size_for(&plan, ports.afxdp_offloads());
        let mut sw = Switch::with_batch(env, vswitch::BATCH_SIZE, buf_size);
        let l2 = sw.add_l2_stages();
        let decap = sw.add_stage(vxlan::VxlanDecap::new());
        let encap = sw.add_stage(vxlan::VxlanEncap::new());
        let lb_stage = sw.add_stage(LbStage::new(Balancer::new(BalancerConfig {
            max_conns: tables.max_conns,
            seed: fixed.unwrap_or_else(seed),
            timeouts: tables.timeouts,
        })));
        // Its MACs and ingress ports come with the first change, as with every later one.
        let own = sw.add_stage(OwnAddr {
            ingress: Vec::new(),
        });
        // Its tables come with the first change too.
        let dns = sw.add_stage(vswitch::dns::Dns::new());
        let local_path = l2.local_path(&[dns.idx(), lb_stage.idx(), own.idx()]);
        let ul = ports.underlay(plan.vtep)?;
        let ul_path = vec![
            decap.idx(),
            l2.parse.idx(),
            l2.learn.idx(),
            lb_stage.idx(),
            own.idx(),
            l2.fwd.idx(),
        ];
        let ul = sw.add_port(UNDERLAY_PORT, ul, PortRole::Underlay, ul_path.clone());
        sw.set_tx_path(ul, vec![encap.idx()]);
        // The encrypted underlay: esp-decrypt before the plain path, esp-encrypt after
        // vxlan-encap. Opened whenever it can be, so a network may turn encrypted later; a
        // node that serves one now cannot start without it.
        let decrypt = sw.add_stage(esp::EspDecrypt::new(plan.vtep));
        let encrypt = sw.add_stage(esp::EspEncrypt::new(plan.vtep));
        let mut esp = EspStages {
            decrypt,
            encrypt,
            port: None,
            udp_port: None,
            missing: String::new(),
            // A fixed start for a seeded node: its packets are the same in every run.
            epoch: if fixed.is_some() { 1 } else { unix_secs() },
            reserved: None,
            capture_left: 0,
        };
        let path = [vec![decrypt.idx()], ul_path].concat();
        // Both transports are open, so a change of transport loses nothing: the output step
        // sends by the plan's, and either is received.
        match ports.esp_underlay(plan.vtep) {
            Ok(p) => {
                let id = sw.add_port(ESP_PORT, p, PortRole::EspUnderlay, path.clone());
                sw.set_tx_path(id, vec![encap.idx(), encrypt.idx()]);
                esp.port = Some(id);
            }
            Err(e) => esp.missing = format!("{e:#}"),
        }
        match ports.esp_udp_underlay(plan.vtep) {
            Ok(p) => {
                let id = sw.add_port(ESP_UDP_PORT, p, PortRole::EspUnderlay, path);
                sw.set_tx_path(id, vec![encap.idx(), encrypt.idx()]);
                sw.stage_mut(decrypt).udp_port = Some(id);
                esp.udp_port = Some(id);
            }
            Err(e) => {
                esp.missing += &format!("{}{e:#}", if esp.missing.is_empty() { "" } else { "; " });
            }
        }
        sw.stage_mut(decap).esp_ports = [esp.port, esp.udp_port];
        sw.set_esp_underlay(None);
        let base = Arc::new(Plan::empty(node, plan.vtep));
        let change = Change::planned(cluster.clone(), plan, base.clone(), ports, sw.buf_size())?;
        let mut node = Node {
            sw,
            lb: lb_stage,
            own,
            dns,
            plan: base,
            cluster,
            local_path,
            esp,
            next_estimate: vswitch::Time(0),
        };
        let (r, left) = node.commit(change);
        drop(left);
        r?;
        Ok(node)
    }

    /// The ESP security associations, outbound then inbound (key ids, never key bytes).
    pub fn esp_sas(&self) -> Vec<esp::SaInfo> {
        let mut v = self.sw.stage(self.esp.encrypt).list();
        v.extend(self.sw.stage(self.esp.decrypt).list());
        v
    }

    /// Start the decrypted capture of the ESP port (`capture --decrypted`): `count` frames in
    /// all, received after `esp-decrypt` and sent before `esp-encrypt`, replacing any running.
    pub fn start_esp_capture(&mut self, count: u64) {
        self.esp.capture_left = count;
        self.sw.stage_mut(self.esp.decrypt).tap = Some(esp::tap::Tap::new(count));
        self.sw.stage_mut(self.esp.encrypt).tap = Some(esp::tap::Tap::new(count));
    }

    /// The decrypted capture's frames since the last call, in time order, the frames missed,
    /// and whether it still runs; it ends once `count` frames were taken, either way.
    pub fn take_esp_capture(&mut self) -> (Vec<vswitch::CapturedFrame>, u64, bool) {
        let mut out = Vec::new();
        let mut missed = 0;
        for tx in [false, true] {
            let tap = if tx {
                self.sw.stage_mut(self.esp.encrypt).tap.as_mut()
            } else {
                self.sw.stage_mut(self.esp.decrypt).tap.as_mut()
            };
            if let Some(t) = tap {
                let (frames, m) = t.take();
                missed += m;
                out.extend(
                    frames
                        .into_iter()
                        .map(|(time_ns, data)| vswitch::CapturedFrame { time_ns, tx, data }),
                );
            }
        }
        out.sort_by_key(|f| f.time_ns);
        // Each direction's tap may have taken up to the whole count: keep the count in all.
        out.truncate(usize::try_from(self.esp.capture_left).unwrap_or(usize::MAX));
        self.esp.capture_left -= out.len() as u64;
        let running = self.esp.capture_left > 0;
        if !running {
            self.stop_esp_capture();
        }
        (out, missed, running)
    }

    /// Whether a decrypted capture runs.
    pub fn esp_capturing(&self) -> bool {
        self.esp.capture_left > 0
    }

    /// Stop the decrypted capture.
    pub fn stop_esp_capture(&mut self) {
        self.esp.capture_left = 0;
        self.sw.stage_mut(self.esp.decrypt).tap = None;
        self.sw.stage_mut(self.esp.encrypt).tap = None;
    }

    /// Keep the ESP epochs in `file` (`/run/vxmesh/NODE.esp`, beside the connection table): a
    /// restarted process of this node starts past every epoch an earlier one may have used,
    /// so no IV repeats under a key even when restarts come within a second. Call before the
    /// first packet. Returns the epoch new security associations start at.
    pub fn reserve_esp_epochs(&mut self, file: &std::path::Path) -> anyhow::Result<u32> {
        let last = match std::fs::read_to_string(file) {
            Ok(t) => t
                .trim()
                .parse::<u32>()
                .with_context(|| format!("{}: not an epoch", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let start = unix_secs().max(last.saturating_add(1));
        self.esp.epoch = start;
        self.esp.reserved = None;
        self.reserve_epochs(file.to_path_buf())?;
        // The security associations of the first change started at the provisional epoch
        // and have sent nothing: made again from the reserved one.
        let vtep = self.plan.vtep;
        *self.sw.stage_mut(self.esp.encrypt) = esp::EspEncrypt::new(vtep);
        let decrypt = self.sw.stage_mut(self.esp.decrypt);
        let udp_port = decrypt.udp_port;
        *decrypt = esp::EspDecrypt::new(vtep);
        decrypt.udp_port = udp_port;
        self.set_sas(&self.plan.clone());
        Ok(start)
    }

    /// Write the reservation: epochs up to `epoch + ESP_EPOCH_RESERVE` are this process's.
    fn reserve_epochs(&mut self, file: std::path::PathBuf) -> anyhow::Result<()> {
        let until = self.esp.epoch.saturating_add(ESP_EPOCH_RESERVE);
        let tmp = file.with_extension("esp.tmp");
        std::fs::write(&tmp, format!("{until}\n"))
            .and_then(|()| std::fs::rename(&tmp, &file))
            .with_context(|| format!("writing {}", file.display()))?;
        self.esp.reserved = Some((file, until));
        Ok(())
    }

    /// Point the ESP stages' security associations at `plan`'s keys and ESP peers (those
    /// still wanted keep their counters and windows; new ones start at a fresh epoch).
    fn set_sas(&mut self, plan: &Plan) {
        self.apply_sas(esp::SaPlan::new(
            plan.vtep,
            &plan.keys,
            &plan.esp_peers(),
            0,
        ));
    }

    /// Swap in security associations derived ahead ([`esp::SaPlan`], by [`Change::prepare`]
    /// off the poll thread): new outbound ones number from the next epoch, those still wanted
    /// keep their state. No crypto.
    fn apply_sas(&mut self, mut sas: esp::SaPlan) {
        self.esp.epoch = self.esp.epoch.saturating_add(1);
        if let Some((file, until)) = self.esp.reserved.clone()
            && self.esp.epoch >= until
        {
            // Control plane, between batches: a small tmpfs write every 4096 changes.
            let _ = self.reserve_epochs(file);
        }
        sas.renumber(self.esp.epoch);
        self.sw.stage_mut(self.esp.encrypt).apply(sas.outbound);
        self.sw.stage_mut(self.esp.decrypt).apply(sas.inbound);
    }

    /// Hand the queries for names no network's resolver serves to the upstream relay
    /// (`vxmesh run --dns-upstream`).
    pub fn set_dns_upstream(&mut self, relay: std::sync::mpsc::SyncSender<vswitch::dns::Forward>) {
        self.sw.stage_mut(self.dns).set_upstream(relay);
    }

    /// Send a relayed DNS answer (a whole frame) out of `port`, if that port is still the one
    /// of the endpoint at `client` (it may have been detached and its slot reused since the
    /// query). Whether it went out.
    pub fn relay_dns(
        &mut self,
        port: vswitch::PortId,
        client: std::net::Ipv4Addr,
        frame: &[u8],
    ) -> bool {
        let ours = self
            .sw
            .stage(self.dns)
            .ports()
            .get(usize::from(port.0))
            .copied();
        ours == Some(Some(client)) && self.sw.inject(port, frame)
    }

    /// Housekeeping, once per [`HOUSEKEEPING`] period of `now`'s clock (the poll loop's, or the
    /// simulator's virtual one): FDB aging, connection expiry, each a bounded slice of its
    /// table, and the load balancer's rates every [`ESTIMATE_EVERY`].
    pub fn housekeeping(&mut self, now: vswitch::Time) {
        self.sw.env.fdb.age(now, FDB_AGE_BUDGET);
        let next = &mut self.next_estimate;
        let estimate = now >= *next;
        if estimate {
            *next = vswitch::Time(now.0 + ESTIMATE_EVERY.as_nanos() as u64);
        }
        let lb = self.lb();
        lb.expire(now, CONN_EXPIRE_BUDGET);
        if estimate {
            lb.estimate(now);
        }
    }

    /// The `lb-nat` stage's handle (the simulator's debugger reads its tables).
    pub fn lb_stage(&self) -> StageHandle<LbStage> {
        self.lb
    }

    /// The load balancer of the `lb-nat` stage.
    pub fn lb(&mut self) -> &mut Balancer {
        &mut self.sw.stage_mut(self.lb).lb
    }

    /// Apply a new cluster file: prepare the change (ports opened by `ports`) and commit it, in
    /// one go (tests, benches; the daemon prepares off the packet thread). Returns what changed.
    pub fn reload(
        &mut self,
        cluster: Cluster,
        ports: &mut dyn PortOpener,
    ) -> anyhow::Result<String> {
        let change = Change::prepare(cluster, self.plan.clone(), ports, self.sw.buf_size())?;
        let (r, left) = self.commit(change);
        drop(left);
        r
    }
}

/// A hash seed for the connection table, different in every process (remote clients must not
/// be able to predict probe chains).
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

#[cfg(test)]
mod esp_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::path::Path;
    use vswitch::{Mac, NetId, Port};

    /// The shared cluster fixture, its containers' namespaces unprefixed.
    pub(super) fn file() -> String {
        include_str!("../tests/fixtures/cluster.toml").replace("{P}", "")
    }

    /// The fixture parsed as `test.toml`.
    pub(super) fn cluster(text: &str) -> Cluster {
        Cluster::parse(Path::new("test.toml"), text).unwrap()
    }

    #[test]
    fn reload_applies_weights_and_refuses_port_changes() {
        let file = file();
        let mut node = Node::build(cluster(&file), "n1", &mut MemPorts).unwrap();
        assert_eq!(
            node.sw.env.fdb.static_len(),
            5,
            "4 endpoints and n2's LB MAC"
        );
        let (all, one_drained) = (r#"["c12", "c21", "c22"]"#, r#"["c12=0", "c21", "c22"]"#);
        assert!(file.contains(all));
        let drained = file.replace(all, one_drained);
        let log = node.reload(cluster(&drained), &mut MemPorts).unwrap();
        assert!(log.contains("backend c12 weight 1 -> 0"), "{log}");
        let w: Vec<u32> = node.lb().services()[0]
            .backends
            .iter()
            .map(|b| b.weight)
            .collect();
        assert_eq!(w, [0, 1, 1]);
        assert_eq!(
            node.reload(cluster(&drained), &mut MemPorts).unwrap(),
            "no changes\n"
        );
        let moved = drained.replace("afxdp:vc11", "afxdp:vc99");
        let err = node
            .reload(cluster(&moved), &mut MemPorts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c11") && err.contains("attach afxdp:vc11 -> afxdp:vc99"),
            "{err}"
        );
        assert_eq!(node.cluster, cluster(&drained));
        let removed = drained.replace(one_drained, r#"["c21", "c22"]"#);
        let log = node.reload(cluster(&removed), &mut MemPorts).unwrap();
        assert!(log.contains("backend c12 removed"), "{log}");
    }

    /// What a user sees of a node's tables: `fdb show`, `lb show`, `network inspect`.
    fn views(node: &mut Node) -> (String, String, String) {
        (
            crate::show::fdb(&node.sw, None),
            crate::show::lb(node, false, false, false),
            crate::show::network(node, "appnet", false).unwrap(),
        )
    }

    #[test]
    fn the_tables_take_the_timeouts_and_aging_run_was_given() {
        // `vxmesh run --lb-timeouts 0,60,42 --fdb-aging 7`: the node's balancer and FDB get
        // them, and what was left at 0 keeps IPVS's default.
        let mut timeouts = lb::Timeouts::default();
        timeouts.set(0, 60, 42);
        let tables = TableOpts {
            max_conns: 1024,
            timeouts,
            fdb_aging_secs: 7,
        };
        let mut node = Node::build_with(cluster(&file()), "n1", &mut MemPorts, tables).unwrap();
        assert_eq!(node.sw.env.fdb.config().aging_secs, 7);
        let t = *node.lb().timeouts();
        assert_eq!((t.udp, t.tcp_state(lb::state::TcpState::FinWait)), (42, 60));
        assert_eq!(t.tcp_state(lb::state::TcpState::Established), 900);
        // The defaults are IPVS's and the bridge's.
        let mut node = Node::build(cluster(&file()), "n1", &mut MemPorts).unwrap();
        assert_eq!(node.sw.env.fdb.config().aging_secs, 300);
        assert_eq!(*node.lb().timeouts(), lb::Timeouts::default());
    }

    #[test]
    fn a_reload_that_fails_halfway_changes_nothing() {
        let file = file();
        let small = FdbConfig {
            max_static: 6,
            ..FdbConfig::default()
        };
        let mut node =
            Node::build_sized(cluster(&file), "n1", &mut MemPorts, MAX_CONNS, small).unwrap();
        let before = views(&mut node);
        let plan = node.plan.clone();
        // Two more remote endpoints (5 static entries + 2 > 6) and a drain, in one file: the
        // second entry does not fit, so neither the entries nor the drain may stay.
        let endpoint = |name: &str, ip: &str| {
            format!(
                "\n[[endpoint]]\nname = \"{name}\"\nnode = \"n2\"\nnetwork = \"appnet\"\nip = \"{ip}\"\n"
            )
        };
        let drained = file.replace(r#"["c12", "c21", "c22"]"#, r#"["c12=0", "c21", "c22"]"#);
        let two = format!(
            "{drained}{}{}",
            endpoint("c23", "10.0.9.23"),
            endpoint("c24", "10.0.9.24")
        );
        let err = format!(
            "{:#}",
            node.reload(cluster(&two), &mut MemPorts).unwrap_err()
        );
        assert!(
            err.contains("static") && err.contains("nothing of it was applied"),
            "{err}"
        );
        assert_eq!(views(&mut node), before);
        assert_eq!(node.plan, plan);
        assert_eq!(node.sw.env.fdb.static_len(), 5);
        // The next change is computed against what really runs: one endpoint fits.
        let one = format!("{drained}{}", endpoint("c23", "10.0.9.23"));
        let log = node.reload(cluster(&one), &mut MemPorts).unwrap();
        assert!(
            log.contains("weight 1 -> 0")
                && log.contains("fdb appnet: 1 static entries added, 0 removed"),
            "{log}"
        );
        assert_eq!(node.sw.env.fdb.static_len(), 6);
    }

    #[test]
    fn a_new_load_balancer_address_replaces_the_snat_and_the_owned_mac() {
        let file = file();
        let mut node = Node::build(cluster(&file), "n1", &mut MemPorts).unwrap();
        let moved = file.replacen(
            "vtep = \"198.18.0.1\"",
            "vtep = \"198.18.0.1\"\nlb = { appnet = \"10.0.9.240\" }",
            1,
        );
        assert_ne!(moved, file);
        let log = node.reload(cluster(&moved), &mut MemPorts).unwrap();
        assert!(log.contains("reconfigured"), "{log}");
        let lb = crate::show::lb(&mut node, false, false, false);
        assert!(
            lb.contains("10.0.9.240") && !lb.contains("10.0.9.254"),
            "{lb}"
        );
        let new_mac = Mac::docker_default(Ipv4Addr::new(10, 0, 9, 240));
        let own = &node.sw.env.own_macs();
        assert!(own.contains(&(NetId(0), new_mac)), "{own:?}");
        let arp = &node.sw.env.nets[0].arp;
        assert_eq!(arp.get(&Ipv4Addr::new(10, 0, 9, 240)), Some(&new_mac));
        assert!(!arp.contains_key(&Ipv4Addr::new(10, 0, 9, 254)));
    }

    /// The fixture with one ingress per node cut off, c12 gone (and out of the service), and
    /// instead: an endpoint c13 on n1, a network `db` with c14 on n1 and c31 on a new node n3.
    fn changed() -> String {
        let f = file();
        let cut = f.find("[[ingress]]").unwrap();
        let (head, ingresses) = f.split_at(cut);
        let n2_ingress = &ingresses[ingresses.rfind("[[ingress]]").unwrap()..];
        let c12 = head.find("[[endpoint]]\nname = \"c12\"").unwrap();
        let c21 = head.find("[[endpoint]]\nname = \"c21\"").unwrap();
        let head = format!("{}{}", &head[..c12], &head[c21..])
            .replace(r#"["c12", "c21", "c22"]"#, r#"["c21", "c22"]"#);
        format!(
            r#"{head}{n2_ingress}
[[node]]
name = "n3"
vtep = "198.18.0.3"

[[network]]
name = "db"
vni = 4098
subnet = "10.0.10.0/24"

[[endpoint]]
name = "c13"
node = "n1"
network = "appnet"
ip = "10.0.9.13"
attach = "tap:eth1"

[[endpoint]]
name = "c14"
node = "n1"
network = "db"
ip = "10.0.10.14"
attach = "afxdp:vc14"

[[endpoint]]
name = "c31"
node = "n3"
network = "db"
ip = "10.0.10.31"
"#
        )
    }

    fn port_names(node: &Node) -> Vec<String> {
        node.sw.stats().ports.into_iter().map(|p| p.name).collect()
    }

    #[test]
    fn endpoints_ingresses_networks_and_nodes_come_and_go_live() {
        let file = file();
        let mut node = Node::build(cluster(&file), "n1", &mut MemPorts).unwrap();
        let before = views(&mut node);
        let ports_before = port_names(&node);
        assert_eq!(
            ports_before,
            [
                "underlay",
                "underlay-esp",
                "underlay-esp-udp",
                "c11",
                "c12",
                "ext0"
            ]
        );
        let log = node.reload(cluster(&changed()), &mut MemPorts).unwrap();
        for line in [
            "network db: added (VNI 4098)",
            "node n3: added (VTEP 198.18.0.3)",
            "endpoint c13: attached",
            "endpoint c14: attached",
            "endpoint c12: detached",
            "ingress ext0: detached",
            "network ingress:ext0: removed",
            "service web 192.0.2.1:8080: removed",
            "service web 10.0.9.100:80: backend c12 removed",
        ] {
            assert!(log.contains(line), "{line:?} missing from:\n{log}");
        }
        // c12's slot went to c13, then ext0's to c14.
        assert_eq!(
            port_names(&node),
            [
                "underlay",
                "underlay-esp",
                "underlay-esp-udp",
                "c11",
                "c13",
                "c14"
            ]
        );
        let env = &node.sw.env;
        let db = env.net_by_name("db").unwrap();
        assert_eq!(
            db,
            NetId(2),
            "a new network never takes an id freed by the same change"
        );
        assert!(env.nets[1].is_retired());
        let n3 = env.vtep_by_addr(Ipv4Addr::new(198, 18, 0, 3)).unwrap();
        assert_eq!(env.nets[2].peers, vec![n3]);
        let c31 = Mac::docker_default(Ipv4Addr::new(10, 0, 10, 31));
        assert_eq!(
            env.fdb.entry(db, c31).unwrap().dest(),
            vswitch::FdbDest::Remote(n3)
        );
        let c14 = Mac::docker_default(Ipv4Addr::new(10, 0, 10, 14));
        let c14_port = node.sw.port_id("c14").unwrap();
        assert_eq!(
            env.fdb.entry(db, c14).unwrap().dest(),
            vswitch::FdbDest::Local(c14_port)
        );
        let c12 = Mac::docker_default(Ipv4Addr::new(10, 0, 9, 12));
        assert!(env.fdb.entry(NetId(0), c12).is_none());
        assert!(node.sw.stage_mut(node.own).ingress.is_empty());
        // And back: the ingress takes the id its network had, and every view is as it was.
        let log = node.reload(cluster(&file), &mut MemPorts).unwrap();
        assert!(
            log.contains("node n3: removed") && log.contains("network db: removed"),
            "{log}"
        );
        assert_eq!(node.sw.env.net_by_name("ingress:ext0"), Some(NetId(1)));
        assert_eq!(node.sw.env.vtep_by_addr(Ipv4Addr::new(198, 18, 0, 3)), None);
        let after = views(&mut node);
        assert_eq!((&after.0, &after.2), (&before.0, &before.2));
        // The load balancer lists a backend added back last, as IPVS does.
        let sorted = |s: &str| {
            let mut l: Vec<String> = s.lines().map(str::to_string).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&after.1), sorted(&before.1));
        let ext0 = node.sw.port_id("ext0").unwrap();
        assert_eq!(node.sw.stage_mut(node.own).ingress, vec![(ext0, NetId(1))]);
        assert_eq!(
            node.reload(cluster(&file), &mut MemPorts).unwrap(),
            "no changes\n"
        );
    }

    /// Ports that count how many of them are open: a port dropped anywhere is closed.
    struct Counted {
        open: Arc<std::sync::atomic::AtomicUsize>,
        /// Fail the open after this many successes.
        fail_after: usize,
    }

    struct CountedPort(Arc<std::sync::atomic::AtomicUsize>);

    impl Drop for CountedPort {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Port for CountedPort {
        fn rx_burst(&mut self, _: &mut vswitch::Batch) -> usize {
            0
        }
        fn tx_burst(&mut self, b: &mut vswitch::Batch) -> usize {
            b.len()
        }
    }

    impl PortOpener for Counted {
        fn open(&mut self, p: &PortPlan, _: bool) -> anyhow::Result<Box<dyn Port>> {
            if self.fail_after == 0 {
                anyhow::bail!("no interface {:?} (injected)", p.attach);
            }
            self.fail_after -= 1;
            self.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Box::new(CountedPort(self.open.clone())))
        }
        fn underlay(&mut self, _: Ipv4Addr) -> anyhow::Result<Box<dyn Port>> {
            Ok(Box::new(vswitch::MemPort::new().0))
        }
    }

    #[test]
    fn a_change_that_fails_at_any_step_leaves_every_view_and_port_as_it_was() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let file = file();
        let open = Arc::new(AtomicUsize::new(0));
        let opener = |fail_after| Counted {
            open: open.clone(),
            fail_after,
        };
        let build = |max_static| {
            let fdb = FdbConfig {
                max_static,
                ..FdbConfig::default()
            };
            Node::build_sized(
                cluster(&file),
                "n1",
                &mut opener(usize::MAX),
                MAX_CONNS,
                fdb,
            )
            .unwrap()
        };
        let want = Plan::of(&cluster(&changed()), "n1").unwrap();
        // Opening a port fails (interface missing, bind refused): at the first and the second.
        for fail_after in 0..2 {
            let mut node = build(64);
            let (before, plan, opened) = (views(&mut node), node.plan.clone(), open.load(SeqCst));
            let err = format!(
                "{:#}",
                node.reload(cluster(&changed()), &mut opener(fail_after))
                    .unwrap_err()
            );
            assert!(
                err.contains("injected") && err.contains("nothing of the change"),
                "{err}"
            );
            assert_eq!(views(&mut node), before);
            assert_eq!(node.plan, plan);
            assert_eq!(
                open.load(SeqCst),
                opened,
                "the ports opened for it were closed"
            );
        }
        // The static FDB fills at every point of the change: 5 entries in force, the change
        // removes 1 (c12) and adds 4 (c13, c14, c31 and n3's load-balancer MAC), so 5 - 1 + 4 =
        // 8 fit and 5..=7 do not.
        assert_eq!(want.fdb.len(), 8);
        for max_static in 5..8 {
            let mut node = build(max_static);
            let (before, plan, opened) = (views(&mut node), node.plan.clone(), open.load(SeqCst));
            let ports = port_names(&node);
            // One entry per step (the rollback too), a round of the switch between steps.
            let change = Change::prepare(
                cluster(&changed()),
                node.plan.clone(),
                &mut opener(usize::MAX),
                node.sw.buf_size(),
            )
            .unwrap();
            let mut c = node.begin(change);
            let mut steps = 0;
            while !node.step(&mut c, 1) {
                node.sw.poll(vswitch::Time::from_secs(1));
                steps += 1;
            }
            assert!(steps > 4, "{steps} steps");
            let (r, left) = c.finish();
            drop(left);
            let err = format!("{:#}", r.unwrap_err());
            assert!(
                err.contains("static") && err.contains("nothing of it was applied"),
                "{err}"
            );
            assert_eq!(views(&mut node), before, "max_static {max_static}");
            assert_eq!(node.plan, plan);
            assert_eq!(port_names(&node), ports);
            assert_eq!(
                open.load(SeqCst),
                opened,
                "added ports were taken out and closed"
            );
            assert_eq!(node.sw.env.net_by_name("db"), None);
            assert_eq!(node.sw.env.vtep_by_addr(Ipv4Addr::new(198, 18, 0, 3)), None);
            // The next change is computed against what really runs.
            let log = node
                .reload(cluster(&file), &mut opener(usize::MAX))
                .unwrap();
            assert_eq!(log, "no changes\n");
        }
        let mut node = build(8);
        let base = node.plan.clone();
        node.reload(cluster(&changed()), &mut opener(usize::MAX))
            .unwrap();
        let want = Plan::next(&cluster(&changed()), "n1", Some(&base)).unwrap();
        assert_eq!(*node.plan, want);
        drop(node);
        assert_eq!(open.load(SeqCst), 0);
    }

    #[test]
    fn a_change_prepared_against_a_plan_no_longer_in_force_is_refused() {
        let file = file();
        let mut node = Node::build(cluster(&file), "n1", &mut MemPorts).unwrap();
        let base = node.plan.clone();
        let a = Change::prepare(cluster(&changed()), base.clone(), &mut MemPorts, 2048).unwrap();
        let b = Change::prepare(cluster(&changed()), base, &mut MemPorts, 2048).unwrap();
        node.commit(a).0.unwrap();
        let (r, left) = node.commit(b);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("another change was applied"), "{err}");
        assert_eq!(left.ports.len(), 2, "c13's and c14's ports, to close");
    }

    #[test]
    fn the_own_vtep_and_an_attached_ports_settings_need_a_restart_or_a_detach() {
        let file = file();
        let mut node = Node::build(cluster(&file), "n1", &mut MemPorts).unwrap();
        let vtep = file.replace("198.18.0.1", "198.18.0.9");
        let err = node
            .reload(cluster(&vtep), &mut MemPorts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VTEP address changed") && err.contains("restart"),
            "{err}"
        );
        let mtu = file.replace("mtu = 1450", "mtu = 1400");
        let err = node
            .reload(cluster(&mtu), &mut MemPorts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("endpoint c11") && err.contains("MTU 1450 -> 1400"),
            "{err}"
        );
        // Another node's VTEP moves live.
        let moved = file.replace("198.18.0.2", "198.18.0.7");
        let log = node.reload(cluster(&moved), &mut MemPorts).unwrap();
        assert!(
            log.contains("node n2: VTEP 198.18.0.2 -> 198.18.0.7"),
            "{log}"
        );
        assert!(
            node.sw
                .env
                .vtep_by_addr(Ipv4Addr::new(198, 18, 0, 7))
                .is_some()
        );
    }

    /// Every kind of change at once: a network, a node, ports added and removed, an ingress
    /// removed, a service added, a routing-mesh service replaced (new load-balancer address), a
    /// backend added, one drained, one removed.
    fn every_kind() -> String {
        changed()
            .replacen(
                "vtep = \"198.18.0.1\"",
                "vtep = \"198.18.0.1\"\nlb = { appnet = \"10.0.9.240\" }",
                1,
            )
            .replace(r#"["c21", "c22"]"#, r#"["c21=0", "c13"]"#)
            + "\n[[service]]\nname = \"api\"\nnetwork = \"db\"\nvip = \"10.0.10.100\"\nbackends = [\"c14\", \"c31\"]\nports = [{ protocol = \"tcp\", port = 81 }]\n"
    }

    #[test]
    fn a_failure_injected_after_any_single_step_leaves_the_node_as_it_was() {
        let file = file();
        let target = cluster(&every_kind());
        for fail_at in 1..500 {
            let mut node = Node::build(cluster(&file), "n1", &mut MemPorts).unwrap();
            let (before, plan, ports) = (views(&mut node), node.plan.clone(), port_names(&node));
            let own = node.sw.env.own_macs().to_vec();
            let change =
                Change::prepare(target.clone(), node.plan.clone(), &mut MemPorts, 2048).unwrap();
            let mut c = node.begin(change);
            c.fail_at(fail_at);
            while !node.step(&mut c, 1) {
                node.sw.poll(vswitch::Time::from_secs(1));
            }
            let (r, left) = c.finish();
            drop(left);
            let Err(e) = r else {
                // Past the last step: the whole change applied.
                assert!(fail_at > 12, "only {} steps", fail_at - 1);
                let lb = crate::show::lb(&mut node, false, false, false);
                assert!(
                    lb.contains("10.0.10.100:81") && lb.contains("10.0.9.13:80"),
                    "{lb}"
                );
                return;
            };
            let e = format!("{e:#}");
            assert!(
                e.contains("injected") && e.contains("nothing of it was applied"),
                "{e}"
            );
            assert_eq!(views(&mut node), before, "failure after step {fail_at}");
            assert_eq!(node.plan, plan);
            assert_eq!(port_names(&node), ports);
            assert_eq!(node.sw.env.own_macs(), own);
            assert_eq!(node.sw.env.net_by_name("db"), None);
            assert_eq!(node.sw.env.vtep_by_addr(Ipv4Addr::new(198, 18, 0, 3)), None);
            let ext0 = node.sw.port_id("ext0").unwrap();
            assert_eq!(node.sw.stage(node.own).ingress, vec![(ext0, NetId(1))]);
        }
        panic!("the change never completed");
    }
}
