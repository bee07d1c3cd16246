//! A tiny eBPF assembler: instructions, registers and labels resolved to
//! jump offsets. Just enough for the XDP program in [`super::prog`].

use thiserror::Error;

/// Instruction classes.
pub mod class {
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;
}

/// Memory access modes (the `mode` bits of load/store opcodes).
pub mod mode {
    pub const IMM: u8 = 0x00;
    pub const MEM: u8 = 0x60;
}

/// Operand source: immediate (`K`) or register (`X`).
pub mod src {
    pub const K: u8 = 0x00;
    pub const X: u8 = 0x08;
}

/// `src` register value of a `BPF_LD_IMM64` that loads a map by fd.
pub const BPF_PSEUDO_MAP_FD: u8 = 1;

/// Helper id of `bpf_map_lookup_elem(map, key)`.
pub const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
/// Helper id of `bpf_redirect_map(map, key, flags)`.
pub const HELPER_REDIRECT_MAP: i32 = 51;

/// The eleven eBPF registers; `R10` is the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// Access size of a load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// 8 bits.
    B,
    /// 16 bits.
    H,
    /// 32 bits.
    W,
    /// 64 bits.
    DW,
}

impl Size {
    const fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// Arithmetic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
    Mov,
    Arsh,
}

impl AluOp {
    const fn bits(self) -> u8 {
        match self {
            AluOp::Add => 0x00,
            AluOp::Sub => 0x10,
            AluOp::Mul => 0x20,
            AluOp::Div => 0x30,
            AluOp::Or => 0x40,
            AluOp::And => 0x50,
            AluOp::Lsh => 0x60,
            AluOp::Rsh => 0x70,
            AluOp::Mod => 0x90,
            AluOp::Xor => 0xa0,
            AluOp::Mov => 0xb0,
            AluOp::Arsh => 0xc0,
        }
    }
}

/// Conditional jump comparisons (`Gt`/`Ge`/`Lt`/`Le` unsigned, `S*` signed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JmpOp {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl JmpOp {
    const fn bits(self) -> u8 {
        match self {
            JmpOp::Eq => 0x10,
            JmpOp::Gt => 0x20,
            JmpOp::Ge => 0x30,
            JmpOp::Set => 0x40,
            JmpOp::Ne => 0x50,
            JmpOp::Sgt => 0x60,
            JmpOp::Sge => 0x70,
            JmpOp::Lt => 0xa0,
            JmpOp::Le => 0xb0,
            JmpOp::Slt => 0xc0,
            JmpOp::Sle => 0xd0,
        }
    }
}

const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;

/// One 8-byte eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The instruction as the kernel reads it (`struct bpf_insn` in host
    /// byte order; the register nibbles follow the bitfield layout).
    pub fn to_bytes(self) -> [u8; 8] {
        #[cfg(target_endian = "little")]
        let regs = (self.dst & 0x0f) | ((self.src & 0x0f) << 4);
        #[cfg(target_endian = "big")]
        let regs = ((self.dst & 0x0f) << 4) | (self.src & 0x0f);
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }

    /// The instruction as one `u64` with the same memory layout as
    /// [`Insn::to_bytes`], ready to hand to `BPF_PROG_LOAD`.
    pub fn to_u64(self) -> u64 {
        u64::from_ne_bytes(self.to_bytes())
    }
}

/// A jump target, created by [`Asm::new_label`] and placed by [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Assembly failures.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AsmError {
    /// A jump refers to a label that was never bound.
    #[error("label {0} is used but never bound")]
    Unbound(usize),
    /// A label was bound twice.
    #[error("label {0} is bound twice")]
    Rebound(usize),
    /// A label id that this assembler did not create.
    #[error("label {0} does not belong to this assembler")]
    Foreign(usize),
    /// The jump distance does not fit the 16-bit offset field.
    #[error("jump from {from} to {to} does not fit in 16 bits")]
    TooFar { from: usize, to: usize },
}

/// Instruction builder with forward and backward labels.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    /// (instruction index, label) of every jump to patch.
    fixups: Vec<(usize, Label)>,
    errors: Vec<AsmError>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of instruction slots emitted so far (`ld_imm64` counts two).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// True when nothing was emitted yet.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// A fresh, unbound label.
    pub fn new_label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Place `label` at the next instruction.
    pub fn bind(&mut self, label: Label) -> &mut Self {
        let at = self.insns.len();
        match self.labels.get_mut(label.0) {
            Some(slot @ None) => *slot = Some(at),
            Some(Some(_)) => self.errors.push(AsmError::Rebound(label.0)),
            None => self.errors.push(AsmError::Foreign(label.0)),
        }
        self
    }

    /// Append a raw instruction.
    pub fn raw(&mut self, insn: Insn) -> &mut Self {
        self.insns.push(insn);
        self
    }

    fn emit(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> &mut Self {
        self.raw(Insn {
            code,
            dst: dst as u8,
            src: src as u8,
            off,
            imm,
        })
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov64_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.alu64_imm(AluOp::Mov, dst, imm)
    }

    /// `dst = src` (64-bit).
    pub fn mov64_reg(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.alu64_reg(AluOp::Mov, dst, src)
    }

    /// `dst op= imm` (64-bit).
    pub fn alu64_imm(&mut self, op: AluOp, dst: Reg, imm: i32) -> &mut Self {
        self.emit(class::ALU64 | src::K | op.bits(), dst, Reg::R0, 0, imm)
    }

    /// `dst op= src` (64-bit).
    pub fn alu64_reg(&mut self, op: AluOp, dst: Reg, src: Reg) -> &mut Self {
        self.emit(class::ALU64 | src::X | op.bits(), dst, src, 0, 0)
    }

    /// `dst op= imm` (32-bit, upper half zeroed).
    pub fn alu32_imm(&mut self, op: AluOp, dst: Reg, imm: i32) -> &mut Self {
        self.emit(class::ALU | src::K | op.bits(), dst, Reg::R0, 0, imm)
    }

    /// `dst op= src` (32-bit, upper half zeroed).
    pub fn alu32_reg(&mut self, op: AluOp, dst: Reg, src: Reg) -> &mut Self {
        self.emit(class::ALU | src::X | op.bits(), dst, src, 0, 0)
    }

    /// `dst = *(size *)(src + off)`, zero-extended.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.emit(class::LDX | mode::MEM | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.emit(class::STX | mode::MEM | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.emit(class::ST | mode::MEM | size.bits(), dst, Reg::R0, off, imm)
    }

    /// `dst = map` by file descriptor: the two-slot `BPF_LD_IMM64` with
    /// `src = BPF_PSEUDO_MAP_FD`.
    pub fn ld_map_fd(&mut self, dst: Reg, map_fd: i32) -> &mut Self {
        self.raw(Insn {
            code: class::LD | mode::IMM | Size::DW.bits(),
            dst: dst as u8,
            src: BPF_PSEUDO_MAP_FD,
            off: 0,
            imm: map_fd,
        });
        self.raw(Insn::default())
    }

    /// `dst = imm64`: the two-slot `BPF_LD_IMM64`.
    pub fn ld_imm64(&mut self, dst: Reg, imm: u64) -> &mut Self {
        // Truncations are the encoding: low half, then high half.
        self.raw(Insn {
            code: class::LD | mode::IMM | Size::DW.bits(),
            dst: dst as u8,
            src: 0,
            off: 0,
            imm: imm as u32 as i32,
        });
        self.raw(Insn {
            imm: (imm >> 32) as u32 as i32,
            ..Insn::default()
        })
    }

    fn jump(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, target: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), target));
        self.emit(code, dst, src, 0, imm)
    }

    /// `if dst op imm goto target` (64-bit compare).
    pub fn jmp_imm(&mut self, op: JmpOp, dst: Reg, imm: i32, target: Label) -> &mut Self {
        self.jump(class::JMP | src::K | op.bits(), dst, Reg::R0, imm, target)
    }

    /// `if dst op src goto target` (64-bit compare).
    pub fn jmp_reg(&mut self, op: JmpOp, dst: Reg, src: Reg, target: Label) -> &mut Self {
        self.jump(class::JMP | src::X | op.bits(), dst, src, 0, target)
    }

    /// `goto target`.
    pub fn ja(&mut self, target: Label) -> &mut Self {
        self.jump(class::JMP | OP_JA, Reg::R0, Reg::R0, 0, target)
    }

    /// Call helper `id`; arguments in R1..R5, result in R0, R1..R5 clobbered.
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.emit(class::JMP | OP_CALL, Reg::R0, Reg::R0, 0, helper)
    }

    /// Return R0.
    pub fn exit(&mut self) -> &mut Self {
        self.emit(class::JMP | OP_EXIT, Reg::R0, Reg::R0, 0, 0)
    }

    /// Resolve labels and return the instructions.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        if let Some(err) = self.errors.into_iter().next() {
            return Err(err);
        }
        for &(at, label) in &self.fixups {
            let to = match self.labels.get(label.0) {
                Some(Some(to)) => *to,
                Some(None) => return Err(AsmError::Unbound(label.0)),
                None => return Err(AsmError::Foreign(label.0)),
            };
            let delta = to as i64 - (at as i64 + 1);
            let off = i16::try_from(delta).map_err(|_| AsmError::TooFar { from: at, to })?;
            if let Some(insn) = self.insns.get_mut(at) {
                insn.off = off;
            }
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(f: impl FnOnce(&mut Asm)) -> Vec<[u8; 8]> {
        let mut a = Asm::new();
        f(&mut a);
        a.finish()
            .unwrap()
            .into_iter()
            .map(Insn::to_bytes)
            .collect()
    }

    #[test]
    fn encodes_known_instructions() {
        // Reference encodings as printed by `llvm-objdump -d` for BPF.
        assert_eq!(
            one(|a| {
                a.mov64_imm(Reg::R0, 2);
            }),
            [[0xb7, 0x00, 0, 0, 2, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.mov64_reg(Reg::R6, Reg::R1);
            }),
            [[0xbf, 0x16, 0, 0, 0, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.exit();
            }),
            [[0x95, 0, 0, 0, 0, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.ldx(Size::W, Reg::R2, Reg::R1, 4);
            }),
            [[0x61, 0x12, 4, 0, 0, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.ldx(Size::H, Reg::R5, Reg::R2, 12);
            }),
            [[0x69, 0x25, 12, 0, 0, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.ldx(Size::B, Reg::R0, Reg::R7, 9);
            }),
            [[0x71, 0x70, 9, 0, 0, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.ldx(Size::DW, Reg::R1, Reg::R7, 24);
            }),
            [[0x79, 0x71, 24, 0, 0, 0, 0, 0]]
        );
        // *(u16 *)(r10 - 6) = r1
        assert_eq!(
            one(|a| {
                a.stx(Size::H, Reg::R10, -6, Reg::R1);
            }),
            [[0x6b, 0x1a, 0xfa, 0xff, 0, 0, 0, 0]]
        );
        // *(u64 *)(r10 - 24) = r0
        assert_eq!(
            one(|a| {
                a.stx(Size::DW, Reg::R10, -24, Reg::R0);
            }),
            [[0x7b, 0x0a, 0xe8, 0xff, 0, 0, 0, 0]]
        );
        // *(u32 *)(r10 - 8) = 0
        assert_eq!(
            one(|a| {
                a.st_imm(Size::W, Reg::R10, -8, 0);
            }),
            [[0x62, 0x0a, 0xf8, 0xff, 0, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.alu64_imm(AluOp::And, Reg::R0, 0x0f);
            }),
            [[0x57, 0, 0, 0, 0x0f, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.alu64_imm(AluOp::Lsh, Reg::R0, 2);
            }),
            [[0x67, 0, 0, 0, 2, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.alu64_imm(AluOp::Rsh, Reg::R1, 16);
            }),
            [[0x77, 0x01, 0, 0, 16, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.alu64_imm(AluOp::Add, Reg::R2, -24);
            }),
            [[0x07, 0x02, 0, 0, 0xe8, 0xff, 0xff, 0xff]]
        );
        assert_eq!(
            one(|a| {
                a.alu64_reg(AluOp::Add, Reg::R7, Reg::R0);
            }),
            [[0x0f, 0x07, 0, 0, 0, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.alu32_imm(AluOp::Mov, Reg::R3, 7);
            }),
            [[0xb4, 0x03, 0, 0, 7, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.alu32_reg(AluOp::Xor, Reg::R3, Reg::R4);
            }),
            [[0xac, 0x43, 0, 0, 0, 0, 0, 0]]
        );
        assert_eq!(
            one(|a| {
                a.call(51);
            }),
            [[0x85, 0, 0, 0, 51, 0, 0, 0]]
        );
    }

    #[test]
    fn ld_map_fd_is_two_slots_with_pseudo_src() {
        let got = one(|a| {
            a.ld_map_fd(Reg::R1, 5);
        });
        assert_eq!(got, [[0x18, 0x11, 0, 0, 5, 0, 0, 0], [0; 8]]);
        let got = one(|a| {
            a.ld_imm64(Reg::R2, 0x1122_3344_5566_7788);
        });
        assert_eq!(
            got,
            [
                [0x18, 0x02, 0, 0, 0x88, 0x77, 0x66, 0x55],
                [0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]
            ]
        );
    }

    #[test]
    fn jumps_resolve_forward_and_backward() {
        let mut a = Asm::new();
        let back = a.new_label();
        let fwd = a.new_label();
        a.bind(back); // 0
        a.mov64_imm(Reg::R0, 1); // 0
        a.jmp_imm(JmpOp::Eq, Reg::R0, 0, fwd); // 1 -> 5: off 3
        a.ld_map_fd(Reg::R1, 3); // 2,3
        a.jmp_reg(JmpOp::Gt, Reg::R4, Reg::R3, back); // 4 -> 0: off -5
        a.bind(fwd);
        a.ja(back); // 5 -> 0: off -6
        a.exit();
        let insns = a.finish().unwrap();
        assert_eq!(insns.len(), 7);
        assert_eq!(insns[1].code, 0x15);
        assert_eq!(insns[1].off, 3);
        assert_eq!(insns[4].to_bytes(), [0x2d, 0x34, 0xfb, 0xff, 0, 0, 0, 0]);
        assert_eq!(insns[5].to_bytes(), [0x05, 0, 0xfa, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn jump_ops_encode() {
        let cases = [
            (JmpOp::Eq, 0x15),
            (JmpOp::Gt, 0x25),
            (JmpOp::Ge, 0x35),
            (JmpOp::Set, 0x45),
            (JmpOp::Ne, 0x55),
            (JmpOp::Sgt, 0x65),
            (JmpOp::Sge, 0x75),
            (JmpOp::Lt, 0xa5),
            (JmpOp::Le, 0xb5),
            (JmpOp::Slt, 0xc5),
            (JmpOp::Sle, 0xd5),
        ];
        for (op, code) in cases {
            let mut a = Asm::new();
            let l = a.new_label();
            a.jmp_imm(op, Reg::R1, 9, l);
            a.bind(l);
            let insns = a.finish().unwrap();
            assert_eq!(insns[0].code, code, "{op:?}");
            assert_eq!(insns[0].off, 0);
        }
    }

    #[test]
    fn unbound_label_is_an_error() {
        let mut a = Asm::new();
        let l = a.new_label();
        a.ja(l);
        assert_eq!(a.finish(), Err(AsmError::Unbound(0)));
    }

    #[test]
    fn rebound_and_foreign_labels_are_errors() {
        let mut a = Asm::new();
        let l = a.new_label();
        a.bind(l).exit().bind(l);
        assert_eq!(a.finish(), Err(AsmError::Rebound(0)));

        let mut other = Asm::new();
        let _ = other.new_label();
        let foreign = other.new_label();
        let mut a = Asm::new();
        a.ja(foreign);
        assert_eq!(a.finish(), Err(AsmError::Foreign(1)));
    }

    #[test]
    fn too_far_jump_is_an_error() {
        let mut a = Asm::new();
        let l = a.new_label();
        a.ja(l);
        for _ in 0..40_000 {
            a.mov64_imm(Reg::R0, 0);
        }
        a.bind(l).exit();
        assert!(matches!(a.finish(), Err(AsmError::TooFar { from: 0, .. })));
    }
}
