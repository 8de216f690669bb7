//! TCP connection states and timeouts, exactly as IPVS's `ip_vs_proto_tcp.c`.
//!
//! The `lb-nat` stage feeds every tracked TCP packet's flags through [`TcpState::next`] (the
//! IPVS `tcp_states` table, "input" for client packets, "output" for backend replies) and
//! re-arms the entry's expiry from [`Timeouts`]. UDP entries have one state and one timeout.

use core::fmt;

/// IPVS TCP connection states (`IP_VS_TCP_S_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// No packet seen yet.
    #[default]
    None = 0,
    /// Three-way handshake done.
    Established,
    /// SYN seen from the backend side.
    SynSent,
    /// SYN seen from the client.
    SynRecv,
    /// FIN seen.
    FinWait,
    /// Both FINs seen.
    TimeWait,
    /// Reset or closed.
    Close,
    /// FIN from the client while established.
    CloseWait,
    /// Last ACK awaited.
    LastAck,
    /// Listening.
    Listen,
    /// SYN+ACK seen.
    SynAck,
}

/// Number of TCP states.
pub const TCP_STATES: usize = 11;

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    None as NO, SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// `tcp_states[]`: [direction][event][state] -> state. Events: syn, fin, ack, rst.
const TABLE: [[[TcpState; TCP_STATES]; 4]; 2] = [
    // INPUT (client -> service)
    [
        //     sNO sES sSS sSR sFW sTW sCL sCW sLA sLI sSA
        /*syn*/
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // OUTPUT (backend -> client)
    [
        /*syn*/ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
];

impl TcpState {
    /// All states, by their numeric value.
    pub const ALL: [TcpState; TCP_STATES] = [NO, ES, SS, SR, FW, TW, CL, CW, LA, LI, SA];

    /// The state of numeric value `v` (unknown values read as `None`).
    #[inline]
    pub fn from_u8(v: u8) -> TcpState {
        TcpState::ALL.get(usize::from(v)).copied().unwrap_or(NO)
    }

    /// `set_tcp_state`: the state after a packet with TCP `flags`, from the client
    /// (`reply == false`) or the backend. A packet with none of SYN/FIN/ACK/RST closes.
    #[inline]
    pub fn next(self, reply: bool, flags: u8) -> TcpState {
        use vswitch::wire::tcp;
        let event = if flags & tcp::FLAG_RST != 0 {
            3
        } else if flags & tcp::FLAG_SYN != 0 {
            0
        } else if flags & tcp::FLAG_FIN != 0 {
            1
        } else if flags & tcp::FLAG_ACK != 0 {
            2
        } else {
            return CL;
        };
        TABLE[usize::from(reply)][event][self as usize]
    }

    /// The name ipvsadm prints.
    pub fn name(self) -> &'static str {
        match self {
            NO => "NONE",
            ES => "ESTABLISHED",
            SS => "SYN_SENT",
            SR => "SYN_RECV",
            FW => "FIN_WAIT",
            TW => "TIME_WAIT",
            CL => "CLOSE",
            CW => "CLOSE_WAIT",
            LA => "LAST_ACK",
            LI => "LISTEN",
            SA => "SYNACK",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp` sets three of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Per TCP state, indexed by `TcpState as usize`.
    pub tcp: [u32; TCP_STATES],
    /// UDP.
    pub udp: u32,
}

impl Default for Timeouts {
    /// IPVS's `tcp_timeouts[]` and UDP's 300 s.
    fn default() -> Timeouts {
        let mut tcp = [0; TCP_STATES];
        tcp[NO as usize] = 2;
        tcp[ES as usize] = 15 * 60;
        tcp[SS as usize] = 2 * 60;
        tcp[SR as usize] = 60;
        tcp[FW as usize] = 2 * 60;
        tcp[TW as usize] = 2 * 60;
        tcp[CL as usize] = 10;
        tcp[CW as usize] = 60;
        tcp[LA as usize] = 30;
        tcp[LI as usize] = 2 * 60;
        tcp[SA as usize] = 2 * 60;
        Timeouts { tcp, udp: 5 * 60 }
    }
}

impl Timeouts {
    /// `ipvsadm --set tcp tcpfin udp`: established, FIN_WAIT and UDP timeouts; 0 keeps a value.
    pub fn set(&mut self, tcp: u32, tcpfin: u32, udp: u32) {
        if tcp != 0 {
            self.tcp[ES as usize] = tcp;
        }
        if tcpfin != 0 {
            self.tcp[FW as usize] = tcpfin;
        }
        if udp != 0 {
            self.udp = udp;
        }
    }

    /// The longest timeout of any state (how long an entry may wait for its next packet).
    pub fn longest(&self) -> u32 {
        self.tcp.iter().copied().fold(self.udp, u32::max)
    }

    /// Timeout of one TCP state.
    #[inline]
    pub fn tcp_state(&self, s: TcpState) -> u32 {
        self.tcp[s as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::wire::tcp;

    #[test]
    fn normal_handshake_and_close() {
        let mut s = NO;
        let steps = [
            (false, tcp::FLAG_SYN, SR),
            (true, tcp::FLAG_SYN | tcp::FLAG_ACK, SR),
            (false, tcp::FLAG_ACK, ES),
            (false, tcp::FLAG_FIN | tcp::FLAG_ACK, CW),
            (true, tcp::FLAG_FIN | tcp::FLAG_ACK, TW),
            (false, tcp::FLAG_ACK, TW),
        ];
        for (reply, flags, want) in steps {
            s = s.next(reply, flags);
            assert_eq!(s, want, "after flags {flags:#x} reply={reply}");
        }
    }

    #[test]
    fn backend_closes_first_then_reset() {
        let s = ES.next(true, tcp::FLAG_FIN | tcp::FLAG_ACK);
        assert_eq!(s, FW);
        assert_eq!(s.next(false, tcp::FLAG_ACK), FW);
        assert_eq!(s.next(false, tcp::FLAG_FIN | tcp::FLAG_ACK), TW);
        assert_eq!(ES.next(false, tcp::FLAG_RST), CL);
        assert_eq!(ES.next(false, 0), CL);
    }

    #[test]
    fn default_timeouts_are_ipvs() {
        let t = Timeouts::default();
        assert_eq!(
            (
                t.tcp_state(ES),
                t.tcp_state(SR),
                t.tcp_state(FW),
                t.tcp_state(TW),
                t.tcp_state(CL),
                t.udp
            ),
            (900, 60, 120, 120, 10, 300)
        );
        let mut t2 = t;
        t2.set(3600, 0, 30);
        assert_eq!(
            (t2.tcp_state(ES), t2.tcp_state(FW), t2.udp),
            (3600, 120, 30)
        );
    }

    #[test]
    fn from_u8_round_trips() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_u8(s as u8), s);
        }
    }
}
