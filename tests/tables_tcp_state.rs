//! The TCP state machine against IPVS's tables (ip_vs_proto_tcp.c), typed in
//! here from the kernel source in IPVS's own notation.

use xdpvs::service::model::Timeouts;
use xdpvs::shard::tcp_state::{
    default_timeout_ms, flags, is_active, is_closing, is_evictable, is_half_open, next_state,
    timeout_ms, transition, udp_timeout_ms, Dir, TcpEvent, TcpState,
};

fn st(s: &str) -> TcpState {
    match s {
        "sNO" => TcpState::None,
        "sES" => TcpState::Established,
        "sSS" => TcpState::SynSent,
        "sSR" => TcpState::SynRecv,
        "sFW" => TcpState::FinWait,
        "sTW" => TcpState::TimeWait,
        "sCL" => TcpState::Close,
        "sCW" => TcpState::CloseWait,
        "sLA" => TcpState::LastAck,
        "sLI" => TcpState::Listen,
        "sSA" => TcpState::SynAck,
        other => panic!("bad state {other}"),
    }
}

/// Columns of every IPVS row, in order.
const COLS: &str = "sNO, sES, sSS, sSR, sFW, sTW, sCL, sCW, sLA, sLI, sSA";

fn check_row(secure: bool, dir: Dir, ev: TcpEvent, row: &str) {
    let from: Vec<TcpState> = COLS.split(", ").map(st).collect();
    let to: Vec<TcpState> = row.split(", ").map(st).collect();
    assert_eq!(to.len(), 11, "row {row}");
    for (f, t) in from.iter().zip(to.iter()) {
        assert_eq!(
            next_state(secure, dir, *f, ev),
            *t,
            "secure={secure} {dir:?} {ev:?} from {f:?}"
        );
    }
}

#[test]
fn normal_input_rows() {
    let d = Dir::Input;
    check_row(
        false,
        d,
        TcpEvent::Syn,
        "sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR",
    );
    check_row(
        false,
        d,
        TcpEvent::Fin,
        "sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW",
    );
    check_row(
        false,
        d,
        TcpEvent::Ack,
        "sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES",
    );
    check_row(
        false,
        d,
        TcpEvent::Rst,
        "sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR",
    );
}

#[test]
fn normal_output_rows() {
    let d = Dir::Output;
    check_row(
        false,
        d,
        TcpEvent::Syn,
        "sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR",
    );
    check_row(
        false,
        d,
        TcpEvent::Fin,
        "sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW",
    );
    check_row(
        false,
        d,
        TcpEvent::Ack,
        "sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES",
    );
    check_row(
        false,
        d,
        TcpEvent::Rst,
        "sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL",
    );
}

#[test]
fn normal_input_only_rows() {
    let d = Dir::InputOnly;
    check_row(
        false,
        d,
        TcpEvent::Syn,
        "sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR",
    );
    check_row(
        false,
        d,
        TcpEvent::Fin,
        "sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW",
    );
    check_row(
        false,
        d,
        TcpEvent::Ack,
        "sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES",
    );
    check_row(
        false,
        d,
        TcpEvent::Rst,
        "sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL",
    );
}

#[test]
fn secure_tcp_rows() {
    check_row(
        true,
        Dir::Input,
        TcpEvent::Syn,
        "sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSA",
    );
    check_row(
        true,
        Dir::Input,
        TcpEvent::Ack,
        "sES, sES, sSS, sSR, sFW, sTW, sCL, sCW, sCL, sLI, sSA",
    );
    check_row(
        true,
        Dir::Output,
        TcpEvent::Syn,
        "sSS, sES, sSS, sSA, sSS, sSS, sSS, sSS, sSS, sLI, sSA",
    );
    check_row(
        true,
        Dir::InputOnly,
        TcpEvent::Syn,
        "sSA, sES, sES, sSR, sSA, sSA, sSA, sSA, sSA, sSA, sSA",
    );
    check_row(
        true,
        Dir::InputOnly,
        TcpEvent::Rst,
        "sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL",
    );
}

#[test]
fn a_nat_handshake_and_close() {
    use flags::*;
    let mut s = TcpState::None;
    for (dir, f, want) in [
        (Dir::Input, SYN, TcpState::SynRecv),
        (Dir::Output, SYN | ACK, TcpState::SynRecv),
        (Dir::Input, ACK, TcpState::Established),
        (Dir::Input, FIN | ACK, TcpState::CloseWait),
        (Dir::Output, FIN | ACK, TcpState::TimeWait),
        (Dir::Input, ACK, TcpState::TimeWait),
    ] {
        s = transition(false, dir, s, f);
        assert_eq!(s, want, "{dir:?} {f:#x}");
    }
}

#[test]
fn default_timeouts_are_ipvs() {
    let t = Timeouts::default();
    let want = [
        (TcpState::None, 2),
        (TcpState::Established, 900),
        (TcpState::SynSent, 120),
        (TcpState::SynRecv, 60),
        (TcpState::FinWait, 120),
        (TcpState::TimeWait, 120),
        (TcpState::Close, 10),
        (TcpState::CloseWait, 60),
        (TcpState::LastAck, 30),
        (TcpState::Listen, 120),
        (TcpState::SynAck, 120),
    ];
    for (s, secs) in want {
        assert_eq!(timeout_ms(s, &t), secs * 1000, "{s:?}");
        assert_eq!(default_timeout_ms(s), secs * 1000, "{s:?}");
    }
    assert_eq!(udp_timeout_ms(&t), 300_000);
}

#[test]
fn tcp_and_tcpfin_overrides() {
    let t = Timeouts {
        tcp: 7200,
        tcp_fin: 30,
        udp: 5,
    };
    assert_eq!(timeout_ms(TcpState::Established, &t), 7_200_000);
    assert_eq!(timeout_ms(TcpState::FinWait, &t), 30_000);
    // Other states keep IPVS defaults.
    assert_eq!(timeout_ms(TcpState::TimeWait, &t), 120_000);
    assert_eq!(timeout_ms(TcpState::SynRecv, &t), 60_000);
    assert_eq!(udp_timeout_ms(&t), 5_000);
}

#[test]
fn activity_and_eviction_classes() {
    for s in TcpState::ALL {
        let active = matches!(
            s,
            TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
        );
        assert_eq!(is_active(s), active, "{s:?}");
        let half = matches!(s, TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck);
        assert_eq!(is_half_open(s), half, "{s:?}");
        let closing = matches!(
            s,
            TcpState::FinWait
                | TcpState::TimeWait
                | TcpState::Close
                | TcpState::CloseWait
                | TcpState::LastAck
        );
        assert_eq!(is_closing(s), closing, "{s:?}");
        assert_eq!(is_evictable(s), s != TcpState::Established, "{s:?}");
    }
}
