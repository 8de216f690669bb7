//! The simulator's inputs and outputs: `--input PCAP@NODE/PORT` (pcap or pcapng, Ethernet),
//! one pcap per port of every node (`NODE-PORT.pcap`, what the port sent, the underlay's as on
//! the wire), and a stats file per node (`NODE.json`: every counter, the FDB, the connections).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use pcap_file::DataLink;
use pcap_file::pcapng::Block;
use vswitch::Time;
use vswitch::wire::ethernet::{self, ETHERTYPE_IPV4};
use vswitch::wire::{ipv4, udp};

use super::{Sim, SimPortKind, SimStats, Sink};
use crate::pcap::PcapWriter;

/// One `--input PCAP@NODE/PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// The capture file.
    pub file: PathBuf,
    /// The node whose port receives its frames.
    pub node: String,
    /// The port.
    pub port: String,
}

impl std::str::FromStr for InputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<InputSpec, String> {
        let bad = || format!("--input {s:?}: expected PCAP@NODE/PORT (e.g. c11.pcap@n1/c11)");
        let (file, at) = s.rsplit_once('@').ok_or_else(bad)?;
        let (node, port) = at.split_once('/').ok_or_else(bad)?;
        if file.is_empty() || node.is_empty() || port.is_empty() {
            return Err(bad());
        }
        Ok(InputSpec {
            file: file.into(),
            node: node.into(),
            port: port.into(),
        })
    }
}

/// A frame of an input: when, and where it enters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFrame {
    /// Its timestamp.
    pub time: Time,
    /// The node.
    pub node: usize,
    /// The port.
    pub port: usize,
    /// The Ethernet frame.
    pub data: Vec<u8>,
}

/// Read an Ethernet capture, pcap or pcapng (by its magic), as (time, frame).
pub fn read_capture(path: &Path) -> anyhow::Result<Vec<(Time, Vec<u8>)>> {
    let mut f = BufReader::new(File::open(path).with_context(|| format!("{}", path.display()))?);
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .with_context(|| format!("{}: not a capture file (too short)", path.display()))?;
    let rest = f;
    let whole = std::io::Cursor::new(magic).chain(rest);
    let what = |e: pcap_file::PcapError| anyhow::anyhow!("{}: {e}", path.display());
    let mut out = Vec::new();
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = pcap_file::pcapng::PcapNgReader::new(whole).map_err(what)?;
        while let Some(b) = r.next_block() {
            let Block::EnhancedPacket(p) = b.map_err(what)? else {
                continue;
            };
            let p = p.into_owned();
            let Some(idb) = r.packet_interface(&p) else {
                bail!("{}: a packet of an undeclared interface", path.display());
            };
            if idb.linktype != DataLink::ETHERNET {
                bail!(
                    "{}: link type {:?}; the simulator takes Ethernet frames",
                    path.display(),
                    idb.linktype
                );
            }
            // pcap-file hands over the raw count of units as nanoseconds: scale by the
            // interface's resolution (microseconds unless it says otherwise).
            let units = u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX);
            let scale = ns_per_unit(idb).with_context(|| format!("{}", path.display()))?;
            out.push((Time(units.saturating_mul(scale)), p.data.into_owned()));
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(whole).map_err(|e| {
            anyhow::anyhow!("{}: not a pcap or pcapng capture ({e})", path.display())
        })?;
        let link = r.header().datalink;
        if link != DataLink::ETHERNET {
            bail!(
                "{}: link type {link:?}; the simulator takes Ethernet frames",
                path.display()
            );
        }
        while let Some(p) = r.next_packet() {
            let p = p.map_err(what)?;
            out.push((super::time_of(p.timestamp), p.data.into_owned()));
        }
    }
    Ok(out)
}

/// Nanoseconds per timestamp unit of a pcapng interface (`if_tsresol`, default 10^-6 s).
fn ns_per_unit(
    idb: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock,
) -> anyhow::Result<u64> {
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption as O;
    let r = idb
        .options
        .iter()
        .find_map(|o| match o {
            O::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(6);
    match r {
        0..=9 => Ok(10u64.pow(9 - u32::from(r))),
        _ => bail!("timestamp resolution {r:#x} (only 10^-0 to 10^-9 s)"),
    }
}

/// Every input's frames with their node and port, in time order (ties in the order the inputs
/// were given, then the file's).
pub fn read_inputs(sim: &Sim, specs: &[InputSpec]) -> anyhow::Result<Vec<InputFrame>> {
    let mut all = Vec::new();
    for s in specs {
        let (node, port) = sim
            .port(&s.node, &s.port)
            .with_context(|| format!("--input {}", s.file.display()))?;
        for (time, data) in read_capture(&s.file)? {
            all.push(InputFrame {
                time,
                node,
                port,
                data,
            });
        }
    }
    // A stable sort: equal times keep the inputs' order.
    all.sort_by_key(|f| f.time);
    Ok(all)
}

/// What the underlay port `kind` of the node at `vtep` receives of an input frame, and its
/// sender: the payload of UDP to the port's port (VXLAN, ESP in UDP), or the IPv4 packet of
/// protocol 50 (ESP, as a raw socket receives it), to `vtep`.
pub fn underlay_payload(
    frame: &[u8],
    vtep: Ipv4Addr,
    kind: SimPortKind,
) -> Option<(&[u8], SocketAddrV4)> {
    let eth = ethernet::Packet::new_checked(frame).ok()?;
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = ipv4::Packet::new_checked(&frame[ethernet::HEADER_LEN..]).ok()?;
    if ip.dst_addr() != vtep {
        return None;
    }
    let payload = &frame[ethernet::HEADER_LEN + ip.header_len()..][..ip.payload().len()];
    match kind.udp_port() {
        Some(port) if ip.protocol() == ipv4::PROTO_UDP => {
            let u = udp::Packet::new_checked(payload).ok()?;
            if u.dst_port() != port {
                return None;
            }
            let data = &payload[udp::HEADER_LEN..usize::from(u.len()).min(payload.len())];
            Some((data, SocketAddrV4::new(ip.src_addr(), u.src_port())))
        }
        // A raw ESP socket hands over the IPv4 header too.
        None if kind == SimPortKind::Esp && ip.protocol() == 50 => {
            let whole = &frame[ethernet::HEADER_LEN..][..ip.header_len() + ip.payload().len()];
            Some((whole, SocketAddrV4::new(ip.src_addr(), 0)))
        }
        _ => None,
    }
}

/// Append to `out` the underlay packet `data` of port `kind` as on the wire from `src` to
/// `dst`: IPv4 and UDP, or IPv4 protocol 50, in an Ethernet frame with zero MACs (what a
/// capture of the live node's underlay port shows).
pub fn wire_frame(
    out: &mut Vec<u8>,
    kind: SimPortKind,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    data: &[u8],
) {
    use vswitch::port::capture::{capture_ip_payload, capture_udp};
    let ok = match kind {
        SimPortKind::Underlay | SimPortKind::EspUdp => capture_udp(out, src, dst, data),
        SimPortKind::Esp => capture_ip_payload(out, *src.ip(), *dst.ip(), 50, data),
        SimPortKind::Local => false,
    };
    if !ok {
        out.clear();
        out.extend_from_slice(data);
    }
}

/// The output directory's pcaps: one per port of every node, `NODE-PORT.pcap`.
pub struct PcapSink {
    files: Vec<Vec<PcapWriter<BufWriter<File>>>>,
    error: Option<anyhow::Error>,
}

impl PcapSink {
    /// Create `dir` (if missing) and a pcap in it for every port of `sim`'s nodes.
    pub fn create(dir: &Path, sim: &Sim) -> anyhow::Result<PcapSink> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = Vec::new();
        for n in &sim.nodes {
            let mut ports = Vec::new();
            for p in &n.ports {
                let path = dir.join(format!("{}-{}.pcap", n.name, p.name));
                let f = File::create(&path).with_context(|| format!("{}", path.display()))?;
                ports.push(PcapWriter::new(BufWriter::new(f))?);
            }
            files.push(ports);
        }
        Ok(PcapSink { files, error: None })
    }

    /// Flush every file; the first write error, if any.
    pub fn finish(mut self) -> anyhow::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        for w in self.files.iter_mut().flatten() {
            w.flush()?;
        }
        Ok(())
    }
}

impl Sink for PcapSink {
    fn frame(&mut self, node: usize, port: usize, now: Time, frame: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.files[node][port].frame(now.0, frame) {
            self.error = Some(anyhow::Error::new(e).context("writing a port's pcap"));
        }
    }
}

/// Node `i`'s stats file: its name and VTEP, the simulator's counters, every counter of its
/// switch (as `vxmesh stats --json`), its FDB and its connections (as `fdb show --json` and
/// `conntrack show --json` at the last input's time).
pub fn stats_json(sim: &mut Sim, i: usize) -> String {
    let st: SimStats = sim.stats[i];
    let now = sim.now;
    let n = &mut sim.nodes[i];
    n.node.sw.env.now = now;
    let parse = |s: String| serde_json::from_str::<serde_json::Value>(&s).unwrap_or_default();
    let v = serde_json::json!({
        "node": n.name,
        "vtep": n.vtep.to_string(),
        "time_ns": now.0,
        "sim": st,
        "stats": parse(crate::show::stats_json(&n.node.sw)),
        "fdb": parse(crate::show::fdb_json(&n.node.sw, None)),
        "conntrack": parse(crate::show::conntrack(&mut n.node, true)),
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// Write every node's stats file into `dir`.
pub fn write_stats(dir: &Path, sim: &mut Sim) -> anyhow::Result<()> {
    for i in 0..sim.nodes.len() {
        let path = dir.join(format!("{}.json", sim.nodes[i].name));
        std::fs::write(&path, stats_json(sim, i))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_specs_parse_and_refuse_clearly() {
        let s: InputSpec = "a@b.pcap@n1/c11".parse().unwrap();
        assert_eq!(
            s,
            InputSpec {
                file: "a@b.pcap".into(),
                node: "n1".into(),
                port: "c11".into()
            }
        );
        for bad in [
            "x.pcap",
            "x.pcap@n1",
            "@n1/c11",
            "x.pcap@/c11",
            "x.pcap@n1/",
        ] {
            let e = bad.parse::<InputSpec>().unwrap_err();
            assert!(e.contains("PCAP@NODE/PORT"), "{e}");
        }
    }

    #[test]
    fn an_underlay_frame_round_trips_through_the_wire_framing() {
        let (a, b) = (
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 4789),
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 4789),
        );
        let payload = b"\x08\0\0\0\0\x10\x01\0inner";
        for kind in [SimPortKind::Underlay, SimPortKind::Esp] {
            let mut f = Vec::new();
            wire_frame(&mut f, kind, a, b, payload);
            let (p, from) = underlay_payload(&f, *b.ip(), kind).expect("parses back");
            let skip = if kind == SimPortKind::Esp { 20 } else { 0 };
            assert_eq!(&p[skip..], payload);
            assert_eq!(from.ip(), a.ip());
            assert!(underlay_payload(&f, *a.ip(), kind).is_none(), "not to a");
        }
        assert!(underlay_payload(b"short", *b.ip(), SimPortKind::Underlay).is_none());
    }
}
