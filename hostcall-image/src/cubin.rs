//! Reading a cubin (the ELF files `ptxas` writes): whether it is linked or
//! relocatable (`ptxas -c`), the architecture it was built for, and the
//! symbols the runtime needs, read from the symbol table, so a cubin loads
//! without the PTX it came from.

use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, Sym};
use object::LittleEndian as LE;

/// A copy of some bytes on an 8-byte boundary: ELF readers, the CUDA
/// driver's among them, read headers in place.
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    pub fn copy_of(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        object::pod::bytes_of_slice_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes { words, len: bytes.len() }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &object::pod::bytes_of_slice(&self.words)[..self.len]
    }
}

/// How the driver takes a cubin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CubinKind {
    /// Linked (`ptxas` without `-c`): `cuModuleLoadData` takes it as it is.
    Executable,
    /// Separately compiled (`ptxas -c`): goes through `cuLinkAddData`
    /// (`CU_JIT_INPUT_CUBIN`) and `cuLinkComplete` first.
    Relocatable,
}

/// What a cubin says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cubin {
    pub kind: CubinKind,
    /// The SM version it holds machine code for (`90` for `sm_90`), when the
    /// header's encoding is one this reader knows.
    pub sm: Option<u32>,
    /// Kernels (functions marked as entry points).
    pub entries: Vec<String>,
    /// Global variables it defines.
    pub globals: Vec<String>,
}

/// A cubin this reader cannot make sense of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CubinError(pub String);

impl std::fmt::Display for CubinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a usable cubin: {}", self.0)
    }
}

impl std::error::Error for CubinError {}

/// `e_ident[EI_OSABI]` of CUDA ELF files.
const ELFOSABI_CUDA: u8 = 51;
/// ... and of those from CUDA 13's ptxas (seen from 13.0: OS/ABI 0x41, ABI
/// version 8, the SM where version 8 keeps it).
const ELFOSABI_CUDA_13: u8 = 65;
/// Symbol type of CUDA global variables (`STT_LOPROC`); hosts' ELF says
/// `STT_OBJECT`, and both are taken.
const STT_CUDA_OBJECT: u8 = 13;
/// `st_other` bit of a kernel entry point.
const STO_CUDA_ENTRY: u8 = 0x10;

fn err(what: impl std::fmt::Display) -> CubinError {
    CubinError(what.to_string())
}

impl Cubin {
    /// Read `bytes` as a 64-bit little-endian CUDA ELF file, at any
    /// alignment (an `include_bytes!` image has none).
    pub fn parse(bytes: &[u8]) -> Result<Cubin, CubinError> {
        if bytes.as_ptr().align_offset(8) == 0 {
            return Self::parse_aligned(bytes);
        }
        // The ELF reader reads headers in place, 8-byte aligned.
        Self::parse_aligned(AlignedBytes::copy_of(bytes).as_bytes())
    }

    fn parse_aligned(bytes: &[u8]) -> Result<Cubin, CubinError> {
        let header = FileHeader64::<LE>::parse(bytes).map_err(err)?;
        let ident = header.e_ident();
        if ![ELFOSABI_CUDA, ELFOSABI_CUDA_13].contains(&ident.os_abi) {
            return Err(err(format!(
                "ELF OS/ABI {} is not CUDA's ({ELFOSABI_CUDA}, or {ELFOSABI_CUDA_13} from CUDA 13)",
                ident.os_abi
            )));
        }
        let kind = match header.e_type(LE) {
            elf::ET_EXEC => CubinKind::Executable,
            elf::ET_REL => CubinKind::Relocatable,
            other => return Err(err(format!("ELF type {other} is neither linked nor relocatable"))),
        };
        let flags = header.e_flags(LE);
        // The SM field moved with CUDA ELF ABI version 8 (CUDA 12.8).
        let sm = match ident.abi_version {
            ..=7 => Some(flags & 0xff),
            8 => Some((flags >> 8) & 0xff),
            _ => None,
        }
        .filter(|&sm| sm > 0);
        let sections = header.sections(LE, bytes).map_err(err)?;
        let symbols = sections.symbols(LE, bytes, elf::SHT_SYMTAB).map_err(err)?;
        let (mut entries, mut globals) = (Vec::new(), Vec::new());
        for symbol in symbols.iter() {
            if symbol.st_shndx(LE) == elf::SHN_UNDEF {
                continue;
            }
            let Ok(name) = symbols.symbol_name(LE, symbol) else { continue };
            let name = String::from_utf8_lossy(name).into_owned();
            match symbol.st_type() {
                elf::STT_FUNC if symbol.st_other() & STO_CUDA_ENTRY != 0 => entries.push(name),
                elf::STT_OBJECT | STT_CUDA_OBJECT => globals.push(name),
                _ => {}
            }
        }
        Ok(Cubin { kind, sm, entries, globals })
    }

    /// `sm_90` style name of [`Cubin::sm`].
    pub fn arch(&self) -> Option<String> {
        self.sm.map(|sm| format!("sm_{sm}"))
    }
}

/// Minimal CUDA ELF files, for tests on machines without a ptxas.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// A cubin for `sm_<sm>` (ABI version 7, as ptxas 12 writes) with these
    /// entry points and globals.
    pub fn cubin(kind: CubinKind, sm: u32, entries: &[&str], globals: &[&str]) -> Vec<u8> {
        let e_type = match kind {
            CubinKind::Executable => elf::ET_EXEC,
            CubinKind::Relocatable => elf::ET_REL,
        };
        let symbols: Vec<(&str, u8, u8, bool)> = entries
            .iter()
            .map(|e| (*e, elf::STT_FUNC, STO_CUDA_ENTRY, true))
            .chain(globals.iter().map(|g| (*g, STT_CUDA_OBJECT, 0, true)))
            .collect();
        self::elf(e_type, 7, (sm << 16) | 0x0500 | sm, &symbols)
    }

    /// A 64-bit CUDA ELF file of type `e_type`, with a `.symtab` of the
    /// given symbols (name, `st_type`, `st_other`, defined), laid out as
    /// ptxas lays one out.
    pub fn elf(e_type: u16, abi_version: u8, flags: u32, symbols: &[(&str, u8, u8, bool)]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for (name, st_type, other, defined) in symbols {
            let name_at = strtab.len() as u32;
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
            symtab.extend_from_slice(&name_at.to_le_bytes());
            symtab.push((1 << 4) | st_type); // STB_GLOBAL
            symtab.push(*other);
            symtab.extend_from_slice(&(if *defined { 3u16 } else { 0 }).to_le_bytes());
            symtab.extend_from_slice(&[0; 16]);
        }
        let shstrtab = b"\0.symtab\0.strtab\0.shstrtab\0.text\0".to_vec();
        let mut out = vec![0u8; 64];
        let symtab_at = out.len();
        out.extend_from_slice(&symtab);
        let strtab_at = out.len();
        out.extend_from_slice(&strtab);
        let shstrtab_at = out.len();
        out.extend_from_slice(&shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let sections_at = out.len();
        let section = |name: u32, kind: u32, at: usize, size: usize, link: u32, entsize: u64| {
            let mut s = Vec::new();
            s.extend_from_slice(&name.to_le_bytes());
            s.extend_from_slice(&kind.to_le_bytes());
            s.extend_from_slice(&0u64.to_le_bytes());
            s.extend_from_slice(&0u64.to_le_bytes());
            s.extend_from_slice(&(at as u64).to_le_bytes());
            s.extend_from_slice(&(size as u64).to_le_bytes());
            s.extend_from_slice(&link.to_le_bytes());
            s.extend_from_slice(&1u32.to_le_bytes());
            s.extend_from_slice(&8u64.to_le_bytes());
            s.extend_from_slice(&entsize.to_le_bytes());
            s
        };
        out.extend(vec![0u8; 64]);
        out.extend(section(1, elf::SHT_SYMTAB, symtab_at, symtab.len(), 2, 24));
        out.extend(section(9, elf::SHT_STRTAB, strtab_at, strtab.len(), 0, 0));
        out.extend(section(17, elf::SHT_STRTAB, shstrtab_at, shstrtab.len(), 0, 0));
        out.extend(section(27, elf::SHT_PROGBITS, 0, 0, 0, 0));
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // 64-bit
        out[5] = 1; // little-endian
        out[6] = 1;
        out[7] = ELFOSABI_CUDA;
        out[8] = abi_version;
        out[16..18].copy_from_slice(&e_type.to_le_bytes());
        out[18..20].copy_from_slice(&190u16.to_le_bytes()); // EM_CUDA
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[40..48].copy_from_slice(&(sections_at as u64).to_le_bytes());
        out[48..52].copy_from_slice(&flags.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&5u16.to_le_bytes());
        out[62..64].copy_from_slice(&3u16.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::elf;
    use super::*;

    #[test]
    fn a_relocatable_sm90_cubin_lists_its_entries_and_globals() {
        // ptxas 12.9 `-c -arch=sm_90` writes ABI version 7 and e_flags 0x5a055a.
        let bytes = elf(
            elf::ET_REL,
            7,
            0x5a055a,
            &[
                ("kernel_main", elf::STT_FUNC, STO_CUDA_ENTRY, true),
                ("helper", elf::STT_FUNC, 0, true),
                ("__HOSTCALL_BUFF_PTR__", STT_CUDA_OBJECT, 0, true),
                ("FAILURES", elf::STT_OBJECT, 0, true),
                ("__UDT_OFFSET", elf::STT_OBJECT, 0, false),
            ],
        );
        let cubin = Cubin::parse(&bytes).expect("parses");
        assert_eq!(cubin.kind, CubinKind::Relocatable);
        assert_eq!(cubin.arch().as_deref(), Some("sm_90"));
        assert_eq!(cubin.entries, ["kernel_main"]);
        assert_eq!(cubin.globals, ["__HOSTCALL_BUFF_PTR__", "FAILURES"]);
    }

    #[test]
    fn a_cubin_at_an_odd_address_reads_the_same() {
        let bytes = elf(elf::ET_EXEC, 7, 0x5a055a, &[("k", elf::STT_FUNC, STO_CUDA_ENTRY, true)]);
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(Cubin::parse(&shifted[1..]), Cubin::parse(&bytes));
        assert_eq!(Cubin::parse(&shifted[1..]).expect("parses").entries, ["k"]);
    }

    #[test]
    fn the_test_cubins_read_back() {
        let bytes = super::testing::cubin(CubinKind::Executable, 80, &["main"], &["__HOSTCALL__write"]);
        let cubin = Cubin::parse(&bytes).expect("parses");
        assert_eq!(
            (cubin.kind, cubin.arch().as_deref(), cubin.entries, cubin.globals),
            (CubinKind::Executable, Some("sm_80"), vec!["main".to_owned()], vec!["__HOSTCALL__write".to_owned()])
        );
    }

    #[test]
    fn abi_version_8_keeps_the_sm_in_the_second_byte() {
        let cubin = Cubin::parse(&elf(elf::ET_EXEC, 8, 0x6400, &[])).expect("parses");
        assert_eq!((cubin.kind, cubin.sm), (CubinKind::Executable, Some(100)));
    }

    #[test]
    fn a_cuda_13_cubin_is_read() {
        // CUDA 13.0's `ptxas -c -arch=sm_90`, on the H200: OS/ABI 0x41, ABI
        // version 8, e_flags 0x06005a04.
        let mut bytes = elf(elf::ET_REL, 8, 0x0600_5a04, &[("kernel_main", elf::STT_FUNC, STO_CUDA_ENTRY, true)]);
        bytes[7] = ELFOSABI_CUDA_13;
        let cubin = Cubin::parse(&bytes).expect("parses");
        assert_eq!((cubin.kind, cubin.arch().as_deref()), (CubinKind::Relocatable, Some("sm_90")));
        assert_eq!(cubin.entries, ["kernel_main"]);
    }

    #[test]
    fn other_elf_files_and_garbage_are_refused() {
        let mut host = elf(elf::ET_EXEC, 7, 0x5a, &[]);
        host[7] = 0; // System V: a host binary
        assert!(Cubin::parse(&host).is_err());
        assert!(Cubin::parse(b"\x7fELF\x02\x01").is_err());
        assert!(Cubin::parse(&elf(elf::ET_DYN, 7, 0x5a, &[])).is_err());
    }
}
