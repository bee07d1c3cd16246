//! Thin wrappers around the `bpf()` system call: maps, program load, XDP
//! links and `BPF_PROG_TEST_RUN`. Every object is an [`OwnedFd`] closed on
//! drop; closing a link fd detaches its program.
//!
//! The attribute structs below are prefixes of the kernel's `union bpf_attr`
//! for one command each, with explicit padding so that no byte handed to the
//! kernel is uninitialised. The kernel zero-fills the rest of the union.

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::asm::Insn;
use super::error::XdpError;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: u32 = 21;
const BPF_MAP_LOOKUP_BATCH: u32 = 24;
const BPF_MAP_UPDATE_BATCH: u32 = 26;
/// `map_flags`: a hash map allocates entries as they are inserted instead of
/// reserving its whole capacity at creation.
pub const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_CREATE: u32 = 28;

/// `BPF_PROG_TYPE_XDP`.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` attach type (link create, expected attach type).
pub const BPF_XDP: u32 = 37;
/// Attach in generic (skb) mode.
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
/// Attach in native (driver) mode.
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
pub const BPF_EXIST: u64 = 2;

/// Size of the verifier log buffer used when a load fails.
const LOG_SIZE: usize = 1 << 20;

/// Map types used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH`.
    Hash,
    /// `BPF_MAP_TYPE_ARRAY`.
    Array,
    /// `BPF_MAP_TYPE_XSKMAP`: queue index -> AF_XDP socket.
    XskMap,
    /// `BPF_MAP_TYPE_PERCPU_HASH`: one value per possible CPU; user space
    /// reads and writes them all at once, each padded to 8 bytes.
    PercpuHash,
}

impl MapType {
    const fn number(self) -> u32 {
        match self {
            MapType::Hash => 1,
            MapType::Array => 2,
            MapType::XskMap => 17,
            MapType::PercpuHash => 5,
        }
    }
}

/// Number of possible CPUs (`/sys/devices/system/cpu/possible`, "0-N" or
/// a list of ranges): how many values a per-CPU map's element holds.
pub fn possible_cpus() -> Result<usize, XdpError> {
    const PATH: &str = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(PATH).map_err(|e| XdpError::sys("read", PATH, e))?;
    parse_cpu_list(text.trim()).ok_or_else(|| {
        XdpError::sys(
            "parse",
            PATH,
            io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {text:?}")),
        )
    })
}

/// The highest CPU of a list such as "0-3,5" plus one.
fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut top = None;
    for part in s.split(',') {
        let last = part.rsplit('-').next()?.trim().parse::<usize>().ok()?;
        top = Some(top.unwrap_or(0).max(last + 1));
    }
    top
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    /// `value` or `next_key`.
    value: u64,
    flags: u64,
}

/// The `batch` member of `union bpf_attr` (`BPF_MAP_*_BATCH`).
#[repr(C)]
#[derive(Default)]
struct MapBatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries read per `BPF_MAP_LOOKUP_BATCH` call.
const BATCH: usize = 1024;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Issue `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// Every pointer stored in `attr` must be valid for the kernel to read (and,
/// for output fields, write) as many bytes as the command implies, for the
/// duration of the call.
unsafe fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    let size = size_of::<T>() as libc::c_uint;
    let ptr = attr as *mut T as *mut libc::c_void;
    // SAFETY: `ptr` points to a live, fully initialised `T` of `size` bytes
    // (attribute structs have no implicit padding); the caller vouches for
    // the pointers inside it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, ptr, size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wrap a file descriptor returned by a successful `bpf()` call.
fn owned(ret: i64, op: &'static str, context: &str) -> Result<OwnedFd, XdpError> {
    let fd = i32::try_from(ret).map_err(|_| {
        XdpError::sys(
            op,
            context,
            io::Error::new(io::ErrorKind::InvalidData, "fd out of range"),
        )
    })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing
    // else owns; wrapping it transfers ownership (closed once, on drop).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // Descriptors are non-negative.
    fd.as_raw_fd() as u32
}

/// Copy `name` into a kernel object name field (at most 15 bytes + NUL).
fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (dst, src) in out.iter_mut().take(15).zip(name.bytes()) {
        *dst = src;
    }
    out
}

/// A BPF map with the sizes it was created with, so that every key and value
/// buffer handed to the kernel is checked against them first.
#[derive(Debug)]
pub struct BpfMap {
    fd: OwnedFd,
    name: String,
    key_size: usize,
    /// Bytes of one element's value as user space passes it: `value_size`,
    /// or for a per-CPU map one 8-byte-aligned value per possible CPU.
    value_buf: usize,
    max_entries: u32,
}

impl BpfMap {
    /// `BPF_MAP_CREATE`. `name` should be at most 15 chars of `[A-Za-z0-9_.]`.
    pub fn create(
        map_type: MapType,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> Result<Self, XdpError> {
        Self::create_with_flags(map_type, name, key_size, value_size, max_entries, 0)
    }

    /// [`BpfMap::create`] with `map_flags` (e.g. [`BPF_F_NO_PREALLOC`]).
    pub fn create_with_flags(
        map_type: MapType,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    ) -> Result<Self, XdpError> {
        let mut attr = MapCreateAttr {
            map_type: map_type.number(),
            key_size,
            value_size,
            max_entries,
            map_flags,
            map_name: obj_name(name),
            ..Default::default()
        };
        // SAFETY: the attribute holds no pointers.
        let ret = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }
            .map_err(|e| XdpError::sys("BPF_MAP_CREATE", name, e))?;
        let value_buf = match map_type {
            MapType::PercpuHash => (value_size as usize).next_multiple_of(8) * possible_cpus()?,
            _ => value_size as usize,
        };
        Ok(BpfMap {
            fd: owned(ret, "BPF_MAP_CREATE", name)?,
            name: name.to_owned(),
            key_size: key_size as usize,
            value_buf,
            max_entries,
        })
    }

    /// The map's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Capacity given at creation.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Key size in bytes.
    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// Bytes of a value buffer for [`BpfMap::lookup`], [`BpfMap::update`]
    /// and [`BpfMap::for_each_batch`] (per-CPU maps: every CPU's value).
    pub fn value_buf_size(&self) -> usize {
        self.value_buf
    }

    fn check(&self, what: &'static str, expected: usize, got: usize) -> Result<(), XdpError> {
        if expected == got {
            Ok(())
        } else {
            Err(XdpError::BufferSize {
                map: self.name.clone(),
                what,
                expected,
                got,
            })
        }
    }

    /// `BPF_MAP_UPDATE_ELEM` with `flags` ([`BPF_ANY`], [`BPF_NOEXIST`], [`BPF_EXIST`]).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), XdpError> {
        self.check("key", self.key_size, key.len())?;
        self.check("value", self.value_buf, value.len())?;
        let mut attr = MapElemAttr {
            map_fd: fd_u32(self.fd.as_fd()),
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            flags,
            ..Default::default()
        };
        // SAFETY: key and value are live buffers of exactly key_size and
        // value_buf bytes (checked above: value_size, or for a per-CPU map
        // one padded value per possible CPU); the kernel only reads them.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
            .map(drop)
            .map_err(|e| XdpError::sys("BPF_MAP_UPDATE_ELEM", self.name.as_str(), e))
    }

    /// `BPF_MAP_DELETE_ELEM`. Returns false if the key was absent.
    pub fn delete(&self, key: &[u8]) -> Result<bool, XdpError> {
        self.check("key", self.key_size, key.len())?;
        let mut attr = MapElemAttr {
            map_fd: fd_u32(self.fd.as_fd()),
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key is a live buffer of exactly key_size bytes, only read.
        match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(XdpError::sys("BPF_MAP_DELETE_ELEM", self.name.as_str(), e)),
        }
    }

    /// `BPF_MAP_LOOKUP_ELEM` into `value`. Returns false if the key is absent.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> Result<bool, XdpError> {
        self.read_elem(BPF_MAP_LOOKUP_ELEM, "BPF_MAP_LOOKUP_ELEM", key, value)
    }

    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` into `value` (hash maps, 5.14+).
    /// Returns false if the key was absent.
    pub fn lookup_and_delete(&self, key: &[u8], value: &mut [u8]) -> Result<bool, XdpError> {
        self.read_elem(
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
            key,
            value,
        )
    }

    /// A command that reads the value of `key` into `value`.
    fn read_elem(
        &self,
        cmd: u32,
        op: &'static str,
        key: &[u8],
        value: &mut [u8],
    ) -> Result<bool, XdpError> {
        self.check("key", self.key_size, key.len())?;
        self.check("value", self.value_buf, value.len())?;
        let mut attr = MapElemAttr {
            map_fd: fd_u32(self.fd.as_fd()),
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key (read) and value (written) are live buffers of exactly
        // key_size and value_buf bytes (a per-CPU map's every value); `cmd` is
        // one of the two element reads, which touch nothing else.
        match unsafe { bpf(cmd, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(XdpError::sys(op, self.name.as_str(), e)),
        }
    }

    /// Every entry, read with `BPF_MAP_LOOKUP_BATCH` ([`BATCH`] entries a
    /// call; hash maps, 5.6+): `f(key, value)` for each. At most
    /// `max_entries` entries are visited. Entries added or removed during
    /// the walk may or may not be seen, as with any walk of a live map.
    pub fn for_each_batch(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<usize, XdpError> {
        let (ks, vs) = (self.key_size.max(1), self.value_buf.max(1));
        let mut keys = vec![0u8; ks * BATCH];
        let mut values = vec![0u8; vs * BATCH];
        // Hash maps' batch token is a bucket index (u32); 8 bytes is room
        // for any map type's.
        let mut token_in = [0u8; 8];
        let mut token_out = [0u8; 8];
        let mut first = true;
        let mut seen = 0usize;
        loop {
            let mut attr = MapBatchAttr {
                in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
                out_batch: token_out.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: BATCH as u32,
                map_fd: fd_u32(self.fd.as_fd()),
                ..Default::default()
            };
            // SAFETY: in_batch is NULL or an 8-byte live buffer (read);
            // out_batch an 8-byte live buffer (written, at most the map's
            // token size, 4 bytes for hash maps); keys and values are live
            // buffers of `count` keys and values of this map's sizes, which
            // the kernel fills with at most `count` entries (a per-CPU
            // map's value being value_buf bytes, every CPU's).
            let r = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
            let n = (attr.count as usize).min(BATCH);
            for i in 0..n {
                if let (Some(k), Some(v)) = (
                    keys.get(i * ks..(i + 1) * ks),
                    values.get(i * vs..(i + 1) * vs),
                ) {
                    f(k, v);
                }
            }
            seen += n;
            match r {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(seen),
                Err(e) => return Err(XdpError::sys("BPF_MAP_LOOKUP_BATCH", self.name.as_str(), e)),
            }
            if seen >= self.max_entries as usize {
                return Ok(seen);
            }
            token_in = token_out;
            first = false;
        }
    }

    /// `BPF_MAP_UPDATE_BATCH` (5.6+) with `flags` for every element: `keys`
    /// and `values` hold the same number of keys and values back to back,
    /// written in order. Returns how many were written before the first
    /// refusal, and the refusal (the elements after it are not written).
    pub fn update_batch(
        &self,
        keys: &[u8],
        values: &[u8],
        flags: u64,
    ) -> (usize, Result<(), XdpError>) {
        let n = keys.len() / self.key_size.max(1);
        if n == 0 {
            return (0, Ok(()));
        }
        if let Err(e) = self
            .check("keys", n * self.key_size, keys.len())
            .and_then(|()| self.check("values", n * self.value_buf, values.len()))
        {
            return (0, Err(e));
        }
        let Ok(count) = u32::try_from(n) else {
            return (
                0,
                Err(XdpError::BufferSize {
                    map: self.name.clone(),
                    what: "batch",
                    expected: u32::MAX as usize,
                    got: n,
                }),
            );
        };
        let mut attr = MapBatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count,
            map_fd: fd_u32(self.fd.as_fd()),
            elem_flags: flags,
            ..Default::default()
        };
        // SAFETY: keys and values are live buffers of exactly `count` keys
        // of key_size bytes and `count` values of value_buf bytes (checked
        // above), only read; no batch tokens (in/out_batch NULL).
        let r = unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) };
        let done = (attr.count as usize).min(n);
        (
            done,
            r.map(drop)
                .map_err(|e| XdpError::sys("BPF_MAP_UPDATE_BATCH", self.name.as_str(), e)),
        )
    }

    /// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first key when
    /// `None`) into `next`. Returns false at the end.
    pub fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<bool, XdpError> {
        if let Some(k) = key {
            self.check("key", self.key_size, k.len())?;
        }
        self.check("next key", self.key_size, next.len())?;
        let mut attr = MapElemAttr {
            map_fd: fd_u32(self.fd.as_fd()),
            key: key.map_or(0, |k| k.as_ptr() as u64),
            value: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key (read, or NULL) and next (written) are live buffers of
        // exactly key_size bytes.
        match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(XdpError::sys("BPF_MAP_GET_NEXT_KEY", self.name.as_str(), e)),
        }
    }

    /// All keys, by walking `BPF_MAP_GET_NEXT_KEY` (at most `max_entries`).
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, XdpError> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut next = vec![0u8; self.key_size];
        let mut has = self.next_key(None, &mut next)?;
        while has && out.len() < self.max_entries as usize {
            out.push(next.clone());
            let cur = next.clone();
            has = self.next_key(Some(&cur), &mut next)?;
        }
        Ok(out)
    }
}

impl AsFd for BpfMap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn load_attr(
    prog_type: u32,
    insns: &[u64],
    license: &CStr,
    name: &str,
    expected_attach_type: u32,
) -> ProgLoadAttr {
    ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: obj_name(name),
        expected_attach_type,
        ..Default::default()
    }
}

/// `BPF_PROG_LOAD`. On failure the load is retried with a level-1 verifier
/// log, which is returned in [`XdpError::Verifier`].
pub fn prog_load(
    prog_type: u32,
    insns: &[Insn],
    license: &CStr,
    name: &str,
    expected_attach_type: u32,
) -> Result<OwnedFd, XdpError> {
    let raw: Vec<u64> = insns.iter().map(|i| i.to_u64()).collect();
    let mut attr = load_attr(prog_type, &raw, license, name, expected_attach_type);
    // SAFETY: insns points to insn_cnt live instructions and license to a
    // NUL-terminated string, both only read; no log buffer.
    let first = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
    let err = match first {
        Ok(ret) => return owned(ret, "BPF_PROG_LOAD", name),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    let mut attr = load_attr(prog_type, &raw, license, name, expected_attach_type);
    attr.log_level = 1;
    attr.log_size = LOG_SIZE as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above, plus log_buf points to log_size writable bytes that
    // outlive the call.
    let second = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
    match second {
        // Loaded on the second try (should not happen): keep it.
        Ok(ret) => owned(ret, "BPF_PROG_LOAD", name),
        Err(e2) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(log.get(..end).unwrap_or_default()).into_owned();
            // Report the original errno unless the retry says something else.
            let source = if e2.raw_os_error() == Some(libc::ENOSPC) {
                err
            } else {
                e2
            };
            Err(XdpError::Verifier {
                name: name.to_owned(),
                source,
                log: text,
            })
        }
    }
}

/// `BPF_LINK_CREATE` attaching `prog` to `ifindex` as `attach_type` with
/// `flags` (for XDP: [`XDP_FLAGS_SKB_MODE`] or [`XDP_FLAGS_DRV_MODE`]).
pub fn link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> Result<OwnedFd, XdpError> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(prog),
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    let ctx = format!("ifindex {ifindex} flags {flags:#x}");
    // SAFETY: the attribute holds no pointers.
    let ret = unsafe { bpf(BPF_LINK_CREATE, &mut attr) }
        .map_err(|e| XdpError::sys("BPF_LINK_CREATE", ctx.as_str(), e))?;
    owned(ret, "BPF_LINK_CREATE", &ctx)
}

/// Outcome of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (for XDP: the action).
    pub retval: u32,
    /// Average run time in nanoseconds.
    pub duration_ns: u32,
    /// Bytes the kernel wrote to the output buffer (0 without one).
    pub data_out: usize,
}

/// `BPF_PROG_TEST_RUN` of `prog` on `data` with optional context `ctx_in`
/// (for XDP a `struct xdp_md`), `repeat` times (0 counts as 1).
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    ctx_in: Option<&[u8]>,
    repeat: u32,
    data_out: Option<&mut [u8]>,
) -> Result<TestRun, XdpError> {
    let (out_ptr, out_len) = match data_out {
        Some(b) => (b.as_mut_ptr() as u64, run_len(b.len())?),
        None => (0, 0),
    };
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        data_size_in: run_len(data.len())?,
        data_in: data.as_ptr() as u64,
        data_size_out: out_len,
        data_out: out_ptr,
        repeat,
        ctx_size_in: ctx_in.map_or(Ok(0), |c| run_len(c.len()))?,
        ctx_in: ctx_in.map_or(0, |c| c.as_ptr() as u64),
        ..Default::default()
    };
    // SAFETY: data_in and ctx_in point to live buffers of the given sizes,
    // only read; data_out is NULL or a live buffer of data_size_out bytes
    // that the kernel writes at most that many bytes into (it reports
    // ENOSPC rather than overrun it); ctx_out is NULL.
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }
        .map_err(|e| XdpError::sys("BPF_PROG_TEST_RUN", format!("{} bytes", data.len()), e))?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
        data_out: (attr.data_size_out as usize).min(out_len as usize),
    })
}

/// A `BPF_PROG_TEST_RUN` buffer size as the kernel's `u32`.
fn run_len(n: usize) -> Result<u32, XdpError> {
    u32::try_from(n).map_err(|_| {
        XdpError::sys(
            "BPF_PROG_TEST_RUN",
            "input size",
            io::Error::from_raw_os_error(libc::E2BIG),
        )
    })
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: run an XDP program on live frames (5.18+).
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Largest `batch_size` of a live-frames run (the kernel's `TEST_XDP_MAX_BATCH`).
pub const TEST_XDP_MAX_BATCH: u32 = 256;

/// `BPF_PROG_TEST_RUN` of an XDP program with [`BPF_F_TEST_XDP_LIVE_FRAMES`]:
/// `repeat` frames built from `data` (and the `struct xdp_md` `ctx_in`, whose
/// ingress ifindex names the device), `batch_size` (1..=256) at a time from a
/// page pool, and the program's actions carried out (`XDP_TX` and
/// `XDP_REDIRECT` transmit, `XDP_PASS` injects into the stack). Returns the
/// kernel's average time per repetition; it does not report how many frames
/// the device accepted (read the device's counters).
pub fn prog_test_run_live(
    prog: BorrowedFd<'_>,
    data: &[u8],
    ctx_in: &[u8],
    repeat: u32,
    batch_size: u32,
) -> Result<TestRun, XdpError> {
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        data_size_in: run_len(data.len())?,
        data_in: data.as_ptr() as u64,
        repeat,
        ctx_size_in: run_len(ctx_in.len())?,
        ctx_in: ctx_in.as_ptr() as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    // SAFETY: data_in and ctx_in point to live buffers of the given sizes,
    // only read; data_out and ctx_out are NULL (live mode writes nothing
    // back but retval and duration, inside `attr`).
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) }.map_err(|e| {
        XdpError::sys(
            "BPF_PROG_TEST_RUN",
            format!("live frames, repeat {repeat}, batch {batch_size}"),
            e,
        )
    })?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
        data_out: 0,
    })
}

/// The kernel id of a program, map or link (`BPF_OBJ_GET_INFO_BY_FD`: the
/// info structs of all three start with `u32 type; u32 id;`).
pub fn obj_id(fd: BorrowedFd<'_>) -> Result<u32, XdpError> {
    let mut info = [0u32; 2];
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(fd),
        info_len: size_of::<[u32; 2]>() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: info points to info_len writable bytes that outlive the call;
    // the kernel writes at most info_len bytes.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }
        .map_err(|e| XdpError::sys("BPF_OBJ_GET_INFO_BY_FD", "id", e))?;
    Ok(info[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_give_the_number_of_possible_cpus() {
        for (text, n) in [
            ("0", Some(1)),
            ("0-1", Some(2)),
            ("0-3,5", Some(6)),
            ("0,2-7", Some(8)),
        ] {
            assert_eq!(parse_cpu_list(text), n, "{text}");
        }
        for bad in ["", "x", "0-", "1-a"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn attr_layouts_match_the_kernel() {
        // Offsets of union bpf_attr members in include/uapi/linux/bpf.h.
        assert_eq!(size_of::<MapCreateAttr>(), 48);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(size_of::<MapElemAttr>(), 32);
        assert_eq!(std::mem::offset_of!(MapElemAttr, key), 8);
        assert_eq!(std::mem::offset_of!(MapElemAttr, flags), 24);
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<LinkCreateAttr>(), 16);
        assert_eq!(std::mem::offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
        assert_eq!(size_of::<TestRunAttr>(), 80);
    }

    #[test]
    fn object_names_are_truncated_and_nul_terminated() {
        assert_eq!(&obj_name("xsk")[..4], b"xsk\0");
        let long = obj_name("abcdefghijklmnopqrstuvwxyz");
        assert_eq!(&long[..15], b"abcdefghijklmno");
        assert_eq!(long[15], 0);
    }
}
