//! Packet capture on one port (`vxmesh capture`): the frames a port received, and those it is
//! about to transmit (after its transmit path), copied as the port shows them on the wire
//! ([`Port::capture_frame`](crate::Port::capture_frame)) into a bounded backlog the control
//! plane drains into a pcap file. Off the packet path unless a capture runs (`#[cold]`).

use super::Switch;
use crate::packet::PortId;

/// Most frames a capture holds between two [`Switch::take_capture`] calls; beyond it frames
/// are counted as missed, never queued without bound.
pub const CAPTURE_BACKLOG: usize = 4096;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// When, in nanoseconds of [`Time`](crate::env::Time).
    pub time_ns: u64,
    /// Transmitted (else received).
    pub tx: bool,
    /// The Ethernet frame.
    pub data: Vec<u8>,
}

/// A capture in progress on one port: what `vxmesh capture` drains into a pcap file.
#[derive(Debug)]
pub(super) struct Capture {
    port: PortId,
    remaining: u64,
    frames: Vec<CapturedFrame>,
    missed: u64,
}

impl Capture {
    /// End the capture if it is of `port` (the port was removed): what was captured is still
    /// taken, then the capture stops.
    pub(super) fn end_if_on(&mut self, port: PortId) {
        if self.port == port {
            self.remaining = 0;
        }
    }
}

impl Switch {
    /// Start capturing `count` frames (received and transmitted) on `port`, replacing any
    /// capture in progress.
    pub fn start_capture(&mut self, port: PortId, count: u64) {
        self.capture = Some(Capture {
            port,
            remaining: count,
            frames: Vec::new(),
            missed: 0,
        });
    }

    /// Whether a capture is running (one at a time).
    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// Stop the capture, if any.
    pub fn stop_capture(&mut self) {
        self.capture = None;
    }

    /// The frames captured since the last call, frames missed because the backlog was full,
    /// and whether the capture is still running.
    pub fn take_capture(&mut self) -> (Vec<CapturedFrame>, u64, bool) {
        match &mut self.capture {
            Some(c) => {
                let frames = core::mem::take(&mut c.frames);
                let missed = core::mem::take(&mut c.missed);
                let running = c.remaining > 0;
                if !running {
                    self.capture = None;
                }
                (frames, missed, running)
            }
            None => (Vec::new(), 0, false),
        }
    }

    /// Copy the frames of `port`'s rx batch (or tx batch) into the capture, if it is the port.
    #[cold]
    pub(super) fn capture_batch(&mut self, port: PortId, tx: bool) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        if c.port != port || c.remaining == 0 {
            return;
        }
        let slot = &self.ports[port.0 as usize];
        let batch = if tx { &slot.tx } else { &self.rx };
        for p in batch.pkts() {
            if c.remaining == 0 {
                break;
            }
            if c.frames.len() >= CAPTURE_BACKLOG {
                c.missed += 1;
                continue;
            }
            let mut data = Vec::with_capacity(p.len() + 64);
            slot.port.capture_frame(p, tx, &mut data);
            c.frames.push(CapturedFrame {
                time_ns: self.env.now.0,
                tx,
                data,
            });
            c.remaining -= 1;
        }
    }
}
