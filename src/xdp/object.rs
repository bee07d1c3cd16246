//! The committed XDP object (`bpf/xdpvs.o`, built from `bpf/xdpvs.c` by
//! `bpf/build.sh`): its program section as instructions, with every
//! reference to a map symbol patched to a map's file descriptor.
//!
//! The object holds no map definitions, only names in a `maps` section
//! (`bpf/maps.h`): user space creates the maps with the sizes it wants and
//! this module links them by name, as libbpf's legacy loader did. It is the
//! only ELF the director reads, so a few checks do instead of a general
//! loader: one program section, no calls into `.text`, and every relocation
//! a 64-bit immediate load of a `maps` symbol.

use std::collections::HashMap;
use std::os::fd::RawFd;

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};

use super::asm::Insn;
use super::error::XdpError;

/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of a 64-bit immediate load.
const LD_IMM64: u8 = 0x18;
/// `src_reg` of an `LD_IMM64` whose immediate is a map file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

/// A program read from an object file, its map references still unresolved.
#[derive(Clone, Debug)]
pub struct BpfObject {
    insns: Vec<Insn>,
    /// (instruction index, map name) of every map reference.
    map_refs: Vec<(usize, String)>,
}

fn bad(why: impl Into<String>) -> XdpError {
    XdpError::Object(why.into())
}

impl BpfObject {
    /// Read section `section` (e.g. `"xdp"`) of the ELF object `elf`.
    pub fn parse(elf: &[u8], section: &str) -> Result<BpfObject, XdpError> {
        let file = object::File::parse(elf).map_err(|e| bad(format!("not an ELF object: {e}")))?;
        let sec = file
            .section_by_name(section)
            .ok_or_else(|| bad(format!("no section {section:?}")))?;
        let data = sec
            .data()
            .map_err(|e| bad(format!("section {section}: {e}")))?;
        if data.len() % 8 != 0 || data.is_empty() {
            return Err(bad(format!(
                "section {section}: {} bytes is not a whole number of instructions",
                data.len()
            )));
        }
        let insns: Vec<Insn> = data
            .chunks_exact(8)
            .map(|c| {
                let b: [u8; 8] = c.try_into().unwrap_or_default();
                Insn {
                    code: b[0],
                    dst: b[1] & 0x0f,
                    src: b[1] >> 4,
                    off: i16::from_le_bytes([b[2], b[3]]),
                    imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                }
            })
            .collect();
        let mut map_refs = Vec::new();
        for (off, rel) in sec.relocations() {
            let RelocationTarget::Symbol(si) = rel.target() else {
                return Err(bad(format!("relocation at {off:#x} has no symbol")));
            };
            let sym = file
                .symbol_by_index(si)
                .map_err(|e| bad(format!("relocation at {off:#x}: {e}")))?;
            let name = sym
                .name()
                .map_err(|e| bad(format!("symbol name: {e}")))?
                .to_owned();
            let in_maps = sym
                .section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .is_some_and(|s| s.name() == Ok("maps"));
            if !in_maps {
                let kind = sym
                    .section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .map(|s| s.kind());
                return Err(bad(format!(
                    "relocation at {off:#x} refers to {name:?} ({kind:?}), not a map: only maps \
                     may be referenced (inline every function)"
                )));
            }
            let idx = usize::try_from(off / 8).unwrap_or(usize::MAX);
            match insns.get(idx) {
                Some(i) if i.code == LD_IMM64 && idx + 1 < insns.len() => {}
                _ => {
                    return Err(bad(format!(
                        "relocation of {name:?} at {off:#x} is not a 64-bit immediate load"
                    )))
                }
            }
            map_refs.push((idx, name));
        }
        if let Some(s) = file
            .sections()
            .find(|s| s.kind() == SectionKind::Text && s.size() > 0 && s.name() != Ok(section))
        {
            return Err(bad(format!(
                "section {:?} holds code outside {section:?}: functions must be inlined",
                s.name().unwrap_or("?")
            )));
        }
        Ok(BpfObject { insns, map_refs })
    }

    /// Names of the maps the program refers to, sorted, each once.
    pub fn map_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.map_refs.iter().map(|(_, n)| n.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The instructions with every map reference pointing at the map of
    /// that name in `fds`. A name missing from `fds` is an error.
    pub fn link(&self, fds: &HashMap<&str, RawFd>) -> Result<Vec<Insn>, XdpError> {
        let mut out = self.insns.clone();
        for (idx, name) in &self.map_refs {
            let fd = *fds.get(name.as_str()).ok_or_else(|| {
                bad(format!(
                    "the program uses map {name:?}, which was not created"
                ))
            })?;
            if let Some(i) = out.get_mut(*idx) {
                i.src = PSEUDO_MAP_FD;
                i.imm = fd;
            }
            if let Some(hi) = out.get_mut(idx + 1) {
                hi.imm = 0;
            }
        }
        Ok(out)
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Never true for a parsed object.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_program_links_every_map() {
        let o = BpfObject::parse(super::super::XDPVS_OBJECT, "xdp").unwrap();
        assert_eq!(
            o.map_names(),
            [
                "cfg_map",
                "dest_map",
                "flow_map",
                "local_map",
                "real_map",
                "vip_map",
                "xsk_map"
            ]
        );
        let fds: HashMap<&str, RawFd> = o.map_names().into_iter().zip(100..).collect();
        let insns = o.link(&fds).unwrap();
        let patched: Vec<i32> = insns
            .iter()
            .filter(|i| i.code == LD_IMM64 && i.src == PSEUDO_MAP_FD)
            .map(|i| i.imm)
            .collect();
        assert_eq!(patched.len(), o.map_refs.len());
        assert!(patched.iter().all(|fd| (100..107).contains(fd)));
        assert!(insns.iter().any(|i| i.code == 0x95), "no exit");
    }

    #[test]
    fn a_missing_map_is_refused() {
        let o = BpfObject::parse(super::super::XDPVS_OBJECT, "xdp").unwrap();
        let e = o.link(&HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("was not created"), "{e}");
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for bytes in [&b""[..], b"\x7fELF", &[0u8; 64]] {
            assert!(BpfObject::parse(bytes, "xdp").is_err());
        }
        assert!(BpfObject::parse(super::super::XDPVS_OBJECT, "nope").is_err());
    }
}
