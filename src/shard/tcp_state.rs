//! IPVS's TCP connection state machine as transition tables, and the
//! per-state timeouts.
//!
//! The tables are IPVS's `tcp_states` (normal) and `tcp_states_dos`
//! (`secure_tcp`) from `net/netfilter/ipvs/ip_vs_proto_tcp.c` (current
//! kernels), one row per (direction, event) and one column per current state.
//! The event of a segment is chosen as IPVS does: RST first, then SYN, FIN,
//! ACK; a segment with none of these flags moves the connection to CLOSE.
//!
//! Directions: [`Dir::Input`] is client -> director, [`Dir::Output`] is real
//! server -> client (only seen for NAT), [`Dir::InputOnly`] is client ->
//! director for connections whose replies bypass the director (DR, tunnels).
//! The connection table switches a non-NAT connection's input packets to the
//! INPUT_ONLY table automatically (IPVS's `IP_VS_CONN_F_NOOUTPUT`).

use crate::service::model::{Millis, Timeouts};

/// IPVS TCP connection states (`IP_VS_TCP_S_*`), in IPVS's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait = 4,
    TimeWait = 5,
    Close = 6,
    CloseWait = 7,
    LastAck = 8,
    Listen = 9,
    SynAck = 10,
}

/// Number of TCP states.
pub const TCP_STATES: usize = 11;

impl TcpState {
    /// All states, indexed by their number.
    pub const ALL: [TcpState; TCP_STATES] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
    ];

    /// The state with IPVS number `n`, if any.
    #[allow(clippy::indexing_slicing)] // checked against TCP_STATES just above
    pub const fn from_index(n: u8) -> Option<TcpState> {
        if (n as usize) < TCP_STATES {
            Some(Self::ALL[n as usize])
        } else {
            None
        }
    }

    /// IPVS's name, as `ipvsadm -lc` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }
}

/// Which way a packet travels relative to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client -> director (IPVS `IP_VS_DIR_INPUT`).
    Input = 0,
    /// Real server -> client through the director, NAT only (`IP_VS_DIR_OUTPUT`).
    Output = 1,
    /// Client -> director when replies bypass us (`IP_VS_DIR_INPUT_ONLY`).
    InputOnly = 2,
}

/// The segment class that drives a transition (IPVS `tcp_state_idx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpEvent {
    Syn = 0,
    Fin = 1,
    Ack = 2,
    Rst = 3,
}

/// TCP header flag bits as they appear in byte 13 of the TCP header.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

impl TcpEvent {
    /// Classify a segment by its flags, with IPVS's priority RST > SYN > FIN
    /// > ACK. `None` when none of the four is set.
    pub const fn from_flags(f: u8) -> Option<TcpEvent> {
        if f & flags::RST != 0 {
            Some(TcpEvent::Rst)
        } else if f & flags::SYN != 0 {
            Some(TcpEvent::Syn)
        } else if f & flags::FIN != 0 {
            Some(TcpEvent::Fin)
        } else if f & flags::ACK != 0 {
            Some(TcpEvent::Ack)
        } else {
            None
        }
    }
}

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

type Row = [TcpState; TCP_STATES];
/// `[dir][event][state]`.
type Table = [[Row; 4]; 3];

/// IPVS `tcp_states`. Columns: NO ES SS SR FW TW CL CW LA LI SA.
const NORMAL: Table = [
    // INPUT
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // OUTPUT
    [
        /*syn*/ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT_ONLY
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        /*fin*/ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// IPVS `tcp_states_dos` (used with `secure_tcp`).
const SECURE: Table = [
    // INPUT
    [
        /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA],
        /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA],
        /*ack*/ [ES, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
    // OUTPUT
    [
        /*syn*/ [SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA],
        /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT_ONLY
    [
        /*syn*/ [SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA],
        /*fin*/ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The next state for `event` seen in direction `dir` in state `state`.
/// `secure` selects IPVS's `tcp_states_dos` table (`secure_tcp`).
#[allow(clippy::indexing_slicing)] // enum discriminants index tables sized by those enums
pub const fn next_state(secure: bool, dir: Dir, state: TcpState, event: TcpEvent) -> TcpState {
    let t = if secure { &SECURE } else { &NORMAL };
    t[dir as usize][event as usize][state as usize]
}

/// The next state for a segment with TCP `flags`: like [`next_state`], and a
/// segment without SYN/FIN/ACK/RST moves to CLOSE, as in IPVS.
pub const fn transition(secure: bool, dir: Dir, state: TcpState, tcp_flags: u8) -> TcpState {
    match TcpEvent::from_flags(tcp_flags) {
        Some(ev) => next_state(secure, dir, state, ev),
        None => TcpState::Close,
    }
}

const SEC: Millis = 1000;

/// IPVS's default timeout of a TCP state (`tcp_timeouts`), in ms.
pub const fn default_timeout_ms(state: TcpState) -> Millis {
    match state {
        TcpState::None => 2 * SEC,
        TcpState::Established => 15 * 60 * SEC,
        TcpState::SynSent => 2 * 60 * SEC,
        TcpState::SynRecv => 60 * SEC,
        TcpState::FinWait => 2 * 60 * SEC,
        TcpState::TimeWait => 2 * 60 * SEC,
        TcpState::Close => 10 * SEC,
        TcpState::CloseWait => 60 * SEC,
        TcpState::LastAck => 30 * SEC,
        TcpState::Listen => 2 * 60 * SEC,
        TcpState::SynAck => 120 * SEC,
    }
}

/// The timeout of a TCP state, in ms: IPVS defaults, with ESTABLISHED taken
/// from `t.tcp` and FIN_WAIT from `t.tcp_fin` (what `ipvsadm --set` changes).
pub const fn timeout_ms(state: TcpState, t: &Timeouts) -> Millis {
    match state {
        TcpState::Established => t.tcp as Millis * SEC,
        TcpState::FinWait => t.tcp_fin as Millis * SEC,
        s => default_timeout_ms(s),
    }
}

/// The UDP timeout (IPVS has one UDP state, `NORMAL`), in ms.
pub const fn udp_timeout_ms(t: &Timeouts) -> Millis {
    t.udp as Millis * SEC
}

/// Whether a TCP connection in `state` counts as active for lc/wlc/sed/nq.
/// Current IPVS (`tcp_state_active_table`, since Linux 4.14) counts
/// ESTABLISHED and the pre-established SYN_SENT, SYN_RECV and SYNACK as
/// active and every other state as inactive. UDP connections are always
/// inactive.
pub const fn is_active(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
    )
}

/// Handshake not completed: SYN_SENT, SYN_RECV, SYNACK.
pub const fn is_half_open(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
    )
}

/// Shutting down or closed: FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK.
pub const fn is_closing(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::FinWait
            | TcpState::TimeWait
            | TcpState::Close
            | TcpState::CloseWait
            | TcpState::LastAck
    )
}

/// May be evicted to make room when the table is full: every state except
/// ESTABLISHED (half-open, closing, and the transient NONE/LISTEN).
pub const fn is_evictable(state: TcpState) -> bool {
    !matches!(state, TcpState::Established)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flags::*;

    #[test]
    fn flag_priority_as_ipvs() {
        assert_eq!(TcpEvent::from_flags(RST | SYN | ACK), Some(TcpEvent::Rst));
        assert_eq!(TcpEvent::from_flags(SYN | ACK), Some(TcpEvent::Syn));
        assert_eq!(TcpEvent::from_flags(FIN | ACK), Some(TcpEvent::Fin));
        assert_eq!(TcpEvent::from_flags(ACK | PSH), Some(TcpEvent::Ack));
        assert_eq!(TcpEvent::from_flags(PSH), None);
        // No flag at all: CLOSE, whatever the state.
        for s in TcpState::ALL {
            assert_eq!(transition(false, Dir::Input, s, 0), TcpState::Close);
        }
    }

    #[test]
    fn state_numbers_round_trip() {
        for (i, s) in TcpState::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(TcpState::from_index(i as u8), Some(*s));
        }
        assert_eq!(TcpState::from_index(11), None);
        assert_eq!(TcpState::SynAck.name(), "SYNACK");
    }
}
