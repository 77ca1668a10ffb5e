//! Kernel function (kfunc) calls, made loadable by aya 0.14.
//!
//! aya 0.14 cannot resolve `.ksyms` kfunc externs, so tracer-ebpf emits, where it wants a kfunc,
//! an ordinary helper call whose immediate is a marker id ([`tracer_common::kfunc`]). Before aya
//! parses the object, [`patch`] rewrites each such call: into a kfunc call to the function's BTF
//! id in the running kernel (the family that calls it resolves the id from the running kernel's
//! BTF, never a `--btf` file's: `KernelBtf::is_running_kernels`) when the kernel has the function, otherwise into
//! `r0 = 0`. The program only reaches a kfunc call when configured to use it, so on a kernel
//! without the function the replacement is dead code the verifier prunes; it only has to be a
//! valid instruction.
//!
//! The ELF is read here, by hand and with every read bounds-checked, rather than with a parser
//! crate: all this needs is the section table, and the bytes must be rewritten in place.

use tracer_common::kfunc::KFUNC_MARK_CAST_TO_KERN_CTX;

/// Every marker the programs may call, with the kfunc it stands for (for lookups and logs).
pub(crate) const MARKERS: &[(u32, &str)] = &[(KFUNC_MARK_CAST_TO_KERN_CTX, "bpf_cast_to_kern_ctx")];

/// One BPF instruction's size: instructions start at multiples of it within a code section.
const INSN: usize = 8;
/// `BPF_JMP | BPF_CALL` (with `BPF_K`): a helper, bpf-to-bpf or kfunc call, by `src_reg`.
const CALL: u8 = 0x85;
/// `src_reg` of a call to a kernel function named by its BTF id (`BPF_PSEUDO_KFUNC_CALL`).
const PSEUDO_KFUNC_CALL: u8 = 2;
/// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
const MOV64_IMM: u8 = 0xb7;

/// ELF64 header size; the section header table offset, entry size and count lie inside it.
const EHDR_SIZE: usize = 64;
/// ELF64 section header size: entries may be larger (`e_shentsize`), never smaller.
const SHDR_SIZE: usize = 64;
/// `sh_type` of a section whose bytes are in the file (code, data).
const SHT_PROGBITS: u32 = 1;
/// `sh_flags` bit of a section holding instructions.
const SHF_EXECINSTR: u64 = 0x4;

/// What is wrong with an object that cannot be patched.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// No ELF magic, another class or byte order, or shorter than an ELF64 header.
    #[error("not a 64-bit little-endian ELF object")]
    NotElf64Le,
    /// `e_shentsize` too small to hold the fields read.
    #[error("ELF section headers are {entry_size} bytes each, fewer than the {SHDR_SIZE} of ELF64")]
    SectionEntrySize { entry_size: u16 },
    /// `e_shoff` and `e_shnum` (or its extension) reach past the end of the object.
    #[error("ELF section header table ({count} headers at offset {offset}) lies outside the {len}-byte object")]
    SectionTable { offset: u64, count: u64, len: usize },
    /// An executable section's bytes reach past the end of the object.
    #[error("ELF code section {index} ({size} bytes at offset {offset}) lies outside the {len}-byte object")]
    Section { index: u64, offset: u64, size: u64, len: usize },
}

/// An object's bytes, 8-byte aligned: aya's ELF parser reads the headers in place and wants
/// aligned input, which a plain `Vec<u8>` does not promise.
pub(crate) struct Object {
    /// The bytes, in words for their alignment.
    words: Vec<u64>,
    /// The object's length in bytes; the last word may be partly padding.
    len: usize,
}

impl Object {
    /// A copy of `bytes`, aligned.
    fn copy_of(bytes: &[u8]) -> Self {
        let mut object = Self { words: vec![0; bytes.len().div_ceil(8)], len: bytes.len() };
        object.bytes_mut().copy_from_slice(bytes);
        object
    }

    /// The object's bytes, as long as the original.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the words are initialised, u64 has no padding and u8 no alignment, and `len`
        // is at most the words' size in bytes (`copy_of` made it so).
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    /// The object's bytes, to rewrite in place.
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; any byte pattern is a valid u64, so writes cannot break them.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

impl std::fmt::Debug for Object {
    /// The length only: the bytes of a whole object say nothing in a test failure or a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object").field("len", &self.len).finish_non_exhaustive()
    }
}

/// Copies `object` (an ELF64 little-endian BPF object) and rewrites, for each `(marker, id)` of
/// `calls`, every marker call in its code: into a call of kernel function `id`, or into `r0 = 0`
/// when `id` is None. Only instructions of executable sections are candidates, at instruction
/// boundaries: data may hold the same eight bytes. Returns the copy and how many calls were
/// rewritten per entry of `calls` (a marker listed twice is rewritten by its first entry).
pub(crate) fn patch(object: &[u8], calls: &[(u32, Option<u32>)]) -> Result<(Object, Vec<usize>), Error> {
    let code = code_sections(object)?;
    let mut patched = Object::copy_of(object);
    let mut counts = vec![0; calls.len()];
    let bytes = patched.bytes_mut();
    for range in code {
        for insn in bytes[range].chunks_exact_mut(INSN) {
            // A helper call: dst_reg, src_reg and off all 0; the helper id in imm.
            if insn[..4] != [CALL, 0, 0, 0] {
                continue;
            }
            let imm = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            let Some(entry) = calls.iter().position(|(marker, _)| *marker == imm) else { continue };
            counts[entry] += 1;
            let replacement = match calls[entry].1 {
                Some(id) => {
                    let id = id.to_le_bytes();
                    [CALL, PSEUDO_KFUNC_CALL << 4, 0, 0, id[0], id[1], id[2], id[3]]
                }
                None => [MOV64_IMM, 0, 0, 0, 0, 0, 0, 0],
            };
            insn.copy_from_slice(&replacement);
        }
    }
    Ok((patched, counts))
}

/// The byte ranges of `object`'s executable sections (SHT_PROGBITS with SHF_EXECINSTR).
fn code_sections(object: &[u8]) -> Result<Vec<std::ops::Range<usize>>, Error> {
    // e_ident: the magic, EI_CLASS = ELFCLASS64 (2), EI_DATA = ELFDATA2LSB (1).
    if object.len() < EHDR_SIZE || object[..6] != [0x7f, b'E', b'L', b'F', 2, 1] {
        return Err(Error::NotElf64Le);
    }
    let offset = u64_at(object, 0x28).ok_or(Error::NotElf64Le)?;
    let entry_size = u16_at(object, 0x3a).ok_or(Error::NotElf64Le)?;
    let mut count = u64::from(u16_at(object, 0x3c).ok_or(Error::NotElf64Le)?);
    if offset == 0 {
        // No section table: nothing is code.
        return Ok(Vec::new());
    }
    if usize::from(entry_size) < SHDR_SIZE {
        return Err(Error::SectionEntrySize { entry_size });
    }
    let table_error = |count| Error::SectionTable { offset, count, len: object.len() };
    let header = |index: u64| -> Option<&[u8]> {
        let start = usize::try_from(index.checked_mul(u64::from(entry_size))?.checked_add(offset)?).ok()?;
        object.get(start..start.checked_add(SHDR_SIZE)?)
    };
    if count == 0 {
        // More than 0xff00 sections: e_shnum is 0 and section 0's sh_size holds the count.
        count = u64_at(header(0).ok_or_else(|| table_error(1))?, 0x20).unwrap_or(0);
    }
    let mut code = Vec::new();
    for index in 0..count {
        let shdr = header(index).ok_or_else(|| table_error(count))?;
        let (sh_type, flags) = (u32_at(shdr, 4).unwrap_or(0), u64_at(shdr, 8).unwrap_or(0));
        if sh_type != SHT_PROGBITS || flags & SHF_EXECINSTR == 0 {
            continue;
        }
        let (start, size) = (u64_at(shdr, 0x18).unwrap_or(0), u64_at(shdr, 0x20).unwrap_or(0));
        let range = start.checked_add(size).and_then(|end| Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?));
        match range {
            Some(range) if range.end <= object.len() => code.push(range),
            _ => return Err(Error::Section { index, offset: start, size, len: object.len() }),
        }
    }
    Ok(code)
}

/// The little-endian u16 at `at`, if the bytes are there.
fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// The little-endian u32 at `at`, if the bytes are there.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The little-endian u64 at `at`, if the bytes are there.
fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The name of the kfunc `marker` stands for, for logs ("marker 0x..." for one not in [`MARKERS`]).
pub(crate) fn name_of(marker: u32) -> String {
    MARKERS.iter().find(|(m, _)| *m == marker).map_or_else(|| format!("marker {marker:#x}"), |(_, name)| (*name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: u32 = KFUNC_MARK_CAST_TO_KERN_CTX;
    /// The marker call as tracer-ebpf emits it.
    const MARK_CALL: [u8; 8] = [0x85, 0, 0, 0, 0xfe, 0xca, 0xfe, 0x7f];
    /// An ordinary helper call: bpf_ktime_get_ns (5).
    const HELPER_CALL: [u8; 8] = [0x85, 0, 0, 0, 5, 0, 0, 0];
    /// `exit`.
    const EXIT: [u8; 8] = [0x95, 0, 0, 0, 0, 0, 0, 0];
    /// `r0 = 0`, what a marker becomes without an id.
    const R0_ZERO: [u8; 8] = [0xb7, 0, 0, 0, 0, 0, 0, 0];

    /// Where the synthetic object's code section starts, right after the ELF header.
    const TEXT: usize = EHDR_SIZE;
    /// Six instructions.
    const TEXT_LEN: usize = 48;
    /// The data section, right after the code.
    const DATA: usize = TEXT + TEXT_LEN;
    /// Not a multiple of 8: data need not be.
    const DATA_LEN: usize = 20;
    /// The section header table (null, code, data), after the data.
    const SHOFF: usize = 136;

    /// A little ELF64 object: section 1 is code, section 2 data holding the marker's bytes.
    fn object() -> Vec<u8> {
        let mut elf = vec![0u8; SHOFF + 3 * SHDR_SIZE];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        elf[0x28..0x30].copy_from_slice(&(SHOFF as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        // Code: marker, helper call, marker, then two instructions whose middle 8 bytes are the
        // marker's (4 bytes off an instruction boundary, so not a call), then exit.
        let text: Vec<u8> =
            [&MARK_CALL[..], &HELPER_CALL, &MARK_CALL, &[0x18, 1, 0, 0][..], &MARK_CALL[..4], &MARK_CALL[4..], &[0; 4], &EXIT].concat();
        assert_eq!(text.len(), TEXT_LEN);
        elf[TEXT..DATA].copy_from_slice(&text);
        // Data: the marker's bytes at an aligned offset, among others.
        elf[DATA + 8..DATA + 16].copy_from_slice(&MARK_CALL);
        let mut section = |index: usize, sh_type: u32, flags: u64, offset: usize, size: usize| {
            let h = SHOFF + index * SHDR_SIZE;
            elf[h + 4..h + 8].copy_from_slice(&sh_type.to_le_bytes());
            elf[h + 8..h + 16].copy_from_slice(&flags.to_le_bytes());
            elf[h + 0x18..h + 0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            elf[h + 0x20..h + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
        };
        // SHF_ALLOC | SHF_EXECINSTR, and SHF_ALLOC | SHF_WRITE.
        section(1, SHT_PROGBITS, 0x6, TEXT, TEXT_LEN);
        section(2, SHT_PROGBITS, 0x3, DATA, DATA_LEN);
        elf
    }

    /// The instruction at byte `at` of `object`.
    fn insn(object: &Object, at: usize) -> [u8; 8] {
        object.bytes()[at..at + 8].try_into().unwrap()
    }

    #[test]
    fn markers_in_code_become_kfunc_calls_to_the_id() {
        let (patched, counts) = patch(&object(), &[(MARK, Some(0x0001_2345))]).unwrap();
        assert_eq!(counts, [2]);
        let kfunc_call = [0x85, 0x20, 0, 0, 0x45, 0x23, 0x01, 0];
        assert_eq!(insn(&patched, TEXT), kfunc_call);
        assert_eq!(insn(&patched, TEXT + 16), kfunc_call);
    }

    #[test]
    fn without_an_id_a_marker_becomes_r0_eq_0() {
        let (patched, counts) = patch(&object(), &[(MARK, None)]).unwrap();
        assert_eq!(counts, [2]);
        assert_eq!(insn(&patched, TEXT), R0_ZERO);
        assert_eq!(insn(&patched, TEXT + 16), R0_ZERO);
    }

    #[test]
    fn a_marker_outside_code_is_left_alone() {
        let original = object();
        let (patched, _) = patch(&original, &[(MARK, Some(7))]).unwrap();
        assert_eq!(patched.bytes()[DATA..DATA + DATA_LEN], original[DATA..DATA + DATA_LEN]);
        assert_eq!(insn(&patched, DATA + 8), MARK_CALL);
    }

    #[test]
    fn marker_bytes_off_an_instruction_boundary_are_left_alone() {
        let original = object();
        let (patched, _) = patch(&original, &[(MARK, Some(7))]).unwrap();
        assert_eq!(patched.bytes()[TEXT + 24..TEXT + 48], original[TEXT + 24..TEXT + 48]);
    }

    #[test]
    fn other_calls_and_bytes_are_left_alone() {
        let original = object();
        let (patched, _) = patch(&original, &[(MARK, Some(7))]).unwrap();
        assert_eq!(insn(&patched, TEXT + 8), HELPER_CALL);
        let changed: Vec<usize> = (0..original.len()).filter(|i| patched.bytes()[*i] != original[*i]).collect();
        // Byte 1 (src_reg) and the imm of the two marker calls, nothing else.
        let expected: Vec<usize> = [TEXT, TEXT + 16].iter().flat_map(|at| [at + 1, at + 4, at + 5, at + 6, at + 7]).collect();
        assert_eq!(changed, expected);
    }

    #[test]
    fn counts_are_per_entry_of_calls() {
        let (patched, counts) = patch(&object(), &[(0x7fff_0000, Some(1)), (MARK, None), (MARK, Some(9))]).unwrap();
        assert_eq!(counts, [0, 2, 0], "a marker listed twice is rewritten by its first entry");
        assert_eq!(insn(&patched, TEXT), R0_ZERO);
        let (_, counts) = patch(&object(), &[]).unwrap();
        assert!(counts.is_empty());
    }

    #[test]
    fn the_copy_is_aligned_and_as_long_as_the_original() {
        let mut original = object();
        original.extend_from_slice(&[1, 2, 3]);
        let (patched, _) = patch(&original, &[]).unwrap();
        assert_eq!(patched.bytes(), original.as_slice());
        assert!(patched.bytes().as_ptr().cast::<u64>().is_aligned());
    }

    #[test]
    fn a_truncated_object_is_an_error_not_a_panic() {
        let original = object();
        for len in 0..original.len() {
            assert!(patch(&original[..len], &[(MARK, None)]).is_err(), "truncated to {len} bytes");
        }
    }

    #[test]
    fn a_32_bit_or_big_endian_object_is_an_error() {
        for (at, value) in [(4, 1), (5, 2), (0, 0)] {
            let mut elf = object();
            elf[at] = value;
            assert_eq!(patch(&elf, &[]).unwrap_err(), Error::NotElf64Le);
        }
    }

    #[test]
    fn a_code_section_past_the_end_is_an_error() {
        let mut elf = object();
        let size = SHOFF + SHDR_SIZE + 0x20;
        elf[size..size + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(patch(&elf, &[]).unwrap_err(), Error::Section { index: 1, .. }));
    }

    #[test]
    fn a_section_table_past_the_end_or_too_narrow_is_an_error() {
        let mut elf = object();
        elf[0x3c..0x3e].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert!(matches!(patch(&elf, &[]).unwrap_err(), Error::SectionTable { .. }));
        let mut elf = object();
        elf[0x28..0x30].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert!(matches!(patch(&elf, &[]).unwrap_err(), Error::SectionTable { .. }));
        let mut elf = object();
        elf[0x3a..0x3c].copy_from_slice(&8u16.to_le_bytes());
        assert_eq!(patch(&elf, &[]).unwrap_err(), Error::SectionEntrySize { entry_size: 8 });
    }

    #[test]
    fn the_embedded_object_parses() {
        let (patched, counts) = patch(crate::loader::OBJECT, &[]).unwrap();
        assert!(counts.is_empty());
        assert_eq!(patched.bytes(), crate::loader::OBJECT);
        assert!(!code_sections(crate::loader::OBJECT).unwrap().is_empty(), "the object has code");
    }

    /// The egress classifiers (for any device and for Ethernet ones) carry the NAT check's kfunc
    /// call, and no marker call is left in the object after the rewrite, whatever the kernel has.
    #[test]
    fn the_egress_classifiers_call_the_kfunc_and_none_is_left_after_the_rewrite() {
        let calls: Vec<(u32, Option<u32>)> = MARKERS.iter().map(|(m, _)| (*m, None)).collect();
        let (patched, counts) = patch(crate::loader::OBJECT, &calls).unwrap();
        assert!(counts[0] >= 2, "mtu_tc_egress and mtu_eth_egress each call bpf_cast_to_kern_ctx: {counts:?}");
        let (_, again) = patch(patched.bytes(), &calls).unwrap();
        assert_eq!(again, vec![0; calls.len()], "every marker call was rewritten");
    }

    #[test]
    fn every_marker_has_a_name() {
        assert_eq!(name_of(MARK), "bpf_cast_to_kern_ctx");
        assert_eq!(name_of(0x1234), "marker 0x1234");
    }
}
