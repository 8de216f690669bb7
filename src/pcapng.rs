//! Per-stage captures (`vxmesh capture --stages -w FILE.pcapng`, `vxmesh sim --pcapng`): a
//! traced packet's bytes after every step of the pipeline, one pcapng interface per step
//! (`rx`, each stage, `output`; in the simulator `NODE/STEP`), the step's decision and the
//! table entry it used in each packet's comment. Wireshark then shows a packet before and after
//! NAT, encapsulation, encryption. The bytes come from the tracer's snapshots
//! (`vswitch::trace`): tunnel packets in the outer headers a wire would show.
//!
//! Off the packet path: the control side (or the simulator) writes records it drained.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use vswitch::trace::TraceRecord;

/// Writes trace records with snapshots as a pcapng file, one interface per step name.
pub struct StageWriter<W: Write> {
    w: PcapNgWriter<W>,
    ifaces: HashMap<String, u32>,
    written: u64,
}

impl<W: Write> StageWriter<W> {
    /// Start the file (its section header; little-endian, the same bytes on every machine).
    pub fn new(out: W) -> anyhow::Result<StageWriter<W>> {
        let w = PcapNgWriter::with_endianness(out, pcap_file::Endianness::Little)?;
        Ok(StageWriter {
            w,
            ifaces: HashMap::new(),
            written: 0,
        })
    }

    /// Write `rec` (skipped without a snapshot) on interface `iface` (declared at its first
    /// use, nanosecond timestamps) at `unix_ns`, with `decision` and the detail as its comment.
    pub fn record(
        &mut self,
        iface: &str,
        unix_ns: u64,
        rec: &TraceRecord,
        decision: &str,
    ) -> anyhow::Result<()> {
        let Some(data) = &rec.data else {
            return Ok(());
        };
        let id = match self.ifaces.get(iface) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.ifaces.len())?;
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: 0,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(iface.to_string())),
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                self.w.write_pcapng_block(idb)?;
                self.ifaces.insert(iface.to_string(), id);
                id
            }
        };
        let comment = if rec.detail.is_empty() {
            format!("packet {}: {}: {decision}", rec.id, rec.stage)
        } else {
            format!(
                "packet {}: {}: {decision}; {}",
                rec.id, rec.stage, rec.detail
            )
        };
        let epb = EnhancedPacketBlock {
            interface_id: id,
            // pcap-file writes the count of units as given: nanoseconds (if_tsresol 9).
            timestamp: Duration::from_nanos(unix_ns),
            original_len: u32::try_from(data.len())?,
            data: Cow::Borrowed(data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment))],
        };
        self.w.write_pcapng_block(epb)?;
        self.written += 1;
        Ok(())
    }

    /// Packets written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flush and hand back the output.
    pub fn finish(self) -> anyhow::Result<W> {
        let mut w = self.w.into_inner();
        w.flush()?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use vswitch::Next;

    #[test]
    fn each_step_is_an_interface_and_each_packet_carries_its_decision() {
        let rec = |stage: &'static str, data: Option<&[u8]>| TraceRecord {
            id: 7,
            stage,
            next: Next::Continue,
            drop: None,
            detail: format!("{stage} detail"),
            data: data.map(Box::from),
            time_ns: 0,
        };
        let mut w = StageWriter::new(Vec::new()).unwrap();
        w.record("rx", 1_000_000_001, &rec("rx", Some(b"abc")), "continue")
            .unwrap();
        w.record(
            "l2-fwd",
            1_000_000_002,
            &rec("l2-fwd", Some(b"abcd")),
            "output c21",
        )
        .unwrap();
        w.record("rx", 1_000_000_003, &rec("rx", None), "continue")
            .unwrap();
        w.record("rx", 1_000_000_004, &rec("rx", Some(b"x")), "continue")
            .unwrap();
        assert_eq!(w.written(), 3);
        let bytes = w.finish().unwrap();
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut got = Vec::new();
        while let Some(b) = r.next_block() {
            if let Block::EnhancedPacket(p) = b.unwrap() {
                let p = p.into_owned();
                let name = r.packet_interface(&p).unwrap().options[0].clone();
                let EnhancedPacketOption::Comment(c) = &p.options[0] else {
                    panic!("a comment")
                };
                got.push((format!("{name:?}"), p.timestamp.as_nanos(), c.to_string()));
            }
        }
        assert_eq!(r.interfaces().len(), 2);
        assert_eq!(got.len(), 3);
        assert!(got[0].0.contains("\"rx\"") && got[1].0.contains("l2-fwd"));
        assert_eq!(got[1].1, 1_000_000_002);
        assert_eq!(got[1].2, "packet 7: l2-fwd: output c21; l2-fwd detail");
    }
}
