//! DNS messages (RFC 1035), as far as a resolver that answers one question over UDP needs them:
//! the header, the question with its name, the EDNS0 OPT record (RFC 6891) a client uses to
//! advertise a larger UDP payload, and a response writer.
//!
//! Where it sits: the `dns` stage ([`crate::dns`]) checks every query sent to a network's
//! resolver address with [`Query::parse`], looks its name up, and turns the same buffer into the
//! response with [`Response`]: the header and question stay where they are, answers are written
//! after the question (their owner name a compression pointer to the question's), then the OPT
//! record if the query had one. Nothing allocates per message.
//!
//! Hand-written rather than a crate: what a query may hold here is narrow (one question, no
//! compression pointers, at most an OPT record), and the checks must be exactly those (each
//! counted under its own drop reason). `hickory-proto` and `simple-dns` parse into vectors of
//! records and names (an allocation per message); `domain` can parse without allocating but is
//! a general parser that follows pointers, so these checks and the in-place answer would still
//! be written here, behind a large dependency. The format is small enough to read in one screen.
//!
//! ```text
//!                                 1  1  1  1  1  1
//!   0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! |                      ID                       |
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! |QR|   Opcode  |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! |                    QDCOUNT                    |
//! |                    ANCOUNT                    |
//! |                    NSCOUNT                    |
//! |                    ARCOUNT                    |
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! question: QNAME (labels: length byte 1..=63, then the bytes; a zero byte ends the name;
//!           a length byte with the two top bits set is a compression pointer) QTYPE QCLASS
//! answer:   NAME TYPE CLASS TTL(32) RDLENGTH RDATA
//! OPT:      NAME=0 TYPE=41 CLASS=UDP payload size TTL=ext-rcode,version,DO RDLENGTH RDATA
//! ```

use std::net::Ipv4Addr;

use super::{Error, be16, check_min_len, set_be16};

/// The DNS port.
pub const PORT: u16 = 53;
/// Length of the header.
pub const HEADER_LEN: usize = 12;
/// Longest label (RFC 1035 2.3.4).
pub const MAX_LABEL: usize = 63;
/// Longest name in wire form, length bytes and the final zero included (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 255;
/// Largest UDP payload without EDNS0, and the least an EDNS0 client may advertise.
pub const MIN_UDP_PAYLOAD: usize = 512;
/// Where the question's name starts: a compression pointer to it is `0xc000 | 12`.
pub const QUESTION_NAME_OFFSET: usize = HEADER_LEN;
/// The two top bits of a length byte that make it a compression pointer (RFC 1035 4.1.4).
const POINTER_BITS: u8 = 0xc0;
/// QTYPE and QCLASS after a question's name.
const QUESTION_TAIL_LEN: usize = 4;
/// TYPE, CLASS, TTL and RDLENGTH after a record's name.
const RECORD_FIXED_LEN: usize = 10;
/// A compression pointer's length.
const POINTER_LEN: usize = 2;
/// An A record with a pointer as its name: pointer, fixed part, four address bytes.
pub const A_RECORD_LEN: usize = POINTER_LEN + RECORD_FIXED_LEN + 4;
/// An OPT record without options: the root name (one zero byte) and the fixed part.
pub const OPT_RECORD_LEN: usize = 1 + RECORD_FIXED_LEN;
/// Labels in the longest name (one byte each plus its length byte, and the root).
const MAX_LABELS: usize = MAX_NAME / 2;

/// Record type A (an IPv4 address).
pub const TYPE_A: u16 = 1;
/// Record type PTR (a name, for reverse lookups).
pub const TYPE_PTR: u16 = 12;
/// Record type AAAA (an IPv6 address).
pub const TYPE_AAAA: u16 = 28;
/// Record type OPT (EDNS0's pseudo-record).
pub const TYPE_OPT: u16 = 41;
/// QTYPE ANY.
pub const TYPE_ANY: u16 = 255;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// Opcode QUERY.
pub const OPCODE_QUERY: u8 = 0;

/// Response codes.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// The query could not be interpreted.
    pub const FORMERR: u8 = 1;
    /// The server failed.
    pub const SERVFAIL: u8 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// The kind of query is not implemented.
    pub const NOTIMP: u8 = 4;
    /// The server refuses to answer (here: a name it does not serve, and no upstream).
    pub const REFUSED: u8 = 5;
}

/// Byte ranges of the header fields, and the bits of the flags word.
pub mod field {
    use core::ops::Range;

    /// Transaction id.
    pub const ID: Range<usize> = 0..2;
    /// Flags: QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE.
    pub const FLAGS: Range<usize> = 2..4;
    /// Questions.
    pub const QDCOUNT: Range<usize> = 4..6;
    /// Answers.
    pub const ANCOUNT: Range<usize> = 6..8;
    /// Authority records.
    pub const NSCOUNT: Range<usize> = 8..10;
    /// Additional records.
    pub const ARCOUNT: Range<usize> = 10..12;

    /// A response (else a query).
    pub const FLAG_QR: u16 = 0x8000;
    /// The opcode's bits.
    pub const OPCODE_MASK: u16 = 0x7800;
    /// Where the opcode starts.
    pub const OPCODE_SHIFT: u16 = 11;
    /// Authoritative answer.
    pub const FLAG_AA: u16 = 0x0400;
    /// Truncated: the answer did not fit.
    pub const FLAG_TC: u16 = 0x0200;
    /// Recursion desired.
    pub const FLAG_RD: u16 = 0x0100;
    /// Recursion available.
    pub const FLAG_RA: u16 = 0x0080;
    /// Checking disabled (DNSSEC).
    pub const FLAG_CD: u16 = 0x0010;
    /// The response code's bits.
    pub const RCODE_MASK: u16 = 0x000f;
}

packet_wrapper! {
    /// A read/write wrapper around a DNS message's header.
    error: Error,
    /// Checks that the buffer holds the header.
    check_len: |packet| check_min_len(packet.buffer.as_ref().len(), HEADER_LEN),
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// The transaction id.
    #[inline]
    pub fn id(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ID])
    }

    /// The flags word.
    #[inline]
    pub fn flags(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLAGS])
    }

    /// Whether it is a response.
    #[inline]
    pub fn is_response(&self) -> bool {
        self.flags() & field::FLAG_QR != 0
    }

    /// The opcode.
    #[inline]
    pub fn opcode(&self) -> u8 {
        ((self.flags() & field::OPCODE_MASK) >> field::OPCODE_SHIFT) as u8
    }

    /// Whether the TC bit is set.
    #[inline]
    pub fn truncated(&self) -> bool {
        self.flags() & field::FLAG_TC != 0
    }

    /// The response code.
    #[inline]
    pub fn rcode(&self) -> u8 {
        (self.flags() & field::RCODE_MASK) as u8
    }

    /// Questions.
    #[inline]
    pub fn qdcount(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::QDCOUNT])
    }

    /// Answers.
    #[inline]
    pub fn ancount(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ANCOUNT])
    }

    /// Authority records.
    #[inline]
    pub fn nscount(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::NSCOUNT])
    }

    /// Additional records.
    #[inline]
    pub fn arcount(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ARCOUNT])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the transaction id.
    #[inline]
    pub fn set_id(&mut self, id: u16) {
        set_be16(&mut self.buffer.as_mut()[field::ID], id);
    }

    /// Sets the flags word.
    #[inline]
    pub fn set_flags(&mut self, flags: u16) {
        set_be16(&mut self.buffer.as_mut()[field::FLAGS], flags);
    }

    /// Sets the four counts: questions, answers, authority and additional records.
    #[inline]
    pub fn set_counts(&mut self, qd: u16, an: u16, ns: u16, ar: u16) {
        let b = self.buffer.as_mut();
        set_be16(&mut b[field::QDCOUNT], qd);
        set_be16(&mut b[field::ANCOUNT], an);
        set_be16(&mut b[field::NSCOUNT], ns);
        set_be16(&mut b[field::ARCOUNT], ar);
    }
}

/// Why a message is not a query this resolver takes (each is a drop reason of the `dns` stage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Shorter than its header, or than what the header announces.
    #[error("truncated message")]
    Truncated,
    /// A response sent to the resolver.
    #[error("a response, not a query")]
    Response,
    /// An opcode other than QUERY.
    #[error("opcode is not QUERY")]
    Opcode,
    /// Not exactly one question.
    #[error("QDCOUNT is not 1")]
    QdCount,
    /// A compression pointer in the query.
    #[error("compression pointer in a query")]
    Compression,
    /// A label over 63 bytes (or a reserved label type).
    #[error("label over 63 bytes")]
    LabelTooLong,
    /// A name over 255 bytes.
    #[error("name over 255 bytes")]
    NameTooLong,
    /// Answer or authority records in a query, more than one additional record, an
    /// additional record that is not a well-formed OPT, or bytes after it.
    #[error("malformed query")]
    Malformed,
}

/// Checks the name that starts at `start` in `msg`: labels of 1..=63 bytes, no compression
/// pointer, at most 255 bytes in all. Returns where it ends (after its zero byte).
pub fn check_name(msg: &[u8], start: usize) -> Result<usize, DnsError> {
    let mut pos = start;
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Truncated)?;
        if len & POINTER_BITS == POINTER_BITS {
            return Err(DnsError::Compression);
        }
        // 0x40 and 0x80 are reserved label types (RFC 6891 dropped the extended ones): any
        // length byte over 63 is refused as one label too long.
        if usize::from(len) > MAX_LABEL {
            return Err(DnsError::LabelTooLong);
        }
        pos += 1 + usize::from(len);
        if pos - start > MAX_NAME {
            return Err(DnsError::NameTooLong);
        }
        if len == 0 {
            return Ok(pos);
        }
        if pos > msg.len() {
            return Err(DnsError::Truncated);
        }
    }
}

/// A checked query: one question, and the EDNS0 payload size if it had an OPT record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    /// Transaction id.
    pub id: u16,
    /// The query's flags word (RD and CD are echoed).
    pub flags: u16,
    /// Where the question's name ends (it starts at [`QUESTION_NAME_OFFSET`]).
    pub name_end: usize,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Where the question ends: answers are written from here.
    pub end: usize,
    /// The UDP payload size an OPT record advertised (at least [`MIN_UDP_PAYLOAD`]); `None`
    /// without EDNS0.
    pub edns: Option<u16>,
}

impl Query {
    /// Checks a query in `msg` (the UDP payload): the header, QR = 0, opcode QUERY,
    /// QDCOUNT = 1, no answer or authority records, the question's name (see
    /// [`check_name`]), and at most one additional record, an OPT with the root name. Trailing
    /// bytes after that are refused ([`DnsError::Malformed`]).
    pub fn parse(msg: &[u8]) -> Result<Query, DnsError> {
        let h = Packet::new_checked(msg).map_err(|_| DnsError::Truncated)?;
        if h.is_response() {
            return Err(DnsError::Response);
        }
        if h.opcode() != OPCODE_QUERY {
            return Err(DnsError::Opcode);
        }
        if h.qdcount() != 1 {
            return Err(DnsError::QdCount);
        }
        if h.ancount() != 0 || h.nscount() != 0 || h.arcount() > 1 {
            return Err(DnsError::Malformed);
        }
        let name_end = check_name(msg, QUESTION_NAME_OFFSET)?;
        let end = name_end + QUESTION_TAIL_LEN;
        let tail = msg.get(name_end..end).ok_or(DnsError::Truncated)?;
        let (qtype, qclass) = (be16(tail), be16(&tail[2..]));
        let mut edns = None;
        let mut pos = end;
        if h.arcount() == 1 {
            // Only an OPT record may come with a query here: its name is the root.
            let rec = msg
                .get(pos..pos + OPT_RECORD_LEN)
                .ok_or(DnsError::Truncated)?;
            if rec[0] & 0xc0 == 0xc0 {
                // A compression pointer anywhere in a query has its own reason.
                return Err(DnsError::Compression);
            }
            if rec[0] != 0 || be16(&rec[1..]) != TYPE_OPT {
                return Err(DnsError::Malformed);
            }
            let size = be16(&rec[3..]);
            let rdlen = usize::from(be16(&rec[9..]));
            pos += OPT_RECORD_LEN + rdlen;
            if pos > msg.len() {
                return Err(DnsError::Truncated);
            }
            edns = Some(size.max(MIN_UDP_PAYLOAD as u16));
        }
        if pos != msg.len() {
            return Err(DnsError::Malformed);
        }
        Ok(Query {
            id: h.id(),
            flags: h.flags(),
            name_end,
            qtype,
            qclass,
            end,
            edns,
        })
    }

    /// The question's name in wire form (labels, then the zero byte), as `msg` has it.
    #[inline]
    pub fn name<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[QUESTION_NAME_OFFSET..self.name_end]
    }

    /// Whether recursion was asked for.
    #[inline]
    pub fn recursion_desired(&self) -> bool {
        self.flags & field::FLAG_RD != 0
    }
}

/// Copies a checked wire-form name into `out` in lower case (names compare without regard to
/// ASCII case, RFC 4343) and returns the copy.
#[inline]
pub fn lower_name<'a>(name: &[u8], out: &'a mut [u8; MAX_NAME]) -> &'a [u8] {
    let n = name.len().min(MAX_NAME);
    for (o, b) in out[..n].iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    &out[..n]
}

/// Encodes a dotted name (`tasks.web`, a trailing dot allowed) in wire form, appending to
/// `out`; the labels are checked as [`check_name`] checks them (the control plane builds its
/// tables with it).
pub fn encode_name(dotted: &str, out: &mut Vec<u8>) -> Result<(), DnsError> {
    let dotted = dotted.strip_suffix('.').unwrap_or(dotted);
    let start = out.len();
    if !dotted.is_empty() {
        for label in dotted.split('.') {
            if label.is_empty() {
                return Err(DnsError::Malformed);
            }
            if label.len() > MAX_LABEL {
                return Err(DnsError::LabelTooLong);
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > MAX_NAME {
        out.truncate(start);
        return Err(DnsError::NameTooLong);
    }
    Ok(())
}

/// The dotted form of a checked wire-form name (for messages and traces; the root is `.`).
pub fn dotted(name: &[u8]) -> String {
    let mut s = String::new();
    let mut pos = 0;
    while let Some(&len) = name.get(pos) {
        if len == 0 || pos + 1 + usize::from(len) > name.len() {
            break;
        }
        if !s.is_empty() {
            s.push('.');
        }
        s.push_str(&String::from_utf8_lossy(
            &name[pos + 1..pos + 1 + usize::from(len)],
        ));
        pos += 1 + usize::from(len);
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// The reverse-lookup suffix in wire form, lower case.
const IN_ADDR_ARPA: &[u8] = b"\x07in-addr\x04arpa\x00";

/// The IPv4 address a lower-case wire-form name under `in-addr.arpa` stands for
/// (`11.9.0.10.in-addr.arpa` is 10.0.9.11); `None` for any other name.
pub fn reverse_v4(name: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut pos = 0;
    for i in (0..4).rev() {
        let len = usize::from(*name.get(pos)?);
        let digits = name.get(pos + 1..pos + 1 + len)?;
        if !(1..=3).contains(&len) || (len > 1 && digits[0] == b'0') {
            return None;
        }
        let mut v: u16 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(d - b'0');
        }
        octets[i] = u8::try_from(v).ok()?;
        pos += 1 + len;
    }
    (name.get(pos..)? == IN_ADDR_ARPA).then(|| Ipv4Addr::from(octets))
}

/// Writes a response over the query it answers, in the query's own buffer: the header is
/// turned into the response's, the question stays as it was asked (case included), and
/// answers follow it, up to `limit` bytes in all; what does not fit sets TC. A query with
/// EDNS0 gets an OPT record back, room for which is kept from the start.
#[derive(Debug)]
pub struct Response<'a> {
    buf: &'a mut [u8],
    query: Query,
    len: usize,
    /// Bytes the answers may use: the limit minus the OPT record.
    room: usize,
    answers: u16,
    truncated: bool,
    /// The payload size the OPT record advertises.
    advertise: u16,
}

impl<'a> Response<'a> {
    /// Start the response to `query` (checked in `buf` by [`Query::parse`]) with `rcode`.
    /// `limit`: the largest message the client takes (its EDNS0 size, else 512, capped by
    /// the path's MTU and the buffer); `advertise`: the payload size this resolver announces
    /// in its OPT record. The question always goes back whole, even past `limit` (the caller
    /// keeps `limit` at 512 or more, which a checked query's question always fits).
    pub fn new(buf: &'a mut [u8], query: &Query, rcode: u8, limit: usize, advertise: u16) -> Self {
        let limit = limit.min(buf.len());
        let opt = if query.edns.is_some() {
            OPT_RECORD_LEN
        } else {
            0
        };
        let aa = if rcode == rcode::NOERROR {
            field::FLAG_AA
        } else {
            0
        };
        let flags = field::FLAG_QR
            | aa
            | (query.flags & (field::FLAG_RD | field::FLAG_CD))
            | (u16::from(rcode) & field::RCODE_MASK);
        let mut h = Packet::new_unchecked(&mut buf[..]);
        h.set_flags(flags);
        h.set_counts(1, 0, 0, 0);
        Response {
            buf,
            query: *query,
            len: query.end,
            room: limit.saturating_sub(opt),
            answers: 0,
            truncated: false,
            advertise,
        }
    }

    /// Append an A record for the question's name; false (and TC set) if it does not fit.
    pub fn push_a(&mut self, addr: Ipv4Addr, ttl: u32) -> bool {
        let Some(rec) = self.reserve(A_RECORD_LEN) else {
            return false;
        };
        write_fixed(rec, TYPE_A, ttl, 4);
        rec[POINTER_LEN + RECORD_FIXED_LEN..].copy_from_slice(&addr.octets());
        true
    }

    /// Append a PTR record for the question's name pointing at `target` (a checked wire-form
    /// name), its longest suffix shared with the question's name written as a pointer; false
    /// (and TC set) if it does not fit.
    pub fn push_ptr(&mut self, target: &[u8], ttl: u32) -> bool {
        let (keep, pointer) = self.compress(target);
        let rdlen = keep + if pointer.is_some() { POINTER_LEN } else { 1 };
        let Some(rec) = self.reserve(POINTER_LEN + RECORD_FIXED_LEN + rdlen) else {
            return false;
        };
        write_fixed(rec, TYPE_PTR, ttl, rdlen as u16);
        let data = &mut rec[POINTER_LEN + RECORD_FIXED_LEN..];
        data[..keep].copy_from_slice(&target[..keep]);
        match pointer {
            Some(off) => set_be16(&mut data[keep..], 0xc000 | off as u16),
            None => data[keep] = 0,
        }
        true
    }

    /// The longest suffix of `target` (at a label boundary, not the root alone) equal, without
    /// regard to case, to a suffix of the question's name: the bytes of `target` to write
    /// before it, and the suffix's offset in the message (`None`: no shared suffix; the whole
    /// name is written with its zero byte).
    fn compress(&self, target: &[u8]) -> (usize, Option<usize>) {
        let q = &self.buf[QUESTION_NAME_OFFSET..self.query.name_end];
        let mut qstarts = [0usize; MAX_LABELS];
        let mut nq = 0;
        let mut pos = 0;
        while pos < q.len() && q[pos] != 0 && nq < MAX_LABELS {
            qstarts[nq] = pos;
            nq += 1;
            pos += 1 + usize::from(q[pos]);
        }
        let mut pos = 0;
        while pos < target.len() && target[pos] != 0 {
            let suffix = &target[pos..];
            if let Some(&qs) = qstarts[..nq]
                .iter()
                .find(|&&qs| q[qs..].eq_ignore_ascii_case(suffix))
            {
                return (pos, Some(QUESTION_NAME_OFFSET + qs));
            }
            pos += 1 + usize::from(target[pos]);
        }
        (target.len().saturating_sub(1), None)
    }

    /// `n` bytes for one more answer, with its name a pointer to the question's; `None`, and
    /// TC set, once one did not fit (later ones are not tried: answers stay in order).
    fn reserve(&mut self, n: usize) -> Option<&mut [u8]> {
        if self.truncated || self.len + n > self.room {
            self.truncated = true;
            return None;
        }
        let rec = &mut self.buf[self.len..self.len + n];
        set_be16(rec, 0xc000 | QUESTION_NAME_OFFSET as u16);
        self.len += n;
        self.answers += 1;
        Some(rec)
    }

    /// Whether an answer did not fit.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Answers written.
    pub fn answers(&self) -> u16 {
        self.answers
    }

    /// Finish: the answer count, TC, and the OPT record for an EDNS0 query. Returns the
    /// message's length.
    pub fn finish(self) -> usize {
        let mut len = self.len;
        // Room for the OPT record was kept unless the buffer is shorter than the question
        // plus the record (a caller's mistake; the record is left out rather than panic).
        let opt = self.query.edns.is_some() && len + OPT_RECORD_LEN <= self.buf.len();
        let mut h = Packet::new_unchecked(&mut self.buf[..]);
        let mut flags = h.flags();
        if self.truncated {
            flags |= field::FLAG_TC;
        }
        h.set_flags(flags);
        h.set_counts(1, self.answers, 0, u16::from(opt));
        if opt {
            let rec = &mut self.buf[len..len + OPT_RECORD_LEN];
            rec[0] = 0;
            set_be16(&mut rec[1..], TYPE_OPT);
            set_be16(&mut rec[3..], self.advertise);
            // Extended RCODE 0, version 0, no DO bit, no options.
            rec[5..].fill(0);
            len += OPT_RECORD_LEN;
        }
        len
    }
}

/// Writes TYPE, CLASS IN, TTL and RDLENGTH after a record's two-byte name pointer.
fn write_fixed(rec: &mut [u8], rtype: u16, ttl: u32, rdlen: u16) {
    let f = &mut rec[POINTER_LEN..POINTER_LEN + RECORD_FIXED_LEN];
    set_be16(f, rtype);
    set_be16(&mut f[2..], CLASS_IN);
    f[4..8].copy_from_slice(&ttl.to_be_bytes());
    set_be16(&mut f[8..], rdlen);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `dig web A +noedns` with id 0x1234 and RD: header, question.
    const WEB_A: [u8; 21] = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, // header: RD, QDCOUNT 1
        3, b'w', b'e', b'b', 0, // QNAME web
        0, 1, 0, 1, // A IN
    ];

    /// A query for `name` (dotted) of `qtype`, with an OPT record of `edns` if given.
    fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        encode_name(name, &mut m).unwrap();
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some(size) = edns {
            m[11] = 1;
            m.extend_from_slice(&[0, 0, 41]);
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        m
    }

    /// A response as smoltcp's independent parser reads it: the question's name, then each
    /// answer's name, TTL and data (an address, or a name followed through its pointers).
    fn smoltcp_reads(msg: &[u8]) -> (String, Vec<(String, u32, String)>) {
        use smoltcp::wire::{DnsPacket, DnsQuestion, DnsRecord, DnsRecordData};
        let p = DnsPacket::new_checked(msg).expect("smoltcp reads the header");
        let name = |bytes: &[u8]| -> String {
            let labels: Vec<String> = p
                .parse_name(bytes)
                .map(|l| String::from_utf8_lossy(l.expect("smoltcp reads the name")).into_owned())
                .collect();
            labels.join(".")
        };
        let (mut rest, q) = DnsQuestion::parse(p.payload()).expect("smoltcp reads the question");
        let mut answers = Vec::new();
        for _ in 0..p.answer_record_count() {
            let (r, rec) = DnsRecord::parse(rest).expect("smoltcp reads the record");
            rest = r;
            let data = match rec.data {
                DnsRecordData::A(a) => a.to_string(),
                DnsRecordData::Other(_, d) => name(d),
                other => format!("{other:?}"),
            };
            answers.push((name(rec.name), rec.ttl, data));
        }
        (name(q.name), answers)
    }

    #[test]
    fn parses_what_smoltcp_emits() {
        use smoltcp::wire::{DnsFlags, DnsOpcode, DnsPacket, DnsQueryType, DnsQuestion, DnsRepr};
        let mut name = Vec::new();
        encode_name("tasks.web", &mut name).unwrap();
        let repr = DnsRepr {
            transaction_id: 0x4242,
            opcode: DnsOpcode::Query,
            flags: DnsFlags::RECURSION_DESIRED,
            question: DnsQuestion {
                name: &name,
                type_: DnsQueryType::A,
            },
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut DnsPacket::new_unchecked(&mut buf[..]));
        let q = Query::parse(&buf).unwrap();
        assert_eq!((q.id, q.qtype, q.edns), (0x4242, TYPE_A, None));
        assert!(q.recursion_desired());
        assert_eq!(dotted(q.name(&buf)), "tasks.web");
    }

    #[test]
    fn reads_a_fixed_query() {
        let q = Query::parse(&WEB_A).unwrap();
        assert_eq!(
            (q.id, q.qtype, q.qclass, q.edns),
            (0x1234, TYPE_A, CLASS_IN, None)
        );
        assert_eq!(q.name(&WEB_A), b"\x03web\x00");
        assert!(q.recursion_desired());
        assert_eq!((q.name_end, q.end), (17, 21));
        assert_eq!(dotted(q.name(&WEB_A)), "web");
    }

    #[test]
    fn writes_answers_after_the_question_with_a_pointer_to_it() {
        let mut buf = [0u8; 512];
        buf[..WEB_A.len()].copy_from_slice(&WEB_A);
        let q = Query::parse(&WEB_A).unwrap();
        let mut r = Response::new(&mut buf, &q, rcode::NOERROR, 512, 1232);
        assert!(r.push_a(Ipv4Addr::new(10, 0, 9, 100), 2));
        let n = r.finish();
        let want: [u8; 37] = [
            0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0, // QR AA RD, 1 question 1 answer
            3, b'w', b'e', b'b', 0, 0, 1, 0, 1, // the question
            0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 2, 0, 4, 10, 0, 9, 100, // web A IN 2s 10.0.9.100
        ];
        assert_eq!(&buf[..n], &want[..]);
        assert_eq!(
            smoltcp_reads(&buf[..n]),
            ("web".into(), vec![("web".into(), 2, "10.0.9.100".into())])
        );
    }

    #[test]
    fn edns_size_is_read_and_answered_with_an_opt_record() {
        let m = query("c11", TYPE_A, Some(4096));
        let q = Query::parse(&m).unwrap();
        assert_eq!(q.edns, Some(4096));
        // A size under 512 counts as 512 (RFC 6891 6.2.5).
        assert_eq!(
            Query::parse(&query("c11", TYPE_A, Some(100))).unwrap().edns,
            Some(512)
        );
        let mut buf = m.clone();
        buf.resize(600, 0);
        let mut r = Response::new(&mut buf, &q, rcode::NOERROR, 600, 1422);
        r.push_a(Ipv4Addr::new(10, 0, 9, 11), 2);
        let n = r.finish();
        let h = Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!((h.ancount(), h.arcount()), (1, 1));
        let opt = &buf[n - OPT_RECORD_LEN..n];
        assert_eq!(opt, &[0, 0, 41, 0x05, 0x8e, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn answers_that_do_not_fit_set_tc_and_stop() {
        let m = query("tasks.web", TYPE_A, None);
        let q = Query::parse(&m).unwrap();
        let mut buf = m.clone();
        buf.resize(2048, 0);
        let mut r = Response::new(&mut buf, &q, rcode::NOERROR, MIN_UDP_PAYLOAD, 1422);
        let fit = (MIN_UDP_PAYLOAD - q.end) / A_RECORD_LEN;
        let mut written = 0;
        for i in 0..100u32 {
            if r.push_a(Ipv4Addr::from(0x0a00_0000 + i), 2) {
                written += 1;
            }
        }
        assert!(r.is_truncated());
        assert_eq!(written, fit);
        let n = r.finish();
        assert!(n <= MIN_UDP_PAYLOAD);
        let h = Packet::new_checked(&buf[..n]).unwrap();
        assert!(h.truncated());
        assert_eq!(usize::from(h.ancount()), fit);
    }

    #[test]
    fn ptr_targets_share_the_question_suffix_by_pointer() {
        // The target `x.in-addr.arpa` shares `in-addr.arpa` with the question.
        let m = query("11.9.0.10.in-addr.arpa", TYPE_PTR, None);
        let q = Query::parse(&m).unwrap();
        let mut lower = [0u8; MAX_NAME];
        assert_eq!(
            reverse_v4(lower_name(q.name(&m), &mut lower)),
            Some(Ipv4Addr::new(10, 0, 9, 11))
        );
        let mut buf = m.clone();
        buf.resize(512, 0);
        let mut target = Vec::new();
        encode_name("x.IN-ADDR.arpa", &mut target).unwrap();
        let mut r = Response::new(&mut buf, &q, rcode::NOERROR, 512, 1422);
        assert!(r.push_ptr(&target, 2));
        let n = r.finish();
        // rdata: 1 x, then a pointer to `in-addr` in the question (offset 12 + 3 + 2 + 2 + 3).
        assert_eq!(&buf[n - 4..n], &[1, b'x', 0xc0, 22]);
        let q_name = "11.9.0.10.in-addr.arpa".to_string();
        assert_eq!(
            smoltcp_reads(&buf[..n]),
            (q_name.clone(), vec![(q_name, 2, "x.in-addr.arpa".into())])
        );
        // Without a shared suffix, the whole name.
        let mut buf = m.clone();
        buf.resize(512, 0);
        let mut target = Vec::new();
        encode_name("c11", &mut target).unwrap();
        let mut r = Response::new(&mut buf, &q, rcode::NOERROR, 512, 1422);
        assert!(r.push_ptr(&target, 2));
        let n = r.finish();
        assert_eq!(&buf[n - 7..n], &[0, 5, 3, b'c', b'1', b'1', 0]);
    }

    #[test]
    fn reverse_names() {
        let rev = |s: &str| {
            let mut w = Vec::new();
            encode_name(s, &mut w).unwrap();
            reverse_v4(&w)
        };
        assert_eq!(rev("1.2.3.4.in-addr.arpa"), Some(Ipv4Addr::new(4, 3, 2, 1)));
        assert_eq!(rev("0.0.0.0.in-addr.arpa"), Some(Ipv4Addr::UNSPECIFIED));
        for bad in [
            "1.2.3.in-addr.arpa",
            "1.2.3.4.5.in-addr.arpa",
            "256.2.3.4.in-addr.arpa",
            "01.2.3.4.in-addr.arpa",
            "a.2.3.4.in-addr.arpa",
            "1.2.3.4.in-addr.arpa.com",
            "1.2.3.4",
            "web",
        ] {
            assert_eq!(rev(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_bad_query_is_refused_for_its_own_reason() {
        let ok = query("web", TYPE_A, None);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut m = ok.clone();
            f(&mut m);
            Query::parse(&m)
        };
        assert_eq!(with(&|m| m[2] |= 0x80), Err(DnsError::Response));
        assert_eq!(with(&|m| m[2] |= 2 << 3), Err(DnsError::Opcode));
        assert_eq!(with(&|m| m[5] = 2), Err(DnsError::QdCount));
        assert_eq!(with(&|m| m[5] = 0), Err(DnsError::QdCount));
        assert_eq!(with(&|m| m[7] = 1), Err(DnsError::Malformed));
        assert_eq!(with(&|m| m[9] = 1), Err(DnsError::Malformed));
        assert_eq!(with(&|m| m[11] = 2), Err(DnsError::Malformed));
        assert_eq!(with(&|m| m[11] = 1), Err(DnsError::Truncated));
        assert_eq!(with(&|m| m.push(0)), Err(DnsError::Malformed));
        // A pointer instead of the name, and after a first label.
        let mut p = ok[..12].to_vec();
        p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(Query::parse(&p), Err(DnsError::Compression));
        let mut p = ok[..12].to_vec();
        p.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(Query::parse(&p), Err(DnsError::Compression));
        // A pointer as the OPT record's owner name.
        let mut p = query("web", 1, Some(1232));
        let opt = p.len() - OPT_RECORD_LEN;
        assert_eq!(p[opt], 0, "the OPT owner is the root");
        p[opt] = 0xc0;
        p.insert(opt + 1, 12);
        assert_eq!(Query::parse(&p), Err(DnsError::Compression));
        // A 64-byte label, and the reserved label types.
        let mut p = ok[..12].to_vec();
        p.push(64);
        p.extend_from_slice(&[b'a'; 64]);
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(Query::parse(&p), Err(DnsError::LabelTooLong));
        for t in [0x40, 0x80] {
            let mut p = ok[..12].to_vec();
            p.extend_from_slice(&[t | 1, b'a', 0, 0, 1, 0, 1]);
            assert_eq!(Query::parse(&p), Err(DnsError::LabelTooLong));
        }
        // 63 + 63 + 63 + 62 bytes of labels: 255 with lengths and the root is the most.
        let at_most = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert!(Query::parse(&query(&at_most, TYPE_A, None)).is_ok());
        let mut p = ok[..12].to_vec();
        for _ in 0..4 {
            p.push(63);
            p.extend_from_slice(&[b'a'; 63]);
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(Query::parse(&p), Err(DnsError::NameTooLong));
        let mut long = Vec::new();
        assert_eq!(
            encode_name(&format!("{at_most}e"), &mut long),
            Err(DnsError::NameTooLong)
        );
        assert!(long.is_empty());
        // An additional record that is not OPT.
        let mut m = query("web", TYPE_A, Some(1232));
        m[ok.len() + 2] = 1;
        assert_eq!(Query::parse(&m), Err(DnsError::Malformed));
    }

    proptest! {
        #[test]
        fn every_truncation_of_a_query_is_refused(
            labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..5),
            qtype: u16,
            edns in proptest::option::of(0u16..=u16::MAX),
        ) {
            let name = labels.join(".");
            let m = query(&name, qtype, edns);
            let q = Query::parse(&m).unwrap();
            prop_assert_eq!(q.qtype, qtype);
            prop_assert_eq!(q.edns, edns.map(|e| e.max(512)));
            prop_assert_eq!(dotted(q.name(&m)), name);
            for n in 0..m.len() {
                prop_assert_eq!(Query::parse(&m[..n]), Err(DnsError::Truncated), "{} bytes", n);
            }
        }

        #[test]
        fn random_bytes_never_panic_and_an_accepted_query_is_answered_within_the_limit(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            header in proptest::collection::vec(any::<u8>(), 12),
            answers in 0usize..80,
            limit in 512usize..1500,
        ) {
            // Raw bytes, and raw bytes behind a plausible query header.
            let mut framed = header.clone();
            framed[2] &= 0x07;
            framed[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
            framed.extend_from_slice(&bytes);
            for m in [&bytes[..], &framed[..]] {
                let _ = reverse_v4(m);
                let _ = dotted(m);
                let Ok(q) = Query::parse(m) else { continue };
                prop_assert!(q.end <= m.len() && q.name_end - QUESTION_NAME_OFFSET <= MAX_NAME);
                let mut lower = [0u8; MAX_NAME];
                let name = lower_name(q.name(m), &mut lower).to_vec();
                let _ = reverse_v4(&name);
                let mut buf = m.to_vec();
                buf.resize(2048, 0);
                let mut r = Response::new(&mut buf, &q, rcode::NOERROR, limit, 1422);
                for i in 0..answers {
                    if i % 2 == 0 {
                        r.push_a(Ipv4Addr::from(i as u32), 2);
                    } else {
                        r.push_ptr(&name, 2);
                    }
                }
                let n = r.finish();
                prop_assert!(n <= limit.max(q.end + OPT_RECORD_LEN));
                let h = Packet::new_checked(&buf[..n]).unwrap();
                prop_assert!(h.is_response());
                prop_assert_eq!(h.id(), q.id);
            }
        }
    }
}
