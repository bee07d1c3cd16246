//! Errors of the XDP layer: failed `bpf()` calls (with errno and context),
//! verifier rejections (with the verifier log), assembly and size errors.

use std::io;

use thiserror::Error;

use super::asm::AsmError;

/// Everything that can go wrong while loading, attaching or feeding the
/// XDP program and its maps.
#[derive(Debug, Error)]
pub enum XdpError {
    /// A `bpf()` (or other) system call failed.
    #[error("{op} failed ({context}): {source}")]
    Sys {
        /// The command, e.g. `BPF_MAP_CREATE`.
        op: &'static str,
        /// What we were doing, e.g. the map name.
        context: String,
        /// The errno as an I/O error.
        #[source]
        source: io::Error,
    },
    /// `BPF_PROG_LOAD` failed; `log` is the verifier log.
    #[error("BPF_PROG_LOAD of {name} failed: {source}\nverifier log:\n{log}")]
    Verifier {
        /// Program name.
        name: String,
        /// The errno as an I/O error.
        #[source]
        source: io::Error,
        /// The verifier's log (level 1), possibly truncated at the start.
        log: String,
    },
    /// The program could not be assembled.
    #[error("assembling the XDP program: {0}")]
    Asm(#[from] AsmError),
    /// The committed XDP object could not be read or linked.
    #[error("XDP object: {0}")]
    Object(String),
    /// A key or value buffer does not match the map's sizes.
    #[error("map {map}: {what} is {got} bytes, the map wants {expected}")]
    BufferSize {
        /// Map name.
        map: String,
        /// "key", "value" or "next key".
        what: &'static str,
        /// Size the map was created with.
        expected: usize,
        /// Size passed in.
        got: usize,
    },
    /// More entries requested than the map can hold.
    #[error("map {map} holds at most {max} entries, {wanted} requested")]
    Capacity {
        /// Map name.
        map: String,
        /// Map capacity.
        max: u32,
        /// Requested entry count.
        wanted: usize,
    },
    /// A queue index beyond the XSKMAP.
    #[error("queue {queue} out of range: the XSKMAP has {max} slots")]
    Queue {
        /// Requested queue.
        queue: u32,
        /// Number of slots.
        max: u32,
    },
    /// A test frame the kernel cannot take.
    #[error("test frame of {len} bytes: must be {min}..={max} bytes")]
    FrameSize {
        /// Frame length.
        len: usize,
        /// Minimum (an Ethernet header).
        min: usize,
        /// Maximum accepted by this wrapper.
        max: usize,
    },
}

impl XdpError {
    /// The errno behind a failed system call, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            XdpError::Sys { source, .. } | XdpError::Verifier { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    pub(crate) fn sys(op: &'static str, context: impl Into<String>, source: io::Error) -> Self {
        XdpError::Sys {
            op,
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_exposed() {
        let e = XdpError::sys("BPF_MAP_CREATE", "vip", io::Error::from_raw_os_error(1));
        assert_eq!(e.errno(), Some(1));
        assert!(e.to_string().contains("BPF_MAP_CREATE"));
        assert!(e.to_string().contains("vip"));
        let e = XdpError::Queue { queue: 70, max: 64 };
        assert_eq!(e.errno(), None);
    }
}
