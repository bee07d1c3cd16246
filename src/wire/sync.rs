//! The IPVS connection synchronisation protocol, version 1, as the Linux
//! kernel speaks it (`net/netfilter/ipvs/ip_vs_sync.c`), plus the xdpvs
//! resync request. A pure codec: no sockets, no clock.
//!
//! # Message (`struct ip_vs_sync_mesg`, 8 bytes, network order)
//!
//! ```text
//!  0        1        2        3        4        5        6        7
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! |reserved| syncid |  size (whole msg)| nr_conns| version|      spare      |
//! |   = 0  |        |                 |        |   = 1  |       = 0       |
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! ```
//!
//! followed by `nr_conns` entries, `struct ip_vs_sync_v4` (36 bytes) or
//! `struct ip_vs_sync_v6` (72 bytes):
//!
//! ```text
//! 0  type (bit 0 = STYPE_F_INET6)   1  protocol   2..4  ver_size
//!                                   (version << 12 | entry size, 12 bits)
//! 4..8    flags (IP_VS_CONN_F_*)    8..10  state   10..12 cport
//! 12..14  vport  14..16 dport       16..20 fwmark  20..24 timeout (s)
//! 24..    caddr, vaddr, daddr (4 or 16 bytes each)
//! ```
//!
//! then options, each `type (1 byte), length (1 byte, not 0), data`:
//! `IPVS_OPT_SEQ_DATA` (1, 24 bytes: in_seq and out_seq, three u32 each),
//! `IPVS_OPT_PE_DATA` (2, up to 255 bytes), `IPVS_OPT_PE_NAME` (3, up to
//! 16 bytes); bit `IPVS_OPT_F_PARAM` (0x40) in the type marks an option a
//! receiver may ignore. The entry's size counts the options but not the
//! padding: the sender pads *before the next entry* to a 4-byte boundary
//! (`pad = (4 - (size_t) buff->head) & 3` in `ip_vs_sync_conn`) and the
//! receiver steps `msg_end = p + ((size + 3) & ~3)` in
//! `ip_vs_process_message`; the message size counts the padding, and there
//! is none after the last entry.
//!
//! Decoding follows the kernel receiver's checks (`ip_vs_process_message`,
//! `ip_vs_proc_sync_conn`), stricter in one point: the entry framing of
//! the whole message (count, sizes, entry versions) is checked up front by
//! [`SyncMessage::new_checked`], so a message is refused whole instead of
//! half applied. Entry contents (type, size for the family, options) are
//! checked lazily by [`SyncEntries`], which stops at the first bad entry as
//! the kernel does on a negative `retc`; an unknown mandatory option only
//! drops that entry (the kernel's `retc = 20`), and the iterator goes on.
//!
//! The kernel's version 0 format (first byte = connection count, no
//! version field) is not spoken here: a message with a nonzero first byte
//! is [`SyncError::Version0`].
//!
//! # Resync request (xdpvs extension)
//!
//! IPVS has no full resync: a backup learns connections as the master
//! happens to sync them. A (re)joining xdpvs director sends a
//! [`ResyncRequest`] to ask its peers for their tables:
//!
//! ```text
//! 0 reserved = 0 | 1 syncid | 2..4 size = 0 | 4..12 "XDPVSRQ1" | 12..20 nonce
//! ```
//!
//! A kernel IPVS backup receiving it on the sync port discards it before
//! looking at anything else, because the size field (0) can never equal
//! the datagram length (20), and `ip_vs_process_message` starts with
//!
//! ```c
//! if (buflen < sizeof(struct ip_vs_sync_mesg_v0)) { ... return; }
//! if (buflen != ntohs(m2->size)) {
//!         IP_VS_DBG(2, "BACKUP, bogus message size\n");
//!         return;
//! }
//! ```
//!
//! which holds for version 0 and version 1 processing alike (both come
//! after it), so nothing is created. An xdpvs peer recognises the request
//! by its exact length, the zero size field and the 8-byte magic; a real
//! sync message can never look like it (its size field equals its length,
//! at least 8).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::field::{array_at, u16_at, u32_at, u8_at};

/// The UDP port of the sync daemon (`IP_VS_SYNC_PORT`); the kernel uses
/// `port + id` for its sync thread `id`.
pub const SYNC_PORT: u16 = 8848;
/// The IPv4 multicast group (`IP_VS_SYNC_GROUP`, 224.0.0.81), the kernel's
/// default when no group is configured.
pub const SYNC_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// An IPv6 group for xdpvs peers. The kernel has no IPv6 default: with
/// `mcast_af` unset `start_sync_thread` falls back to AF_INET and
/// 224.0.0.81, and an IPv6 sync daemon needs an explicit group (e.g.
/// `ipvsadm --start-daemon ... --mcast-group ff02::81`). This link-local
/// mirror of the IPv4 group is xdpvs's choice.
pub const SYNC_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x81);

/// `SYNC_PROTO_VER`: the version byte of a version 1 header.
pub const SYNC_PROTO_VER: u8 = 1;
/// Length of the message header (`struct ip_vs_sync_mesg`).
pub const HEADER_LEN: usize = 8;
/// Length of an IPv4 entry without options (`struct ip_vs_sync_v4`).
pub const ENTRY_V4_LEN: usize = 36;
/// Length of an IPv6 entry without options (`struct ip_vs_sync_v6`).
pub const ENTRY_V6_LEN: usize = 72;
/// The type bit of an IPv6 entry (`STYPE_F_INET6`).
pub const STYPE_F_INET6: u8 = 1;
/// Entry size mask in `ver_size` (`SVER_MASK`).
pub const SVER_MASK: u16 = 0x0fff;
/// Shift of the entry version in `ver_size` (`SVER_SHIFT`).
pub const SVER_SHIFT: u16 = 12;

/// Option: sequence adjustment data (`IPVS_OPT_SEQ_DATA`).
pub const IPVS_OPT_SEQ_DATA: u8 = 1;
/// Option: persistence engine data (`IPVS_OPT_PE_DATA`).
pub const IPVS_OPT_PE_DATA: u8 = 2;
/// Option: persistence engine name (`IPVS_OPT_PE_NAME`).
pub const IPVS_OPT_PE_NAME: u8 = 3;
/// Option type bit: optional, may be ignored (`1 << (IPVS_OPT_PARAM-1)`).
pub const IPVS_OPT_F_PARAM: u8 = 1 << 6;
/// Length of the sequence option's data (`struct ip_vs_sync_conn_options`:
/// two `struct ip_vs_seq` of three u32).
pub const SEQ_OPTION_LEN: usize = 24;
/// Longest PE name (`IP_VS_PENAME_MAXLEN`).
pub const PENAME_MAXLEN: usize = 16;

/// Default largest message for IPv4 transport: what the kernel master uses
/// (`sync_maxlen = mtu - hlen` with `mtu = 1500`): 1500 - 20 - 8.
pub const DEFAULT_MAX_LEN_V4: usize = 1500 - 20 - 8;
/// Default largest message for IPv6 transport: 1500 - 40 - 8.
pub const DEFAULT_MAX_LEN_V6: usize = 1500 - 40 - 8;

/// `IP_VS_CONN_F_*` connection flags (`include/uapi/linux/ip_vs.h`). Only
/// bits 0..15 travel in sync messages.
pub mod flags {
    /// Mask of the forwarding method.
    pub const FWD_MASK: u32 = 0x0007;
    /// Masquerading (NAT).
    pub const MASQ: u32 = 0x0000;
    /// Local node.
    pub const LOCALNODE: u32 = 0x0001;
    /// Tunnelling (IPIP, GUE, GRE).
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// Cache bypass.
    pub const BYPASS: u32 = 0x0004;
    /// Entry created by sync (set by the receiver).
    pub const SYNC: u32 = 0x0020;
    /// Hashed entry (the kernel clears it before sending).
    pub const HASHED: u32 = 0x0040;
    /// No output packets.
    pub const NOOUTPUT: u32 = 0x0080;
    /// Not established.
    pub const INACTIVE: u32 = 0x0100;
    /// Must do output sequence adjustment.
    pub const OUT_SEQ: u32 = 0x0200;
    /// Must do input sequence adjustment.
    pub const IN_SEQ: u32 = 0x0400;
    /// In/out sequence mask.
    pub const SEQ_MASK: u32 = 0x0600;
    /// No client port set yet.
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// Forward only one packet (never synced by the kernel).
    pub const ONE_PACKET: u32 = 0x2000;
    /// The bits a kernel backup keeps from a received entry
    /// (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
    /// The bits a kernel backup updates on an existing entry
    /// (`IP_VS_CONN_F_BACKUP_UPD_MASK`).
    pub const BACKUP_UPD_MASK: u32 = INACTIVE | SEQ_MASK;
}

/// IPVS TCP connection states (`IP_VS_TCP_S_*`, `include/net/ip_vs.h`,
/// names in `ip_vs_proto_tcp.c`).
pub mod tcp_state {
    pub const NONE: u16 = 0;
    pub const ESTABLISHED: u16 = 1;
    pub const SYN_SENT: u16 = 2;
    pub const SYN_RECV: u16 = 3;
    pub const FIN_WAIT: u16 = 4;
    pub const TIME_WAIT: u16 = 5;
    pub const CLOSE: u16 = 6;
    pub const CLOSE_WAIT: u16 = 7;
    pub const LAST_ACK: u16 = 8;
    pub const LISTEN: u16 = 9;
    pub const SYNACK: u16 = 10;
    /// Number of TCP states; a kernel backup drops a TCP entry whose state
    /// is at least this.
    pub const LAST: u16 = 11;
}

/// IPVS UDP state (`IP_VS_UDP_S_*`).
pub mod udp_state {
    pub const NORMAL: u16 = 0;
    pub const LAST: u16 = 1;
}

/// Persistence template states (`IP_VS_CTPL_S_*`).
pub mod tpl_state {
    pub const NONE: u16 = 0;
    pub const ASSURED: u16 = 1;
    pub const LAST: u16 = 2;
}

/// The forwarding method of an entry (`flags & FWD_MASK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FwdMethod {
    Masq,
    LocalNode,
    Tunnel,
    DirectRoute,
    Bypass,
    /// 5..7: not defined by the kernel.
    Other(u8),
}

/// Why a sync datagram was refused. Every reason has a counter name
/// ([`SyncError::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SyncError {
    /// Shorter than the 8-byte header.
    #[error("sync message shorter than its header")]
    Truncated,
    /// First byte nonzero: a version 0 message, not spoken here.
    #[error("sync message of version 0")]
    Version0,
    /// Version byte not 1.
    #[error("sync message version not 1")]
    BadVersion,
    /// Spare field not zero (the kernel then reads it as version 0).
    #[error("sync message spare field not zero")]
    BadSpare,
    /// Size field differs from the datagram length.
    #[error("sync message size field differs from the datagram length")]
    SizeMismatch,
    /// Bytes left after the counted entries.
    #[error("sync message longer than its counted entries")]
    CountMismatch,
    /// The count promises an entry the message has no room for.
    #[error("sync message ends before its counted entries")]
    EntryTruncated,
    /// An entry's version nibble is not 0.
    #[error("sync entry version not 0")]
    EntryVersion,
    /// An entry of size 0.
    #[error("sync entry of size 0")]
    EntryZeroSize,
    /// An entry's size runs past the message.
    #[error("sync entry runs past the message")]
    EntryOverflow,
    /// Type neither 0 (IPv4) nor with the IPv6 bit.
    #[error("sync entry of unknown type")]
    BadType,
    /// Entry size below the fixed part for its family.
    #[error("sync entry shorter than an {} entry", if *inet6 { "IPv6" } else { "IPv4" })]
    EntryTooShort { inet6: bool },
    /// An option header cut by the entry's end.
    #[error("sync option header truncated")]
    OptionTruncated,
    /// An option of length 0 or running past the entry.
    #[error("sync option length 0 or past the entry")]
    OptionBadLength,
    /// A sequence option whose length is not 24.
    #[error("sync sequence option of wrong length")]
    SeqOptionLength,
    /// The same option twice in one entry.
    #[error("sync option repeated")]
    OptionDuplicate,
    /// A PE name longer than 16 bytes.
    #[error("sync PE name too long")]
    PeNameTooLong,
    /// An unknown option without the "may ignore" bit: the entry is
    /// dropped, the next ones are still read.
    #[error("sync entry with an unknown mandatory option")]
    UnknownMandatoryOption,
    /// Encoding: the three addresses are not of one family.
    #[error("sync entry addresses of mixed families")]
    MixedFamilies,
    /// Not a resync request (length, size field or magic).
    #[error("not a resync request")]
    BadResync,
}

impl SyncError {
    /// Stable counter name for this reason.
    pub const fn reason(&self) -> &'static str {
        match self {
            SyncError::Truncated => "truncated",
            SyncError::Version0 => "version0",
            SyncError::BadVersion => "bad_version",
            SyncError::BadSpare => "bad_spare",
            SyncError::SizeMismatch => "size_mismatch",
            SyncError::CountMismatch => "count_mismatch",
            SyncError::EntryTruncated => "entry_truncated",
            SyncError::EntryVersion => "entry_version",
            SyncError::EntryZeroSize => "entry_zero_size",
            SyncError::EntryOverflow => "entry_overflow",
            SyncError::BadType => "bad_type",
            SyncError::EntryTooShort { inet6: false } => "entry_too_short_v4",
            SyncError::EntryTooShort { inet6: true } => "entry_too_short_v6",
            SyncError::OptionTruncated => "option_truncated",
            SyncError::OptionBadLength => "option_bad_length",
            SyncError::SeqOptionLength => "seq_option_length",
            SyncError::OptionDuplicate => "option_duplicate",
            SyncError::PeNameTooLong => "pe_name_too_long",
            SyncError::UnknownMandatoryOption => "unknown_mandatory_option",
            SyncError::MixedFamilies => "mixed_families",
            SyncError::BadResync => "bad_resync",
        }
    }

    /// Position of this reason in [`SyncError::ALL`] (for counter arrays).
    pub const fn index(&self) -> usize {
        match self {
            SyncError::Truncated => 0,
            SyncError::Version0 => 1,
            SyncError::BadVersion => 2,
            SyncError::BadSpare => 3,
            SyncError::SizeMismatch => 4,
            SyncError::CountMismatch => 5,
            SyncError::EntryTruncated => 6,
            SyncError::EntryVersion => 7,
            SyncError::EntryZeroSize => 8,
            SyncError::EntryOverflow => 9,
            SyncError::BadType => 10,
            SyncError::EntryTooShort { inet6: false } => 11,
            SyncError::EntryTooShort { inet6: true } => 12,
            SyncError::OptionTruncated => 13,
            SyncError::OptionBadLength => 14,
            SyncError::SeqOptionLength => 15,
            SyncError::OptionDuplicate => 16,
            SyncError::PeNameTooLong => 17,
            SyncError::UnknownMandatoryOption => 18,
            SyncError::MixedFamilies => 19,
            SyncError::BadResync => 20,
        }
    }

    /// Every reason, for registering counters.
    pub const ALL: [SyncError; 21] = [
        SyncError::Truncated,
        SyncError::Version0,
        SyncError::BadVersion,
        SyncError::BadSpare,
        SyncError::SizeMismatch,
        SyncError::CountMismatch,
        SyncError::EntryTruncated,
        SyncError::EntryVersion,
        SyncError::EntryZeroSize,
        SyncError::EntryOverflow,
        SyncError::BadType,
        SyncError::EntryTooShort { inet6: false },
        SyncError::EntryTooShort { inet6: true },
        SyncError::OptionTruncated,
        SyncError::OptionBadLength,
        SyncError::SeqOptionLength,
        SyncError::OptionDuplicate,
        SyncError::PeNameTooLong,
        SyncError::UnknownMandatoryOption,
        SyncError::MixedFamilies,
        SyncError::BadResync,
    ];
}

/// One synchronised connection or persistence template, as values.
///
/// Fields are as on the wire: `flags` unmasked (a receiver keeps
/// [`flags::BACKUP_MASK`] as the kernel does), ports and addresses as the
/// kernel's `ip_vs_conn`. A persistence template has [`flags::TEMPLATE`],
/// `cport` 0 and `caddr` the client network (masked by the persistence
/// netmask); a fwmark service's template has protocol 0 (`IPPROTO_IP`),
/// `vport` 0, `dport` 0 and the mark in `vaddr` (see [`fwmark_vaddr`]), as
/// `ip_vs_sched_persist` builds it (`<IPPROTO_IP,caddr,0,fwmark,0,daddr,0>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyncEntry {
    pub flags: u32,
    pub proto: u8,
    pub state: u16,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub fwmark: u32,
    /// Remaining lifetime in seconds (the kernel sends `cp->timeout / HZ`,
    /// the full timeout of the current state; 0 = receiver's default).
    pub timeout_s: u32,
    pub caddr: IpAddr,
    pub vaddr: IpAddr,
    pub daddr: IpAddr,
}

/// The virtual address of a fwmark template: the mark in network order in
/// the first four bytes (`union nf_inet_addr fwmark = { .ip =
/// htonl(svc->fwmark) }`), the rest of an IPv6 address zero.
pub fn fwmark_vaddr(mark: u32, inet6: bool) -> IpAddr {
    if inet6 {
        let mut a = [0u8; 16];
        if let Some(h) = a.first_chunk_mut::<4>() {
            *h = mark.to_be_bytes();
        }
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::from(mark))
    }
}

impl SyncEntry {
    /// A persistence template rather than a connection.
    pub const fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    /// The forwarding method in the flags.
    pub const fn fwd_method(&self) -> FwdMethod {
        match self.flags & flags::FWD_MASK {
            flags::MASQ => FwdMethod::Masq,
            flags::LOCALNODE => FwdMethod::LocalNode,
            flags::TUNNEL => FwdMethod::Tunnel,
            flags::DROUTE => FwdMethod::DirectRoute,
            flags::BYPASS => FwdMethod::Bypass,
            other => FwdMethod::Other(other as u8),
        }
    }

    /// IPv6 entry (all three addresses IPv6), IPv4 entry (all IPv4), or
    /// [`SyncError::MixedFamilies`].
    pub fn is_inet6(&self) -> Result<bool, SyncError> {
        match (self.caddr, self.vaddr, self.daddr) {
            (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(_)) => Ok(false),
            (IpAddr::V6(_), IpAddr::V6(_), IpAddr::V6(_)) => Ok(true),
            _ => Err(SyncError::MixedFamilies),
        }
    }

    /// Encoded length (no options): 36 or 72.
    pub fn wire_len(&self) -> Result<usize, SyncError> {
        Ok(if self.is_inet6()? {
            ENTRY_V6_LEN
        } else {
            ENTRY_V4_LEN
        })
    }

    /// Append the entry (no options; 36 or 72 bytes, already aligned).
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), SyncError> {
        let inet6 = self.is_inet6()?;
        let len = if inet6 { ENTRY_V6_LEN } else { ENTRY_V4_LEN };
        out.push(if inet6 { STYPE_F_INET6 } else { 0 });
        out.push(self.proto);
        // Version 0 in the top nibble; the size fits in 12 bits.
        out.extend_from_slice(&(len as u16 & SVER_MASK).to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.state.to_be_bytes());
        out.extend_from_slice(&self.cport.to_be_bytes());
        out.extend_from_slice(&self.vport.to_be_bytes());
        out.extend_from_slice(&self.dport.to_be_bytes());
        out.extend_from_slice(&self.fwmark.to_be_bytes());
        out.extend_from_slice(&self.timeout_s.to_be_bytes());
        for a in [self.caddr, self.vaddr, self.daddr] {
            match a {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
        Ok(())
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A received version 1 sync message. After `new_checked`: header valid,
/// size field equal to the buffer length, and the counted entries frame
/// the message exactly (each at least the IPv4 fixed part present, entry
/// version 0, size not 0 and within the message, nothing left over but
/// the last entry's missing padding).
#[derive(Clone, Copy, Debug)]
pub struct SyncMessage<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> SyncMessage<T> {
    /// Wrap a received datagram, checking the header and entry framing.
    pub fn new_checked(buf: T) -> Result<Self, SyncError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(SyncError::Truncated);
        }
        // The kernel's order: the size first, for both versions.
        if usize::from(u16_at(b, 2)) != b.len() {
            return Err(SyncError::SizeMismatch);
        }
        if u8_at(b, 0) != 0 {
            return Err(SyncError::Version0);
        }
        if u8_at(b, 5) != SYNC_PROTO_VER {
            return Err(SyncError::BadVersion);
        }
        if u16_at(b, 6) != 0 {
            return Err(SyncError::BadSpare);
        }
        let mut off = HEADER_LEN;
        for _ in 0..u8_at(b, 4) {
            // As the kernel: room for the IPv4 fixed part first.
            if off + ENTRY_V4_LEN > b.len() {
                return Err(SyncError::EntryTruncated);
            }
            let vs = u16_at(b, off + 2);
            let size = usize::from(vs & SVER_MASK);
            if off + size > b.len() {
                return Err(SyncError::EntryOverflow);
            }
            if vs >> SVER_SHIFT != 0 {
                return Err(SyncError::EntryVersion);
            }
            if size == 0 {
                return Err(SyncError::EntryZeroSize);
            }
            off += align4(size);
        }
        if off < b.len() {
            return Err(SyncError::CountMismatch);
        }
        Ok(SyncMessage { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Sync ID of the sender (a kernel backup with a nonzero syncid ignores
    /// other IDs).
    pub fn syncid(&self) -> u8 {
        u8_at(self.b(), 1)
    }

    /// Size field: the whole message.
    pub fn size(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// Number of entries.
    pub fn nr_conns(&self) -> u8 {
        u8_at(self.b(), 4)
    }

    /// Version byte (1).
    pub fn version(&self) -> u8 {
        u8_at(self.b(), 5)
    }

    /// The entries, decoded one by one.
    pub fn entries(&self) -> SyncEntries<'_> {
        SyncEntries {
            buf: self.b(),
            off: HEADER_LEN,
            left: self.nr_conns(),
        }
    }
}

/// Iterator over a message's entries. Yields `Err` and stops at the first
/// malformed entry, except [`SyncError::UnknownMandatoryOption`], after
/// which it goes on (the kernel drops just that entry).
#[derive(Clone, Debug)]
pub struct SyncEntries<'a> {
    buf: &'a [u8],
    off: usize,
    left: u8,
}

impl Iterator for SyncEntries<'_> {
    type Item = Result<SyncEntry, SyncError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let off = self.off;
        let size = usize::from(u16_at(self.buf, off + 2) & SVER_MASK);
        let Some(e) = self.buf.get(off..off + size) else {
            // Not after new_checked; stop rather than loop.
            self.left = 0;
            return Some(Err(SyncError::EntryOverflow));
        };
        self.off = off + align4(size);
        let r = decode_entry(e);
        if matches!(r, Err(ref x) if *x != SyncError::UnknownMandatoryOption) {
            self.left = 0;
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

/// Decode one entry of exactly its size (options included, no padding).
fn decode_entry(e: &[u8]) -> Result<SyncEntry, SyncError> {
    let ty = u8_at(e, 0);
    let inet6 = if ty & STYPE_F_INET6 != 0 {
        true
    } else if ty == 0 {
        false
    } else {
        return Err(SyncError::BadType);
    };
    let fixed = if inet6 { ENTRY_V6_LEN } else { ENTRY_V4_LEN };
    if e.len() < fixed {
        return Err(SyncError::EntryTooShort { inet6 });
    }
    // Options: type, length (not 0), data, up to the entry's end.
    let mut p = fixed;
    let mut seen = 0u8;
    let mut unknown_mandatory = false;
    while p < e.len() {
        if p + 2 > e.len() {
            return Err(SyncError::OptionTruncated);
        }
        let ptype = u8_at(e, p);
        let plen = usize::from(u8_at(e, p + 1));
        p += 2;
        if plen == 0 || p + plen > e.len() {
            return Err(SyncError::OptionBadLength);
        }
        let (bit, ok) = match ptype & !IPVS_OPT_F_PARAM {
            IPVS_OPT_SEQ_DATA => (1, plen == SEQ_OPTION_LEN),
            IPVS_OPT_PE_DATA => (2, true),
            IPVS_OPT_PE_NAME => (4, plen <= PENAME_MAXLEN),
            _ => {
                if ptype & IPVS_OPT_F_PARAM == 0 {
                    unknown_mandatory = true;
                }
                (0, true)
            }
        };
        if !ok {
            return Err(if bit == 1 {
                SyncError::SeqOptionLength
            } else {
                SyncError::PeNameTooLong
            });
        }
        if seen & bit != 0 {
            return Err(SyncError::OptionDuplicate);
        }
        seen |= bit;
        p += plen;
    }
    if unknown_mandatory {
        return Err(SyncError::UnknownMandatoryOption);
    }
    let addr = |i: usize| -> IpAddr {
        if inet6 {
            IpAddr::V6(Ipv6Addr::from(array_at::<16>(e, 24 + 16 * i)))
        } else {
            IpAddr::V4(Ipv4Addr::from(array_at::<4>(e, 24 + 4 * i)))
        }
    };
    Ok(SyncEntry {
        proto: u8_at(e, 1),
        flags: u32_at(e, 4),
        state: u16_at(e, 8),
        cport: u16_at(e, 10),
        vport: u16_at(e, 12),
        dport: u16_at(e, 14),
        fwmark: u32_at(e, 16),
        timeout_s: u32_at(e, 20),
        caddr: addr(0),
        vaddr: addr(1),
        daddr: addr(2),
    })
}

/// Packs entries into version 1 messages of at most `max_len` bytes and
/// at most 255 entries (the count is one byte; the kernel relies on the
/// MTU to stay below that).
#[derive(Clone, Debug)]
pub struct SyncWriter {
    max_len: usize,
    /// Finished messages and their entry counts.
    done: Vec<(Vec<u8>, u8)>,
    cur: Vec<u8>,
    count: u8,
}

impl SyncWriter {
    /// Smallest accepted `max_len`: a header and one IPv6 entry.
    pub const MIN_LEN: usize = HEADER_LEN + ENTRY_V6_LEN;

    /// A writer for messages of at most `max_len` bytes (clamped to
    /// [`SyncWriter::MIN_LEN`]..=65535; [`DEFAULT_MAX_LEN_V4`] matches the
    /// kernel master).
    pub fn new(max_len: usize) -> Self {
        SyncWriter {
            max_len: max_len.clamp(Self::MIN_LEN, usize::from(u16::MAX)),
            done: Vec::new(),
            cur: Vec::new(),
            count: 0,
        }
    }

    /// Add an entry, starting a new message when it does not fit.
    pub fn push(&mut self, e: &SyncEntry) -> Result<(), SyncError> {
        let len = e.wire_len()?;
        if self.count == u8::MAX || self.cur.len() + len > self.max_len {
            self.flush();
        }
        if self.cur.is_empty() {
            self.cur.extend_from_slice(&[0; HEADER_LEN]);
        }
        e.emit(&mut self.cur)?;
        self.count += 1;
        Ok(())
    }

    /// Entries pushed so far.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty() && self.count == 0
    }

    fn flush(&mut self) {
        if self.count > 0 {
            let m = std::mem::take(&mut self.cur);
            self.done.push((m, self.count));
            self.count = 0;
        } else {
            self.cur.clear();
        }
    }

    /// The messages, with `syncid`, size and counts filled in.
    pub fn finish(mut self, syncid: u8) -> Vec<Vec<u8>> {
        self.flush();
        self.done
            .into_iter()
            .map(|(mut m, n)| {
                // `max_len` is clamped to u16, so the size fits.
                let s = u16::try_from(m.len()).unwrap_or(u16::MAX).to_be_bytes();
                if let Some(h) = m.first_chunk_mut::<HEADER_LEN>() {
                    *h = [0, syncid, s[0], s[1], n, SYNC_PROTO_VER, 0, 0];
                }
                m
            })
            .collect()
    }
}

/// Magic of a resync request, after the 4-byte pseudo-header.
pub const RESYNC_MAGIC: [u8; 8] = *b"XDPVSRQ1";
/// Length of a resync request.
pub const RESYNC_LEN: usize = 20;

/// An xdpvs resync request: "send me your table" (see the module doc for
/// why a kernel IPVS backup ignores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResyncRequest {
    pub syncid: u8,
    /// Chosen by the requester; answers can echo it.
    pub nonce: u64,
}

impl ResyncRequest {
    /// The 20-byte datagram.
    pub fn emit(&self) -> [u8; RESYNC_LEN] {
        let mut b = [0u8; RESYNC_LEN];
        // b[0] reserved = 0, b[2..4] size = 0: never the datagram length.
        if let Some(h) = b.first_chunk_mut::<12>() {
            let m = RESYNC_MAGIC;
            *h = [
                0,
                self.syncid,
                0,
                0,
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5],
                m[6],
                m[7],
            ];
        }
        if let Some(t) = b.last_chunk_mut::<8>() {
            *t = self.nonce.to_be_bytes();
        }
        b
    }

    /// Recognise a resync request.
    pub fn parse(b: &[u8]) -> Result<Self, SyncError> {
        if b.len() != RESYNC_LEN
            || u8_at(b, 0) != 0
            || u16_at(b, 2) != 0
            || array_at::<8>(b, 4) != RESYNC_MAGIC
        {
            return Err(SyncError::BadResync);
        }
        Ok(ResyncRequest {
            syncid: u8_at(b, 1),
            nonce: u64::from_be_bytes(array_at::<8>(b, 12)),
        })
    }
}

/// Magic of a resync answer's end marker.
pub const RESYNC_DONE_MAGIC: [u8; 8] = *b"XDPVSRD1";

/// The end of a resync answer: "that was my whole table" (same layout as
/// [`ResyncRequest`], another magic, so a kernel ignores it the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResyncDone {
    pub syncid: u8,
    /// The request's nonce.
    pub nonce: u64,
}

impl ResyncDone {
    /// The 20-byte datagram.
    pub fn emit(&self) -> [u8; RESYNC_LEN] {
        let mut b = ResyncRequest {
            syncid: self.syncid,
            nonce: self.nonce,
        }
        .emit();
        if let Some(m) = b.get_mut(4..12) {
            m.copy_from_slice(&RESYNC_DONE_MAGIC);
        }
        b
    }

    /// Recognise an end marker.
    pub fn parse(b: &[u8]) -> Result<Self, SyncError> {
        if b.len() != RESYNC_LEN || array_at::<8>(b, 4) != RESYNC_DONE_MAGIC {
            return Err(SyncError::BadResync);
        }
        let mut c = [0u8; RESYNC_LEN];
        c.copy_from_slice(b);
        if let Some(m) = c.get_mut(4..12) {
            m.copy_from_slice(&RESYNC_MAGIC);
        }
        ResyncRequest::parse(&c).map(|r| ResyncDone {
            syncid: r.syncid,
            nonce: r.nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Bytes from hex, whitespace and `|` ignored (fields laid out per line).
    fn hex(s: &str) -> Vec<u8> {
        let d: Vec<u8> = s
            .lines()
            .flat_map(|l| l.split('#').next().unwrap().bytes())
            .filter(|c| c.is_ascii_hexdigit())
            .map(|c| (c as char).to_digit(16).unwrap() as u8)
            .collect();
        assert!(d.len().is_multiple_of(2), "odd hex");
        d.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    /// An entry's hex after its first 4 bytes (type, protocol, ver_size).
    fn body(entry: &str) -> String {
        hex(entry)[4..].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    // struct ip_vs_sync_v4, TCP ESTABLISHED, direct routing.
    const CONN_V4_DR: &str = "
        00 06 0024  # type 0, IPPROTO_TCP, ver 0 size 36
        00000003  # flags DROUTE
        0001 9c40  # state ESTABLISHED, cport 40000
        0050 0050  # vport 80, dport 80
        00000000  # fwmark
        00000384  # timeout 900 s
        c6120 00a  # caddr 198.18.0.10
        c613 0001  # vaddr 198.19.0.1
        c612 0102  # daddr 198.18.1.2";

    fn conn_v4_dr() -> SyncEntry {
        SyncEntry {
            flags: flags::DROUTE,
            proto: 6,
            state: tcp_state::ESTABLISHED,
            cport: 40000,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout_s: 900,
            caddr: v4("198.18.0.10"),
            vaddr: v4("198.19.0.1"),
            daddr: v4("198.18.1.2"),
        }
    }

    // struct ip_vs_sync_v6, UDP, NAT.
    const CONN_V6_NAT: &str = "
        01 11 0048  # type STYPE_F_INET6, IPPROTO_UDP, size 72
        00000000  # flags MASQ
        0000 14e9  # state NORMAL, cport 5353
        0035 14b4  # vport 53, dport 5300
        00000000  # fwmark
        0000012c  # timeout 300 s
        20010db8 00000000 00000000 00000010  # caddr 2001:db8::10
        20010db8 00010000 00000000 00000001  # vaddr 2001:db8:1::1
        20010db8 00020000 00000000 00000002  # daddr 2001:db8:2::2";

    fn conn_v6_nat() -> SyncEntry {
        SyncEntry {
            flags: flags::MASQ,
            proto: 17,
            state: udp_state::NORMAL,
            cport: 5353,
            vport: 53,
            dport: 5300,
            fwmark: 0,
            timeout_s: 300,
            caddr: v6("2001:db8::10"),
            vaddr: v6("2001:db8:1::1"),
            daddr: v6("2001:db8:2::2"),
        }
    }

    // Persistence template of a TCP service: <proto, caddr/mask, 0, vaddr,
    // vport, daddr, dport>, timeout = persistence timeout.
    const TEMPLATE_V4: &str = "
        00 06 0024
        00001003  # flags TEMPLATE | DROUTE
        0000 0000  # state NONE, cport 0
        01bb 01bb  # vport 443, dport 443
        00000000
        00000168  # timeout 360 s
        c612 0000  # caddr 198.18.0.0 (client /24)
        c613 0001
        c612 0102";

    fn template_v4() -> SyncEntry {
        SyncEntry {
            flags: flags::TEMPLATE | flags::DROUTE,
            proto: 6,
            state: tpl_state::NONE,
            cport: 0,
            vport: 443,
            dport: 443,
            fwmark: 0,
            timeout_s: 360,
            caddr: v4("198.18.0.0"),
            vaddr: v4("198.19.0.1"),
            daddr: v4("198.18.1.2"),
        }
    }

    // Fwmark template (ip_vs_sched_persist): <IPPROTO_IP, caddr, 0,
    // fwmark, 0, daddr, 0>, the mark also in the fwmark field (skb->mark).
    const FWMARK_TEMPLATE_V4: &str = "
        00 00 0024  # IPPROTO_IP
        00001002  # flags TEMPLATE | TUNNEL
        0000 0000
        0000 0000  # vport 0, dport 0
        00000007  # fwmark 7
        0000012c
        c612 000a
        0000 0007  # vaddr = htonl(7)
        c612 0103";

    fn fwmark_template_v4() -> SyncEntry {
        SyncEntry {
            flags: flags::TEMPLATE | flags::TUNNEL,
            proto: 0,
            state: 0,
            cport: 0,
            vport: 0,
            dport: 0,
            fwmark: 7,
            timeout_s: 300,
            caddr: v4("198.18.0.10"),
            vaddr: fwmark_vaddr(7, false),
            daddr: v4("198.18.1.3"),
        }
    }

    fn decode(b: &[u8]) -> Vec<SyncEntry> {
        let m = SyncMessage::new_checked(b).unwrap();
        m.entries().map(|e| e.unwrap()).collect()
    }

    fn write(syncid: u8, es: &[SyncEntry]) -> Vec<Vec<u8>> {
        let mut w = SyncWriter::new(DEFAULT_MAX_LEN_V4);
        for e in es {
            w.push(e).unwrap();
        }
        w.finish(syncid)
    }

    #[test]
    fn golden_single_entries() {
        let cases = [
            ("05 002c 01 01 0000", CONN_V4_DR, conn_v4_dr()),
            ("07 0050 01 01 0000", CONN_V6_NAT, conn_v6_nat()),
            ("00 002c 01 01 0000", TEMPLATE_V4, template_v4()),
            (
                "ff 002c 01 01 0000",
                FWMARK_TEMPLATE_V4,
                fwmark_template_v4(),
            ),
        ];
        for (hdr, entry, want) in cases {
            // reserved 0, syncid, size, nr_conns 1, version 1, spare 0
            let msg = hex(&format!("00 {hdr} {entry}"));
            let m = SyncMessage::new_checked(&msg[..]).unwrap();
            assert_eq!(m.version(), 1);
            assert_eq!(m.nr_conns(), 1);
            assert_eq!(usize::from(m.size()), msg.len());
            assert_eq!(decode(&msg), vec![want], "{entry}");
            assert_eq!(write(m.syncid(), &[want]), vec![msg], "{entry}");
        }
        assert!(template_v4().is_template());
        assert!(!conn_v4_dr().is_template());
        assert_eq!(conn_v4_dr().fwd_method(), FwdMethod::DirectRoute);
        assert_eq!(conn_v6_nat().fwd_method(), FwdMethod::Masq);
        assert_eq!(fwmark_template_v4().fwd_method(), FwdMethod::Tunnel);
        assert_eq!(fwmark_vaddr(7, true), v6("0:7::"));
    }

    #[test]
    fn golden_two_families_in_one_message() {
        let msg = hex(&format!(
            "00 09 0074 02 01 0000 {CONN_V4_DR} {CONN_V6_NAT}" // 8 + 36 + 72
        ));
        assert_eq!(msg.len(), 0x74);
        assert_eq!(decode(&msg), vec![conn_v4_dr(), conn_v6_nat()]);
        assert_eq!(write(9, &[conn_v4_dr(), conn_v6_nat()]), vec![msg]);
    }

    #[test]
    fn golden_seq_option_skipped_with_padding() {
        // A NAT entry with IPVS_OPT_SEQ_DATA: size 36 + 2 + 24 = 62, then
        // 2 bytes of padding before the next entry (the kernel pads before
        // the next entry, the message size counts it).
        let msg = hex(&format!(
            "00 01 006c 02 01 0000
             00 06 003e 00000600 0001 9c41 0050 0050 00000000 00000384
             c612000b c6130001 c6120102
             01 18  01020304 00000010 00000008  0a0b0c0d 00000000 00000000
             0000
             {CONN_V4_DR}"
        ));
        assert_eq!(msg.len(), 0x6c);
        let want0 = SyncEntry {
            flags: flags::SEQ_MASK,
            cport: 40001,
            caddr: v4("198.18.0.11"),
            ..conn_v4_dr()
        };
        assert_eq!(decode(&msg), vec![want0, conn_v4_dr()]);
        // PE data and name options, and an ignorable unknown one.
        let msg = hex(&format!(
            "00 01 0039 01 01 0000
             00 06 0031 {}
             02 03 aabbcc  03 03 736970  45 01 00",
            body(CONN_V4_DR)
        ));
        assert_eq!(decode(&msg), vec![conn_v4_dr()]);
    }

    #[test]
    fn unknown_mandatory_option_drops_only_that_entry() {
        let b4 = &body(CONN_V4_DR);
        let msg = hex(&format!(
            "00 01 0054 02 01 0000
             00 06 0028 {b4} 05 02 0000
             {CONN_V4_DR}"
        ));
        let m = SyncMessage::new_checked(&msg[..]).unwrap();
        let got: Vec<_> = m.entries().collect();
        assert_eq!(
            got,
            vec![Err(SyncError::UnknownMandatoryOption), Ok(conn_v4_dr())]
        );
    }

    fn header(size: usize, n: u8) -> String {
        format!("00 01 {size:04x} {n:02x} 01 0000")
    }

    #[test]
    fn error_table() {
        let b4 = &body(CONN_V4_DR);
        let v6body = &body(CONN_V6_NAT);
        // (message hex, error from new_checked or from the first entry)
        let cases: Vec<(String, SyncError)> = vec![
            ("00 01 0007 00 01 00".into(), SyncError::Truncated),
            ("".into(), SyncError::Truncated),
            // Version 0 header: nr_conns first.
            ("01 01 0008 00 01 0000".into(), SyncError::Version0),
            ("00 01 0008 00 02 0000".into(), SyncError::BadVersion),
            ("00 01 0008 00 00 0000".into(), SyncError::BadVersion),
            ("00 01 0008 00 01 0001".into(), SyncError::BadSpare),
            ("00 01 0009 00 01 0000".into(), SyncError::SizeMismatch),
            (
                format!("00 01 002d 01 01 0000 {CONN_V4_DR}"),
                SyncError::SizeMismatch,
            ),
            (
                format!("{} {CONN_V4_DR}", header(44, 0)),
                SyncError::CountMismatch,
            ),
            (
                format!("{} {CONN_V4_DR} {CONN_V4_DR}", header(80, 1)),
                SyncError::CountMismatch,
            ),
            (
                format!("{} {CONN_V4_DR}", header(44, 2)),
                SyncError::EntryTruncated,
            ),
            (
                format!("{} 00 06 0030 {b4}", header(44, 1)),
                SyncError::EntryOverflow,
            ),
            (
                format!("{} 00 06 1024 {b4}", header(44, 1)),
                SyncError::EntryVersion,
            ),
            (
                format!("{} 00 06 0000 {b4}", header(44, 1)),
                SyncError::EntryZeroSize,
            ),
            // IPv6 bit with an IPv4 size.
            (
                format!("{} 01 06 0024 {b4}", header(44, 1)),
                SyncError::EntryTooShort { inet6: true },
            ),
            (
                format!("{} 00 06 0020 {} {CONN_V4_DR}", header(76, 2), &b4[..56]),
                SyncError::EntryTooShort { inet6: false },
            ),
            (
                format!("{} 02 06 0024 {b4}", header(44, 1)),
                SyncError::BadType,
            ),
            // Options.
            (
                format!("{} 00 06 0025 {b4} 01 000000", header(48, 1)),
                SyncError::OptionTruncated,
            ),
            (
                format!("{} 00 06 0028 {b4} 02 00 0000", header(48, 1)),
                SyncError::OptionBadLength,
            ),
            (
                format!("{} 00 06 0028 {b4} 02 03 0000", header(48, 1)),
                SyncError::OptionBadLength,
            ),
            (
                format!("{} 00 06 0028 {b4} 01 02 0000", header(48, 1)),
                SyncError::SeqOptionLength,
            ),
            (
                format!("{} 00 06 002a {b4} 02 01 00 42 01 00 0000", header(52, 1)),
                SyncError::OptionDuplicate,
            ),
            (
                format!(
                    "{} 00 06 0037 {b4} 03 11 {} 00",
                    header(64, 1),
                    "61".repeat(17)
                ),
                SyncError::PeNameTooLong,
            ),
            (
                format!("{} 01 11 0048 {v6body}", header(80, 1)),
                SyncError::Truncated, // placeholder: valid, see below
            ),
        ];
        let n = cases.len();
        for (i, (h, want)) in cases.into_iter().enumerate() {
            let b = hex(&h);
            let got = match SyncMessage::new_checked(&b[..]) {
                Err(e) => Err(e),
                Ok(m) => m.entries().find_map(|r| r.err()).map_or(Ok(()), Err),
            };
            if i == n - 1 {
                assert_eq!(got, Ok(()), "valid IPv6 entry");
                continue;
            }
            assert_eq!(got, Err(want), "case {i}: {h}");
            assert!(!want.reason().is_empty());
        }
    }

    #[test]
    fn reasons_are_distinct_and_snake_case() {
        let mut seen = HashSet::new();
        for (i, e) in SyncError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            let r = e.reason();
            assert!(seen.insert(r), "duplicate {r}");
            assert!(r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
        assert_eq!(SyncError::Version0.reason(), "version0");
    }

    #[test]
    fn writer_splits_by_size_and_count_and_refuses_mixed() {
        let mut w = SyncWriter::new(DEFAULT_MAX_LEN_V4);
        for _ in 0..100 {
            w.push(&conn_v4_dr()).unwrap();
        }
        let ms = w.finish(3);
        // (1472 - 8) / 36 = 40 per message.
        assert_eq!(
            ms.iter().map(|m| m.len()).collect::<Vec<_>>(),
            vec![8 + 40 * 36, 8 + 40 * 36, 8 + 20 * 36]
        );
        for m in &ms {
            assert!(m.len() <= DEFAULT_MAX_LEN_V4);
            assert!(decode(m).iter().all(|e| *e == conn_v4_dr()));
        }
        let mut w = SyncWriter::new(65535);
        for _ in 0..300 {
            w.push(&conn_v4_dr()).unwrap();
        }
        let ms = w.finish(3);
        assert_eq!(ms.len(), 2);
        assert_eq!(
            SyncMessage::new_checked(&ms[0][..]).unwrap().nr_conns(),
            255
        );
        let mut w = SyncWriter::new(0);
        let bad = SyncEntry {
            daddr: v6("2001:db8::1"),
            ..conn_v4_dr()
        };
        assert_eq!(w.push(&bad), Err(SyncError::MixedFamilies));
        assert!(w.is_empty());
        assert!(w.finish(1).is_empty());
        // The smallest max_len still holds an IPv6 entry.
        let mut w = SyncWriter::new(0);
        w.push(&conn_v6_nat()).unwrap();
        w.push(&conn_v6_nat()).unwrap();
        assert_eq!(w.finish(1).len(), 2);
    }

    #[test]
    fn resync_request() {
        let r = ResyncRequest {
            syncid: 4,
            nonce: 0x0102_0304_0506_0708,
        };
        let b = r.emit();
        assert_eq!(
            b.to_vec(),
            hex("00 04 0000 5844505653525131 0102030405060708")
        );
        assert_eq!(ResyncRequest::parse(&b), Ok(r));
        // A kernel backup checks `buflen != ntohs(m2->size)` first: 0 != 20.
        assert_ne!(usize::from(u16::from_be_bytes([b[2], b[3]])), b.len());
        assert_eq!(
            SyncMessage::new_checked(&b[..]).err(),
            Some(SyncError::SizeMismatch)
        );
        for i in 0..b.len() {
            if i == 1 || i >= 12 {
                continue; // syncid and nonce are free
            }
            let mut c = b;
            c[i] ^= 0x20;
            assert_eq!(ResyncRequest::parse(&c), Err(SyncError::BadResync), "{i}");
        }
        assert!(ResyncRequest::parse(&b[..19]).is_err());
        let d = ResyncDone {
            syncid: r.syncid,
            nonce: r.nonce,
        };
        assert_eq!(ResyncDone::parse(&d.emit()), Ok(d));
        assert!(
            ResyncDone::parse(&b).is_err(),
            "a request is not an end marker"
        );
        assert!(ResyncRequest::parse(&d.emit()).is_err(), "nor the reverse");
        let mut long = b.to_vec();
        long.push(0);
        assert!(ResyncRequest::parse(&long).is_err());
    }

    fn addr(inet6: bool) -> impl Strategy<Value = IpAddr> {
        if inet6 {
            any::<u128>()
                .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .boxed()
        } else {
            any::<u32>()
                .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .boxed()
        }
    }

    fn entry() -> impl Strategy<Value = SyncEntry> {
        any::<bool>().prop_flat_map(|inet6| {
            (
                (any::<u32>(), any::<u8>(), any::<u16>(), any::<u16>()),
                (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
                (addr(inet6), addr(inet6), addr(inet6)),
            )
                .prop_map(
                    |((flags, proto, state, cport), (vport, dport, fwmark, timeout_s), a)| {
                        SyncEntry {
                            flags,
                            proto,
                            state,
                            cport,
                            vport,
                            dport,
                            fwmark,
                            timeout_s,
                            caddr: a.0,
                            vaddr: a.1,
                            daddr: a.2,
                        }
                    },
                )
        })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            es in proptest::collection::vec(entry(), 0..120),
            max_len in 0usize..3000,
            syncid in any::<u8>(),
        ) {
            let mut w = SyncWriter::new(max_len);
            for e in &es {
                w.push(e).unwrap();
            }
            let mut back = Vec::new();
            for m in w.finish(syncid) {
                prop_assert!(m.len() <= max_len.max(SyncWriter::MIN_LEN));
                let v = SyncMessage::new_checked(&m[..]).unwrap();
                prop_assert_eq!(v.syncid(), syncid);
                for e in v.entries() {
                    back.push(e.unwrap());
                }
            }
            prop_assert_eq!(back, es);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(m) = SyncMessage::new_checked(&b[..]) {
                let n = m.entries().count();
                prop_assert!(n <= usize::from(m.nr_conns()));
            }
            let _ = ResyncRequest::parse(&b);
        }

        #[test]
        fn mutated_messages_never_panic(
            es in proptest::collection::vec(entry(), 1..5),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut w = SyncWriter::new(DEFAULT_MAX_LEN_V4);
            for e in &es {
                w.push(e).unwrap();
            }
            let mut m = w.finish(1).remove(0);
            for (i, x) in flips {
                let n = m.len();
                m[i % n] ^= x;
            }
            if let Ok(v) = SyncMessage::new_checked(&m[..]) {
                for _ in v.entries() {}
            }
        }
    }
}
