//! The output step: where every packet the stages decided on goes, run by
//! [`Switch::poll`](super::Switch::poll) after a port's receive path, before the transmit
//! batches are flushed.
//!
//! ```text
//! Output(p)  ─► p's transmit batch (buffer swapped, no copy)
//! Remote(v)  ─► the underlay port's transmit batch, meta.to_vtep = v (its transmit path
//!               encapsulates); for an encrypted network the ESP underlay's, never the plain
//!               one's (none: dropped, `drop_no_esp_underlay`)
//!               (UDP beyond the share a port's receiver gate admits: `drop_receiver_full`,
//!               `crate::gate`)
//! Flood      ─► a copy to each other local port of the network, and, for frames from local
//!               ports, a copy per remote VTEP (head-end replication)
//! offload work left ─► kept for a port that takes offloads (a TAP with offloads; the UDP
//!               underlay, which cuts super-frames as it sends), else the checksum finished or
//!               the TCP super-frame cut into segments here (GSO output)
//! ```
//! Counted like a stage (`output`): packets in = output + remote + flood + dropped.

use super::{PortRole, Switch};
use crate::offload::{self, Tcp4Gso};
use crate::packet::{Next, PortId, VtepId};
use crate::trace::TraceRecord;

crate::drop_table! {
    /// Why the output step drops a packet.
    pub enum OutputDrop {
        /// No stage decided on the packet, or it names a port that does not exist.
        Undecided => "drop_undecided",
        /// To a remote VTEP, but the switch has no underlay port.
        NoUnderlay => "drop_no_underlay",
        /// To a remote VTEP in an encrypted network, but the switch has no ESP underlay port:
        /// never sent in clear.
        NoEspUnderlay => "drop_no_esp_underlay",
        /// A TCP super-frame to flood (an unknown destination): not cut into copies for every
        /// port.
        GsoFlood => "drop_gso_flood",
        /// A super-frame whose headers no longer describe it (a stage changed it).
        GsoBad => "drop_gso_bad",
        /// A segment larger than the output's buffers.
        GsoSegmentTooBig => "drop_gso_segment_too_big",
        /// A UDP datagram to a container whose socket for it is full (its receiver cannot keep
        /// up): dropped here, before the transmit and the container's own receive path, rather
        /// than by the container's kernel ([`crate::gate`]).
        ReceiverFull => "drop_receiver_full",
    }
}

impl Switch {
    /// The underlay port that carries network `net`'s frames to remote VTEPs: the ESP one for
    /// an encrypted network (fail closed: there is no fallback to plain VXLAN), else the UDP
    /// one; or why there is none.
    #[inline]
    fn underlay_for(&self, net: crate::packet::NetId) -> Result<PortId, OutputDrop> {
        let encrypted = self
            .env
            .nets
            .get(usize::from(net.0))
            .is_some_and(|n| n.encrypted);
        if encrypted {
            self.esp_underlay.ok_or(OutputDrop::NoEspUnderlay)
        } else {
            self.underlay.ok_or(OutputDrop::NoUnderlay)
        }
    }

    /// Make room in `port`'s transmit batch, flushing it if full.
    #[inline]
    pub(super) fn room(&mut self, port: PortId) {
        if self.ports[port.0 as usize].tx.is_full() {
            self.flush(port);
        }
    }

    pub(super) fn output_batch(&mut self) {
        for i in 0..self.rx.len() {
            let next = self.rx[i].meta.next;
            let traced = self.rx[i].meta.trace != 0;
            if let Next::Drop(_) = next {
                continue; // counted by the stage that dropped it; never offered to the output
            }
            self.output.rx += 1;
            if self.rx[i].meta.offload.pending() && !self.offload_resolved(i, next) {
                continue;
            }
            match next {
                Next::Output(p) if (p.0 as usize) < self.ports.len() => {
                    if let Some(g) = &self.ports[p.0 as usize].gate
                        && g.blocks(self.rx[i].data())
                    {
                        self.output.count_drop(OutputDrop::ReceiverFull);
                        if traced {
                            self.trace_receiver_full(i, p);
                        }
                        continue;
                    }
                    self.output.output += 1;
                    if traced {
                        let detail = format!("to port {}", self.ports[p.0 as usize].name);
                        self.trace_output(i, next, None, detail);
                    }
                    self.room(p);
                    self.ports[p.0 as usize].tx.push_swap(&mut self.rx[i]);
                }
                Next::Output(_) => self.output.count_drop(OutputDrop::Undecided),
                Next::Remote(v) => {
                    let tp = match self.underlay_for(self.rx[i].meta.net) {
                        Ok(tp) => tp,
                        Err(d) => {
                            self.output.count_drop(d);
                            continue;
                        }
                    };
                    self.output.remote += 1;
                    if traced {
                        self.trace_remote(i, tp, v);
                    }
                    self.send_remote(i, tp, v, true);
                }
                Next::Flood => {
                    self.output.flood += 1;
                    self.flood(i);
                }
                Next::Drop(_) => {}
                Next::Continue => self.output.count_drop(OutputDrop::Undecided),
            }
        }
        self.rx.clear();
    }

    /// Rx packet `i` has offload work left ([`crate::offload`]) and is going to `next`: leave it
    /// for an output port that takes offloads, finish its checksum in place for any other, or
    /// cut a super-frame into segments and output those (then the packet itself is done: false).
    pub(super) fn offload_resolved(&mut self, i: usize, next: Next) -> bool {
        let gso = self.rx[i].meta.offload.is_gso();
        match next {
            Next::Output(p)
                if (p.0 as usize) < self.ports.len()
                    && self.ports[p.0 as usize].port.offloads() =>
            {
                true
            }
            // The underlay that carries it takes offloads (the UDP port cuts super-frames
            // into datagrams from their own bytes): left to it, after vxlan-encap.
            Next::Remote(_)
                if self
                    .underlay_for(self.rx[i].meta.net)
                    .is_ok_and(|tp| self.ports[tp.0 as usize].port.offloads()) =>
            {
                true
            }
            Next::Output(_) | Next::Remote(_) if gso => {
                self.output_segments(i, next);
                false
            }
            Next::Flood if gso => {
                self.output.count_drop(OutputDrop::GsoFlood);
                false
            }
            _ => {
                let p = &mut self.rx[i];
                let mut o = p.meta.offload;
                offload::finish_checksum(p.data_mut(), &mut o);
                p.meta.offload = o;
                self.csum_finished += 1;
                true
            }
        }
    }

    /// Cut TCP super-frame `i` into segments, each written straight into the output's transmit
    /// batch (toward `meta.to_vtep` when `next` is a remote VTEP).
    pub(super) fn output_segments(&mut self, i: usize, next: Next) {
        let Ok(g) = Tcp4Gso::new(self.rx[i].data(), &self.rx[i].meta.offload) else {
            self.output.count_drop(OutputDrop::GsoBad);
            return;
        };
        let out = match next {
            Next::Output(p) if (p.0 as usize) < self.ports.len() => p,
            Next::Remote(_) => match self.underlay_for(self.rx[i].meta.net) {
                Ok(tp) => tp,
                Err(d) => {
                    self.output.count_drop(d);
                    return;
                }
            },
            _ => {
                self.output.count_drop(OutputDrop::Undecided);
                return;
            }
        };
        let mut meta = self.rx[i].meta;
        meta.offload = offload::Offload::default();
        if let Next::Remote(v) = next {
            meta.to_vtep = Some(v);
        }
        let n = g.segments();
        // The segments are what the output handles from here on (each one is counted as
        // output, remote or dropped), so count them in, less the super-frame they replace.
        self.output.rx += n as u64 - 1;
        self.gso_frames += 1;
        self.gso_segments += n as u64;
        if meta.trace != 0 {
            let detail = format!(
                "TCP super-frame of {} bytes cut into {n} segments of at most {} bytes for {}",
                self.rx[i].len(),
                g.segment_len(0),
                self.ports[out.0 as usize].name
            );
            self.trace_output(i, next, None, detail);
        }
        for k in 0..n {
            self.room(out);
            let frame = self.rx[i].data();
            let tx = &mut self.ports[out.0 as usize].tx;
            let pushed = tx.push_with(meta, |area| {
                (g.segment_len(k) <= area.len()).then(|| g.write(frame, k, area))
            });
            if pushed.is_err() {
                self.output.count_drop(OutputDrop::GsoSegmentTooBig);
                continue;
            }
            match next {
                Next::Remote(_) => self.output.remote += 1,
                _ => self.output.output += 1,
            }
        }
    }

    /// Record that traced rx packet `i` was dropped for port `p`, whose receiver is full.
    fn trace_receiver_full(&mut self, i: usize, p: PortId) {
        let gated: Vec<String> = self.ports[p.0 as usize]
            .gate
            .as_ref()
            .map(|g| g.ports())
            .unwrap_or_default()
            .into_iter()
            .map(|(port, admit)| {
                let pct = f64::from(admit) * 100.0 / f64::from(crate::gate::ADMIT_ALL);
                format!("{port} admitting {pct:.1}%")
            })
            .collect();
        let detail = format!(
            "to port {}: its receiver is full (UDP ports throttled: {})",
            self.ports[p.0 as usize].name,
            gated.join(", ")
        );
        let d = OutputDrop::ReceiverFull;
        self.trace_output(i, Next::Drop(d.into()), Some(d.name()), detail);
    }

    /// Record where traced rx packet `i` goes: VTEP `v` by port `tp`.
    fn trace_remote(&mut self, i: usize, tp: PortId, v: VtepId) {
        let to = match self.env.vteps.get(usize::from(v.0)) {
            Some(vt) => format!("{} ({})", vt.addr, vt.node),
            None => format!("#{}", v.0),
        };
        let detail = format!("to VTEP {to} by port {}", self.ports[tp.0 as usize].name);
        self.trace_output(i, Next::Remote(v), None, detail);
    }

    /// Record what the output step did with traced rx packet `i`: `next`, with `drop`'s name
    /// when it dropped it. Only traced packets come here.
    #[cold]
    fn trace_output(&mut self, i: usize, next: Next, drop: Option<&'static str>, detail: String) {
        let data = self
            .env
            .tracer
            .snapshot(&self.rx[i], None, self.env.local_vtep);
        self.env.tracer.record(TraceRecord {
            id: self.rx[i].meta.trace,
            stage: "output",
            next,
            drop,
            detail,
            data,
            time_ns: 0,
        });
    }

    /// Queue rx packet `i` toward `vtep` on the underlay port `tp`, moved (`swap`) or copied;
    /// its transmit path encapsulates it. False when a copy does not fit the port's buffers.
    pub(super) fn send_remote(&mut self, i: usize, tp: PortId, vtep: VtepId, swap: bool) -> bool {
        self.room(tp);
        let tx = &mut self.ports[tp.0 as usize].tx;
        let pkt = if swap {
            // room() made space: the swap cannot fail, but never tag another packet if it did.
            if tx.push_swap(&mut self.rx[i]) {
                tx.last_mut()
            } else {
                None
            }
        } else {
            tx.push_copy(&self.rx[i]).ok()
        };
        match pkt {
            Some(p) => {
                p.meta.to_vtep = Some(vtep);
                true
            }
            None => false,
        }
    }

    pub(super) fn flood(&mut self, i: usize) {
        let meta = self.rx[i].meta;
        let net = &self.env.nets[meta.net.0 as usize];
        let (n_local, n_remote) = (net.ports.len(), net.peers.len());
        let mut copies = 0;
        for k in 0..n_local {
            let q = self.env.nets[meta.net.0 as usize].ports[k];
            if q == meta.in_port {
                continue;
            }
            self.room(q);
            if self.ports[q.0 as usize].tx.push_copy(&self.rx[i]).is_err() {
                self.flood_copy_too_big += 1;
            } else {
                copies += 1;
            }
        }
        self.flood_copies += copies;
        // Head-end replication, only for frames that came from local ports (split horizon).
        let from_local = meta.from_vtep.is_none()
            && matches!(self.ports[meta.in_port.0 as usize].role, PortRole::Local(_));
        let underlay = self.underlay_for(meta.net);
        if from_local && underlay.is_err() {
            self.flood_no_underlay += n_remote as u64;
        }
        if from_local && let Ok(tp) = underlay {
            for k in 0..n_remote {
                let v = self.env.nets[meta.net.0 as usize].peers[k];
                if self.send_remote(i, tp, v, false) {
                    self.flood_remote_copies += 1;
                } else {
                    self.flood_copy_too_big += 1;
                }
            }
        }
        if meta.trace != 0 {
            let detail = format!(
                "flood: {copies} local port(s){}",
                if from_local {
                    format!(", {n_remote} remote VTEP(s)")
                } else {
                    String::new()
                }
            );
            self.trace_output(i, Next::Flood, None, detail);
        }
    }
}
