//! Cutting one PTX module into pieces that compile apart and link back into
//! the same program.
//!
//! Why: ptxas, and the CUDA driver's compiler with it, takes time that grows
//! faster than the size of the module it is given. On the 11.9 MB regex
//! kernel, `ptxas -c -O1` took 97 s and 11 GB for the whole module and 20 s
//! of CPU for the same functions in 8 pieces; the driver, given 16 pieces as
//! 16 `CU_JIT_INPUT_PTX` inputs of one link, compiled and linked them in 13 s
//! (20 s at its default optimization level) where the whole module took
//! 50-64 s (H200, driver 580; docs/architecture.md).
//!
//! The runtime cuts PTX this way, one piece per whole 720 KiB, before the
//! driver compiles it (hostcall-runtime's JIT): on the H200 the regex kernel
//! from 16 pieces loaded in 8.9-10.6 s (module load), and the demo from 2, 4
//! or 8 pieces ran to its output.
//!
//! How: every function body goes to exactly one piece, balanced by size; every
//! variable is defined in piece 0. Symbols that the module kept internal
//! become `.visible` so that other pieces can reach them (the pieces are only
//! ever linked with each other, so no name can clash), and each piece
//! declares what it uses from elsewhere as `.extern`. Everything else
//! (`.version`, `.target`, undefined externs) is copied where it is needed.
//! A function the module defines under a name PTX reserves for a system call
//! (`malloc`, `free`, ...) is renamed in every piece (`SYSTEM_CALLS`).
//!
//! What it does not do: change any function, or split a module it does not
//! understand ([`split`] then returns the module whole: DWARF sections,
//! `.alias`, module-scope `.shared`, a name defined twice).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// One statement at module scope.
struct Item<'a> {
    /// The statement's text, comments included, from its first directive to
    /// its `;` or the `}` that closes its body.
    text: &'a str,
    kind: ItemKind<'a>,
}

enum ItemKind<'a> {
    /// `.version`, `.target`, `.address_size`, `.file` and anything else that
    /// every piece needs as it is.
    Shared,
    /// A `.func` or `.entry`. `header` is the text up to the body's `{` (or
    /// the prototype's `;`), `body` from that `{` to its `}`.
    Function { name: &'a str, header: &'a str, body: Option<&'a str>, entry: bool },
    /// A `.global`, `.const` or `.shared` variable; `extern` when the module
    /// does not define it.
    Variable { name: &'a str, decl: &'a str, external: bool },
}

/// Skips whitespace and comments from `at`.
fn skip_blank(text: &[u8], mut at: usize) -> usize {
    loop {
        while at < text.len() && text[at].is_ascii_whitespace() {
            at += 1;
        }
        if text[at..].starts_with(b"//") {
            at += text[at..].iter().position(|&c| c == b'\n').unwrap_or(text.len() - at);
        } else if text[at..].starts_with(b"/*") {
            at += text[at + 2..].windows(2).position(|w| w == b"*/").map_or(text.len() - at, |p| p + 4);
        } else {
            return at;
        }
    }
}

/// The end of the statement that starts at `start` (one past its `;` or
/// closing `}`), and where a function body's `{` is, if it has one. Braces
/// inside comments and strings do not count; braces of an initialiser list
/// (`= {1, 2}`) are not a body.
fn statement_end(text: &[u8], start: usize, is_function: bool) -> Option<(usize, Option<usize>)> {
    let (mut at, mut depth, mut body) = (start, 0usize, None);
    while at < text.len() {
        match text[at] {
            b'/' if text[at..].starts_with(b"//") => {
                at += text[at..].iter().position(|&c| c == b'\n')?;
                continue;
            }
            b'/' if text[at..].starts_with(b"/*") => {
                at += 2 + text[at + 2..].windows(2).position(|w| w == b"*/")? + 2;
                continue;
            }
            b'"' => at += 1 + text[at + 1..].iter().position(|&c| c == b'"')?,
            b'{' => {
                if depth == 0 && is_function {
                    body = Some(at);
                }
                depth += 1;
            }
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 && body.is_some() {
                    return Some((at + 1, body));
                }
            }
            b';' if depth == 0 => return Some((at + 1, None)),
            _ => {}
        }
        at += 1;
    }
    None
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// The identifiers of `text` (PTX names: letters, digits, `_`, `$`, not
/// starting with a digit), comments included: an extra name costs one
/// declaration, a missing one a failed compile.
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            if is_ident_char(bytes[at]) && !(at > 0 && (is_ident_char(bytes[at - 1]) || bytes[at - 1] == b'%')) {
                let start = at;
                while at < bytes.len() && is_ident_char(bytes[at]) {
                    at += 1;
                }
                if !bytes[start].is_ascii_digit() {
                    return Some(&text[start..at]);
                }
            } else {
                at += 1;
            }
        }
        None
    })
}

/// The words of a directive before any `(`, `[`, `=` or `;`, comments out.
fn leading_words(header: &str) -> Vec<&str> {
    let code: &str = header.split("//").next().unwrap_or("");
    let end = code.find(['(', '[', '=', ';', '{']).unwrap_or(code.len());
    code[..end].split_whitespace().collect()
}

/// The name a `.func`/`.entry` header declares (`ptx::function_name` after
/// the keyword).
fn function_name(header: &str) -> Option<&str> {
    let key = [".func", ".entry"].iter().filter_map(|k| header.find(k).map(|i| i + k.len())).min()?;
    crate::ptx::function_name(&header[key..])
}

fn parse(ptx: &str) -> Option<Vec<Item<'_>>> {
    let bytes = ptx.as_bytes();
    let mut items = Vec::new();
    let mut at = skip_blank(bytes, 0);
    while at < bytes.len() {
        let head_end = ptx[at..].find(['(', '{', ';', '\n']).map_or(ptx.len(), |i| at + i);
        let words = leading_words(&ptx[at..head_end.max(at)]);
        let has = |w: &str| words.contains(&w);
        let is_function = has(".func") || has(".entry");
        let (end, body_at) = match words.first() {
            // One-line directives without a `;`.
            Some(&(".version" | ".target" | ".address_size" | ".file" | ".section")) if !is_function => {
                if words[0] == ".section" {
                    return None; // DWARF sections: not worth cutting apart
                }
                (ptx[at..].find('\n').map_or(ptx.len(), |i| at + i), None)
            }
            // `.alias a, b;` ties two names together across pieces, which
            // the rename and the declarations below do not follow.
            Some(&".alias") => return None,
            _ => statement_end(bytes, at, is_function)?,
        };
        let text = &ptx[at..end];
        let kind = if is_function {
            let header = &ptx[at..body_at.unwrap_or(end - 1)];
            ItemKind::Function {
                name: function_name(header)?,
                header,
                body: body_at.map(|b| &ptx[b..end]),
                entry: has(".entry"),
            }
        } else if has(".global") || has(".const") || has(".shared") {
            let words = leading_words(text);
            let decl_end = text.find(['=', ';']).unwrap_or(text.len());
            ItemKind::Variable { name: words.last()?, decl: text[..decl_end].trim_end(), external: has(".extern") }
        } else {
            ItemKind::Shared
        };
        items.push(Item { text, kind });
        at = skip_blank(bytes, end);
    }
    Some(items)
}

/// `header` with its linkage directive (`.visible`, `.weak`, `.extern`)
/// replaced by `linkage`.
fn relinked(header: &str, linkage: &str) -> String {
    let trimmed = header.trim_start();
    let rest = [".visible", ".weak", ".extern"]
        .iter()
        .find_map(|l| trimmed.strip_prefix(l).filter(|r| r.starts_with(char::is_whitespace)))
        .unwrap_or(trimmed);
    format!("{linkage} {}", rest.trim_start())
}

/// A prototype of the function `header` starts, with `linkage`.
fn prototype(header: &str, linkage: &str) -> String {
    let header = relinked(header, linkage);
    let header = header.trim_end();
    // A `;` after a trailing `//` comment would be part of the comment.
    let commented = header.rsplit('\n').next().is_some_and(|last| last.contains("//"));
    format!("{header}{}", if commented { "\n;" } else { ";" })
}

/// Cuts `ptx` into at most `pieces` modules that, compiled separately and
/// linked together, make the same program. Returns `[ptx]` unchanged when
/// one piece is asked for or the module is not one this reader follows
/// (debug sections, a name defined twice, unbalanced braces).
pub fn split(ptx: &str, pieces: usize) -> Vec<String> {
    match (pieces > 1).then(|| parse(ptx)).flatten().and_then(|items| cut(&items, pieces)) {
        Some(cut) if cut.len() > 1 => cut,
        _ => vec![ptx.to_owned()],
    }
}

/// Function names that PTX reserves for its "system calls", which the CUDA
/// toolchain provides (NVIDIA's PTX Interoperability guide, "System
/// Calls"; the device-runtime ones are from CUDA Dynamic Parallelism). A
/// module that defines one of them binds its own calls to its own
/// definition, but a piece that only declares it as `.extern` may be
/// given CUDA's: libc-hostcall's `malloc` and `free` in one piece, called
/// from another, meant two heaps and blocks freed into the wrong one (the
/// demo linked from pieces faulted on the H200; nvlink called them "entry
/// functions"). [`cut`] renames every such function it defines. (None of
/// these names is a PTX instruction, which a rename would also hit.)
const SYSTEM_CALLS: &[&str] = &[
    "vprintf",
    "malloc",
    "free",
    "__assertfail",
    "cudaGetParameterBuffer",
    "cudaGetParameterBufferV2",
    "cudaLaunchDevice",
    "cudaLaunchDeviceV2",
    "cudaDeviceGetAttribute",
    "cudaDeviceGetCacheConfig",
    "cudaDeviceGetLimit",
    "cudaDeviceGetSharedMemConfig",
    "cudaDeviceSynchronize",
    "cudaEventCreateWithFlags",
    "cudaEventDestroy",
    "cudaEventRecord",
    "cudaEventRecordWithFlags",
    "cudaFree",
    "cudaFuncGetAttributes",
    "cudaGetDevice",
    "cudaGetDeviceCount",
    "cudaGetErrorString",
    "cudaGetLastError",
    "cudaMalloc",
    "cudaMemcpyAsync",
    "cudaMemcpy2DAsync",
    "cudaMemcpy3DAsync",
    "cudaMemsetAsync",
    "cudaMemset2DAsync",
    "cudaMemset3DAsync",
    "cudaOccupancyMaxActiveBlocksPerMultiprocessor",
    "cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags",
    "cudaPeekAtLastError",
    "cudaRuntimeGetVersion",
    "cudaStreamCreateWithFlags",
    "cudaStreamDestroy",
    "cudaStreamWaitEvent",
];

/// `text` with every identifier that `renames` names replaced, except
/// after a `.` (`ld.global`: a modifier, not a name).
fn renamed<'t>(text: &'t str, renames: &HashMap<&str, String>) -> Cow<'t, str> {
    let mut out = String::new();
    let mut copied = 0;
    for id in identifiers(text) {
        let at = id.as_ptr() as usize - text.as_ptr() as usize;
        if text[..at].ends_with('.') {
            continue;
        }
        if let Some(new) = renames.get(id) {
            out.push_str(&text[copied..at]);
            out.push_str(new);
            copied = at + id.len();
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn cut(items: &[Item<'_>], pieces: usize) -> Option<Vec<String>> {
    // Which item defines each function, and which declares it when no item does.
    let (mut defined, mut declared) = (HashMap::new(), HashMap::new());
    let mut bodies = Vec::new();
    for (index, item) in items.iter().enumerate() {
        if let ItemKind::Function { name, body, .. } = item.kind {
            if body.is_some() {
                if defined.insert(name, index).is_some() {
                    return None;
                }
                bodies.push(index);
            } else {
                declared.entry(name).or_insert(index);
            }
        }
    }
    // A module-scope `.shared` variable is one per block: not something a
    // piece could name in another.
    let mut variables = HashSet::new();
    for item in items {
        if let ItemKind::Variable { name, decl, external: false } = item.kind {
            if !variables.insert(name) || leading_words(decl).contains(&".shared") {
                return None;
            }
        }
    }
    // Reserved names get a name of their own, the same in every piece.
    let mut renames: HashMap<&str, String> = HashMap::new();
    for &name in defined.keys() {
        if SYSTEM_CALLS.contains(&name) {
            renames.insert(name, format!("{name}$hostcall"));
        }
    }
    if !renames.is_empty() {
        let taken: HashSet<&str> = items.iter().flat_map(|i| identifiers(i.text)).collect();
        if renames.values().any(|new| taken.contains(new.as_str())) {
            return None;
        }
    }
    // Largest body first into the lightest piece (ties: the lower index),
    // then each piece in module order: the same input always cuts the same way.
    let pieces = pieces.min(bodies.len());
    let mut by_size = bodies.clone();
    by_size.sort_by_key(|&i| std::cmp::Reverse(items[i].text.len()));
    let mut load = vec![0usize; pieces];
    let mut home = HashMap::new();
    for index in by_size {
        let lightest = (0..pieces).min_by_key(|&p| (load[p], p))?;
        load[lightest] += items[index].text.len();
        home.insert(index, lightest);
    }
    let mut out = Vec::with_capacity(pieces);
    for piece in 0..pieces {
        let mine: Vec<usize> = bodies.iter().copied().filter(|i| home[i] == piece).collect();
        let mut used: HashSet<&str> = HashSet::new();
        for &index in &mine {
            used.extend(identifiers(items[index].text));
        }
        if piece == 0 {
            for item in items {
                if let ItemKind::Variable { .. } = item.kind {
                    used.extend(identifiers(item.text));
                }
            }
        }
        out.push(write_piece(items, piece, &mine, &used, &defined, &declared, &home, &renames));
    }
    Some(out)
}

#[allow(clippy::too_many_arguments)] // one piece's view of `cut`'s tables
fn write_piece(
    items: &[Item<'_>],
    piece: usize,
    mine: &[usize],
    used: &HashSet<&str>,
    defined: &HashMap<&str, usize>,
    declared: &HashMap<&str, usize>,
    home: &HashMap<usize, usize>,
    renames: &HashMap<&str, String>,
) -> String {
    let mut text = String::new();
    let mut line = |s: &str| {
        text.push_str(s);
        text.push('\n');
    };
    // Shared statements (`.file` names among them) are not renamed.
    let mut shared_end = 0;
    for item in items {
        if let ItemKind::Shared = item.kind {
            line(item.text);
            shared_end += item.text.len() + 1;
        }
    }
    // Prototypes first: a body or an initialiser may name any function.
    for (at, item) in items.iter().enumerate() {
        let ItemKind::Function { name, header, body, entry } = item.kind else { continue };
        if entry || !used.contains(name) {
            continue;
        }
        match (body, defined.get(name)) {
            (Some(_), Some(&index)) => {
                let weak = header.trim_start().starts_with(".weak");
                let linkage = if home[&index] != piece {
                    ".extern"
                } else if weak {
                    ".weak"
                } else {
                    ".visible"
                };
                line(&prototype(header, linkage));
            }
            // An undefined function: its first declaration, once.
            (None, None) if declared.get(name) == Some(&at) => line(item.text),
            _ => {}
        }
    }
    for item in items {
        let ItemKind::Variable { name, decl, external } = item.kind else { continue };
        if external {
            if used.contains(name) {
                line(item.text);
            }
        } else if piece == 0 {
            let keeps = [".visible", ".weak", ".extern", ".common"].iter().any(|l| item.text.starts_with(l));
            line(&if keeps { item.text.to_owned() } else { format!(".visible {}", item.text) });
        } else if used.contains(name) {
            line(&format!("{};", relinked(decl, ".extern")));
        }
    }
    for &index in mine {
        let item = &items[index];
        let ItemKind::Function { header, body: Some(body), .. } = item.kind else { continue };
        let linkage = if header.trim_start().starts_with(".weak") { ".weak" } else { ".visible" };
        line(&format!("{}{body}", relinked(header, linkage)));
    }
    match renamed(&text[shared_end..], renames) {
        Cow::Borrowed(_) => text,
        Cow::Owned(rest) => text[..shared_end].to_owned() + &rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx_summary;

    const PTX: &str = "\
//
// Generated by LLVM NVPTX Back-End
//

.version 8.0
.target sm_90
.address_size 64

.extern .func  (.param .b64 func_retval0) malloc
(
\t.param .b64 malloc_param_0
)
;
.func helper_late
(
\t.param .b64 helper_late_param_0
)
.noreturn;
.visible .global .align 8 .u64 __HOSTCALL_BUFF_PTR__;
.global .align 8 .u64 table[2] = {helper, generic(bytes)};
.global .align 1 .b8 bytes[3] = {1, 2, 3}; // a comment with { and ;
.func  (.param .b32 func_retval0) helper(
\t.param .b32 helper_param_0
)
{
\t.reg .b32 %r<3>;
\tld.param.b32 \t%r1, [helper_param_0];
\tst.param.b32 \t[func_retval0], %r1;
\tret;
}
.weak .func weak_one()
{
\tret;
}
.visible .entry kernel_main()
{
\t.local .align 8 .b8 \t__local_depot0[8];
\t.reg .b64 %rd<4>;
\tld.global.u64 \t%rd1, [__HOSTCALL_BUFF_PTR__];
\tld.global.u64 \t%rd2, [table];
\t{ // callseq 0, 0
\t.param .b64 param0;
\tcall.uni helper_late, (param0);
\t} // callseq 0
\tret;
}
.func helper_late(
\t.param .b64 helper_late_param_0
)
.noreturn                               // -- Begin function helper_late
{
\t.param .b64 param0;
\t{ .reg .b32 tmp; call.uni (tmp), helper, (param0); }
\tcall.uni weak_one, ();
\tcall.uni (param0), malloc, (param0);
\ttrap;
}
";

    fn defined_functions(ptx: &str) -> Vec<String> {
        parse(ptx)
            .unwrap()
            .iter()
            .filter_map(|i| match i.kind {
                ItemKind::Function { name, body: Some(_), .. } => Some(name.to_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reads_every_module_scope_statement() {
        let items = parse(PTX).unwrap();
        let kinds: Vec<String> = items
            .iter()
            .map(|i| match i.kind {
                ItemKind::Shared => "shared".to_owned(),
                ItemKind::Function { name, body, .. } => {
                    format!("{}{name}", if body.is_some() { "def " } else { "decl " })
                }
                ItemKind::Variable { name, external, .. } => {
                    format!("var{} {name}", if external { " extern" } else { "" })
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "shared",
                "shared",
                "shared",
                "decl malloc",
                "decl helper_late",
                "var __HOSTCALL_BUFF_PTR__",
                "var table",
                "var bytes",
                "def helper",
                "def weak_one",
                "def kernel_main",
                "def helper_late",
            ]
        );
    }

    #[test]
    fn a_module_with_an_alias_stays_whole() {
        let ptx = format!("{PTX}.alias other, helper;\n");
        assert_eq!(split(&ptx, 3), std::slice::from_ref(&ptx));
    }

    #[test]
    fn a_defined_system_call_name_is_renamed_in_every_piece() {
        // `malloc` defined here, and called from a function that lands in
        // another piece: neither piece may leave a bare `malloc` for the
        // toolchain to bind to CUDA's own.
        let ptx = PTX.replace(
            ".extern .func  (.param .b64 func_retval0) malloc\n(\n\t.param .b64 malloc_param_0\n)\n;",
            ".visible .func  (.param .b64 func_retval0) malloc(\n\t.param .b64 malloc_param_0\n)\n{\n\tst.param.b64 \t[func_retval0], 0;\n\tret;\n}",
        );
        assert!(defined_functions(&ptx).contains(&"malloc".to_owned()));
        let pieces = split(&ptx, 3);
        assert_eq!(pieces.len(), 3);
        let mut defined_in = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            assert!(!identifiers(piece).any(|id| id == "malloc"), "piece {i} names `malloc`:\n{piece}");
            if defined_functions(piece).contains(&"malloc$hostcall".to_owned()) {
                defined_in.push(i);
            }
        }
        assert_eq!(defined_in.len(), 1, "defined once");
        assert!(pieces.iter().filter(|p| p.contains("call.uni (param0), malloc$hostcall, (param0);")).count() == 1);
        // Where it is not defined, `malloc` is CUDA's and keeps its name.
        assert!(split(PTX, 3).iter().all(|p| !p.contains("malloc$hostcall")));
    }

    #[test]
    fn every_function_lands_in_exactly_one_piece() {
        let pieces = split(PTX, 3);
        assert_eq!(pieces.len(), 3);
        let mut all: Vec<String> = pieces.iter().flat_map(|p| defined_functions(p)).collect();
        all.sort();
        let mut want = defined_functions(PTX);
        want.sort();
        assert_eq!(all, want);
        // The same input cuts the same way.
        assert_eq!(pieces, split(PTX, 3));
    }

    #[test]
    fn each_piece_declares_what_it_uses_and_defines_variables_once() {
        let pieces = split(PTX, 4);
        assert_eq!(pieces.len(), 4, "one piece per body");
        let summaries: Vec<_> = pieces.iter().map(|p| ptx_summary(p)).collect();
        // Variables: defined by piece 0 only, visible so the others can name them.
        assert_eq!(summaries[0].globals, ["__HOSTCALL_BUFF_PTR__", "table", "bytes"]);
        assert!(pieces[0].contains(".visible .global .align 8 .u64 table[2] = {helper, generic(bytes)};"));
        for (piece, summary) in summaries.iter().enumerate().skip(1) {
            assert!(summary.globals.is_empty(), "piece {piece} defines {:?}", summary.globals);
        }
        let with_entry = pieces.iter().position(|p| p.contains(".entry kernel_main")).unwrap();
        let kernel = &pieces[with_entry];
        if with_entry != 0 {
            assert!(kernel.contains(".extern .global .align 8 .u64 table[2];"), "{kernel}");
            assert!(kernel.contains(".extern .global .align 8 .u64 __HOSTCALL_BUFF_PTR__;"), "{kernel}");
        }
        let late = pieces.iter().position(|p| p.contains(".visible .func helper_late(")).unwrap();
        if late != with_entry {
            assert!(
                kernel.contains(".extern .func helper_late(\n\t.param .b64 helper_late_param_0\n)\n.noreturn"),
                "{kernel}"
            );
        }
        // An undefined function keeps its own declaration, where it is used.
        assert!(pieces[late].contains(".extern .func  (.param .b64 func_retval0) malloc"));
        assert!(!kernel.contains("malloc") || late == with_entry);
        // A weak definition stays weak; others name it as extern.
        let weak = pieces.iter().position(|p| p.contains(".weak .func weak_one()\n{")).unwrap();
        if weak != late {
            assert!(pieces[late].contains(".extern .func weak_one();"));
        }
        for piece in &pieces {
            assert!(piece.starts_with(".version 8.0\n.target sm_90\n.address_size 64\n"));
        }
    }

    #[test]
    fn one_piece_or_an_unknown_module_comes_back_whole() {
        assert_eq!(split(PTX, 1), [PTX]);
        let with_dwarf = format!("{PTX}.section .debug_info\n{{\n.b8 1\n}}\n");
        assert_eq!(split(&with_dwarf, 4), [with_dwarf.as_str()]);
        let twice = format!("{PTX}.func helper()\n{{\nret;\n}}\n");
        assert_eq!(split(&twice, 4), [twice.as_str()]);
        let unbalanced = ".version 8.0\n.func f()\n{\n{\nret;\n}\n";
        assert_eq!(split(unbalanced, 4), [unbalanced]);
    }

    #[test]
    fn identifiers_skip_registers_and_numbers() {
        let names: Vec<&str> = identifiers("mov.u64 %rd1, anon_$_7; add 0x10, 12abc $L__BB0_1").collect();
        assert_eq!(names, ["mov", "u64", "anon_$_7", "add", "$L__BB0_1"]);
    }
}
