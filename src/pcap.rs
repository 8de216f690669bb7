//! pcap files for `vxmesh capture`: the classic libpcap format (nanosecond timestamps,
//! Ethernet link type), which tshark, Wireshark and tcpdump read. Off the packet path: the
//! control side writes frames the switch copied out of one port's batches.

use std::io::{self, Write};

/// Magic of a nanosecond-resolution pcap file.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Snapshot length written in the header.
pub const SNAPLEN: u32 = 65535;
const VERSION: (u16, u16) = (2, 4);

/// Writes a pcap stream.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Write the file header.
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_NANOS.to_le_bytes());
        h.extend_from_slice(&VERSION.0.to_le_bytes());
        h.extend_from_slice(&VERSION.1.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&SNAPLEN.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// Write one frame seen at `unix_ns` nanoseconds since the epoch.
    pub fn frame(&mut self, unix_ns: u64, data: &[u8]) -> io::Result<()> {
        let len = data.len().min(SNAPLEN as usize);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((unix_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((unix_ns % 1_000_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&data[..len])
    }

    /// Flush the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Frames waiting for the writer thread; beyond it a capture counts frames as missed.
pub const WRITE_BACKLOG: usize = 4096;

/// A pcap file written by a thread of its own: the control side hands frames over without
/// ever blocking on the file (a slow or hung file system stalls only that thread).
pub struct Sink {
    tx: std::sync::mpsc::SyncSender<(u64, Vec<u8>)>,
    thread: std::thread::JoinHandle<io::Result<u64>>,
}

/// What became of a frame offered to a [`Sink`].
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued for writing.
    Queued,
    /// The backlog is full: the frame is missed.
    Full,
    /// The writer stopped on an error ([`Sink::finish`] returns it).
    Failed,
}

impl Sink {
    /// Start writing `file` (header first) on a thread of its own.
    pub fn spawn(file: std::fs::File) -> io::Result<Sink> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(WRITE_BACKLOG);
        let thread = std::thread::Builder::new()
            .name("vxmesh-pcap".into())
            .spawn(move || {
                let mut w = PcapWriter::new(io::BufWriter::new(file))?;
                let mut n = 0u64;
                for (t, data) in rx {
                    w.frame(t, &data)?;
                    n += 1;
                }
                w.flush()?;
                Ok(n)
            })?;
        Ok(Sink { tx, thread })
    }

    /// Hand a frame seen at `unix_ns` to the writer, without blocking.
    pub fn offer(&self, unix_ns: u64, data: Vec<u8>) -> Offer {
        use std::sync::mpsc::TrySendError;
        match self.tx.try_send((unix_ns, data)) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(_)) => Offer::Full,
            Err(TrySendError::Disconnected(_)) => Offer::Failed,
        }
    }

    /// Stop after what is queued; the frames written, or the writer's error. Blocks until the
    /// writer is done: call it from a blocking context.
    pub fn finish(self) -> io::Result<u64> {
        drop(self.tx);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the pcap writer panicked")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_writes_what_it_is_offered_and_reports_errors() {
        let dir = std::env::temp_dir().join(format!("vxpcap{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.pcap");
        let sink = Sink::spawn(std::fs::File::create(&path).unwrap()).unwrap();
        for i in 0..10u8 {
            assert_eq!(sink.offer(u64::from(i), vec![i; 60]), Offer::Queued);
        }
        assert_eq!(sink.finish().unwrap(), 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24 + 10 * (16 + 60));
        // A file that cannot be written: the writer stops and says why.
        let ro = std::fs::OpenOptions::new().read(true).open(&path).unwrap();
        let sink = Sink::spawn(ro).unwrap();
        let _ = sink.offer(0, vec![0; 60]);
        assert!(sink.finish().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn header_and_record_layout() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.frame(1_700_000_000_123_456_789, &[1, 2, 3]).unwrap();
        let b = w.out;
        assert_eq!(b.len(), 24 + 16 + 3);
        assert_eq!(&b[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(b[24..28].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(
            u32::from_le_bytes(b[28..32].try_into().unwrap()),
            123_456_789
        );
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 3);
        assert_eq!(&b[40..], &[1, 2, 3]);
    }
}
