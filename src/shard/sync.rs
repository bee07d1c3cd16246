//! Connection synchronisation between directors, the shard's vocabulary
//! (pure): what a shard tells its peers about a connection or a persistence
//! template ([`SyncItem`]), when it tells them ([`SyncSettings`]), and why a
//! received entry was not applied ([`IgnoreReason`]). The engine emits and
//! applies items (`engine/sync.rs`); the control loop turns them into and
//! out of IPVS sync protocol v1 datagrams (`control::sync`).

use crate::service::model::FwdMethod;
use crate::shard::restart::{SavedConn, SavedTemplate};
use crate::shard::tcp_state::TcpState;

/// One entry of the sync protocol, in the shard's terms: times are what
/// the entry has left (`left_ms`), as in the state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncItem {
    Conn {
        conn: SavedConn,
        fwd: FwdMethod,
        /// The firewall mark of the connection's service (0: an address
        /// service).
        fwmark: u32,
    },
    Template {
        tpl: SavedTemplate,
        fwd: FwdMethod,
    },
}

/// When a shard tells its peers (IPVS `sync_threshold`/`sync_period`
/// semantics; see [`SyncSettings::period`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// Send at all (sync `mode` master or active-active).
    pub send: bool,
    /// One packet in `period` of a shard's established traffic re-sends its
    /// connection (IPVS `sync_period`, default 50). IPVS counts packets per
    /// connection (`pkts % sync_period == sync_threshold`); a shard keeps no
    /// count per entry and counts its own packets instead, which sends each
    /// connection the same number of updates on average. 0: state changes
    /// only.
    pub period: u32,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            send: false,
            period: 50,
        }
    }
}

/// TCP states whose arrival is sent at once (IPVS `ip_vs_sync_conn_needed`:
/// ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT); the handshake
/// states never are.
pub fn state_is_synced(s: TcpState) -> bool {
    matches!(
        s,
        TcpState::Established
            | TcpState::FinWait
            | TcpState::Close
            | TcpState::CloseWait
            | TcpState::TimeWait
    )
}

/// Why a received entry changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IgnoreReason {
    /// No virtual service of this director matches it.
    NoService,
    /// The service has no such real server (or is not persistent, for a
    /// template).
    NoDest,
    /// It had no time left.
    Expired,
    /// A table of this shard is full.
    TableFull,
    /// Not TCP or UDP (or a template of no service kind).
    Unsupported,
}

impl IgnoreReason {
    pub const ALL: [IgnoreReason; 5] = [
        IgnoreReason::NoService,
        IgnoreReason::NoDest,
        IgnoreReason::Expired,
        IgnoreReason::TableFull,
        IgnoreReason::Unsupported,
    ];
    pub fn reason(self) -> &'static str {
        match self {
            IgnoreReason::NoService => "no_service",
            IgnoreReason::NoDest => "no_dest",
            IgnoreReason::Expired => "expired",
            IgnoreReason::TableFull => "table_full",
            IgnoreReason::Unsupported => "unsupported",
        }
    }
}

/// A shard's sync counters (published with its engine stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounters {
    /// Items queued for the peers.
    pub queued: u64,
    /// Items lost because the shard's outbox was full.
    pub dropped: u64,
    pub applied_conns: u64,
    pub applied_templates: u64,
    pub ignored: [u64; IgnoreReason::ALL.len()],
}

impl SyncCounters {
    pub fn add(&mut self, o: &SyncCounters) {
        self.queued += o.queued;
        self.dropped += o.dropped;
        self.applied_conns += o.applied_conns;
        self.applied_templates += o.applied_templates;
        for (a, b) in self.ignored.iter_mut().zip(o.ignored.iter()) {
            *a += b;
        }
    }
    pub fn ignored_total(&self) -> u64 {
        self.ignored.iter().sum()
    }
}
