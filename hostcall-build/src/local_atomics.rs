//! Atomics on a thread's own stack, made plain loads and stores.
//!
//! A `Mutex`, `RwLock` or `Barrier` that lives in a local variable and never
//! escapes its thread ends up, after LLVM's address-space inference, as
//! `atom.<sem>.<scope>.local.<op>.<type>`, which `ptxas` refuses ("State space
//! incorrect for instruction 'atom'"). Local memory is private to its thread:
//! no other thread can name it (a generic address in the local window always
//! means the accessing thread's own stack), so an atomic there has no one to
//! be atomic against, and its ordering orders nothing another thread could
//! see. [`lower`] rewrites each such `atom`/`red` into the load, the
//! operation and the store it stands for, in a `{ }` block of its own
//! registers; everything else in the module is left byte for byte.

/// The PTX with every `atom`/`red` on `.local` lowered, and how many were.
/// A guarded (`@%p atom...`) or unrecognised one is left as it is (`ptxas`
/// then names it).
pub fn lower(ptx: &str) -> (String, usize) {
    if !ptx.contains(".local.") {
        return (ptx.to_owned(), 0);
    }
    let mut out = String::with_capacity(ptx.len() + 256);
    let mut lowered = 0;
    for line in ptx.split_inclusive('\n') {
        match lower_line(line) {
            Some(new) => {
                out.push_str(&new);
                lowered += 1;
            }
            None => out.push_str(line),
        }
    }
    (out, lowered)
}

/// One instruction, parsed: `atom` (with a destination) or `red`.
struct Atomic<'a> {
    op: &'a str,
    /// The operation's type (`u32`, `b64`, `f32`, ...).
    ty: &'a str,
    dest: Option<&'a str>,
    /// `[addr]`, as written.
    addr: &'a str,
    b: &'a str,
    c: Option<&'a str>,
}

fn lower_line(line: &str) -> Option<String> {
    let body = line.trim_end_matches(['\n', '\r']);
    let indent = &body[..body.len() - body.trim_start().len()];
    let a = parse(body.trim())?;
    let bits = match a.ty {
        "b32" | "u32" | "s32" | "f32" => 32,
        "b64" | "u64" | "s64" | "f64" => 64,
        _ => return None,
    };
    // Loads, stores and registers by size; floats keep their own type.
    let mem = if a.ty.starts_with('f') { a.ty.to_owned() } else { format!("b{bits}") };
    let (t, addr, b) = (a.ty, a.addr, a.b);
    let store = format!("st.local.{mem} {addr}, %hcl_new;");
    // (extra predicate registers, the code between the load and the store of the result)
    let (preds, code) = match (a.op, a.c) {
        ("cas", Some(c)) => {
            (1, format!("setp.eq.{mem} %hcl_p0, %hcl_old, {b}; selp.{mem} %hcl_new, {c}, %hcl_old, %hcl_p0; {store}"))
        }
        ("exch", None) => (0, format!("st.local.{mem} {addr}, {b};")),
        ("add" | "min" | "max", None) => (0, format!("{op}.{t} %hcl_new, %hcl_old, {b}; {store}", op = a.op)),
        ("and" | "or" | "xor", None) if t.starts_with('b') => {
            (0, format!("{op}.{t} %hcl_new, %hcl_old, {b}; {store}", op = a.op))
        }
        // PTX: inc wraps to 0 once old >= b; dec goes to b when old is 0 or above b.
        ("inc", None) if t == "u32" => (
            1,
            format!(
                "setp.ge.u32 %hcl_p0, %hcl_old, {b}; add.u32 %hcl_new, %hcl_old, 1; \
                 selp.u32 %hcl_new, 0, %hcl_new, %hcl_p0; {store}"
            ),
        ),
        ("dec", None) if t == "u32" => (
            2,
            format!(
                "setp.eq.u32 %hcl_p0, %hcl_old, 0; setp.gt.u32 %hcl_p1, %hcl_old, {b}; \
                 or.pred %hcl_p0, %hcl_p0, %hcl_p1; sub.u32 %hcl_new, %hcl_old, 1; \
                 selp.u32 %hcl_new, {b}, %hcl_new, %hcl_p0; {store}"
            ),
        ),
        _ => return None,
    };
    let mut decls = format!(".reg .{mem} %hcl_old; .reg .{mem} %hcl_new;");
    for k in 0..preds {
        decls.push_str(&format!(" .reg .pred %hcl_p{k};"));
    }
    let dest = a.dest.map(|d| format!(" mov.{mem} {d}, %hcl_old;")).unwrap_or_default();
    Some(format!("{indent}{{ {decls} ld.local.{mem} %hcl_old, {addr}; {code}{dest} }}\n"))
}

/// `atom{.mod}*.local{.mod}*.OP.TYPE d, [a], b(, c);` or the `red` form
/// (no `d`); `None` for anything else, a guarded instruction included.
fn parse(insn: &str) -> Option<Atomic<'_>> {
    let insn = insn.strip_suffix(';')?;
    let (mnemonic, operands) = insn.split_once(char::is_whitespace)?;
    let mut parts = mnemonic.split('.');
    let kind = parts.next()?;
    if kind != "atom" && kind != "red" {
        return None;
    }
    let parts: Vec<&str> = parts.collect();
    if !parts.contains(&"local") {
        return None;
    }
    // The operation and type are the last two parts; what precedes them may
    // only be orderings, scopes and the state space.
    let [mods @ .., op, ty] = parts.as_slice() else { return None };
    let known = ["local", "relaxed", "acquire", "release", "acq_rel", "cta", "gpu", "sys", "cluster"];
    if !mods.iter().all(|m| known.contains(m)) {
        return None;
    }
    let ops: Vec<&str> = operands.split(',').map(str::trim).collect();
    let (dest, rest) = if kind == "atom" { (Some(*ops.first()?), &ops[1..]) } else { (None, &ops[..]) };
    let (addr, b, c) = match rest {
        [addr, b] => (*addr, *b, None),
        [addr, b, c] => (*addr, *b, Some(*c)),
        _ => return None,
    };
    if !(addr.starts_with('[') && addr.ends_with(']')) || (c.is_some() && *op != "cas") {
        return None;
    }
    Some(Atomic { op, ty, dest, addr, b, c })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compare_and_swap_on_the_stack_becomes_load_compare_store() {
        let ptx = "\tmov.u32 %r1, 0;\n\tatom.acquire.sys.local.cas.b32 \t%r10, [%rd14], 0, 1;\n\tret;\n";
        let (out, n) = lower(ptx);
        assert_eq!(n, 1);
        assert_eq!(
            out,
            "\tmov.u32 %r1, 0;\n\t{ .reg .b32 %hcl_old; .reg .b32 %hcl_new; .reg .pred %hcl_p0; \
             ld.local.b32 %hcl_old, [%rd14]; setp.eq.b32 %hcl_p0, %hcl_old, 0; \
             selp.b32 %hcl_new, 1, %hcl_old, %hcl_p0; st.local.b32 [%rd14], %hcl_new; mov.b32 %r10, %hcl_old; }\n\tret;\n"
        );
    }

    #[test]
    fn exchange_add_bitwise_and_reductions_are_lowered() {
        let (out, n) = lower(
            "atom.relaxed.sys.local.exch.b64 %rd1, [%rd2], %rd3;\n\
             atom.release.gpu.local.add.u32 %r1, [%rd2+4], -1;\n\
             atom.local.or.b32 %r2, [%rd2], 4;\n\
             red.release.sys.local.add.u64 [%rd5], 1;\n\
             atom.local.max.s32 %r3, [%rd2], %r4;\n",
        );
        assert_eq!(n, 5);
        assert!(out.contains("ld.local.b64 %hcl_old, [%rd2]; st.local.b64 [%rd2], %rd3; mov.b64 %rd1, %hcl_old; }"));
        assert!(out.contains("add.u32 %hcl_new, %hcl_old, -1; st.local.b32 [%rd2+4], %hcl_new; mov.b32 %r1, %hcl_old;"));
        assert!(out.contains("or.b32 %hcl_new, %hcl_old, 4;"));
        assert!(out.contains("add.u64 %hcl_new, %hcl_old, 1; st.local.b64 [%rd5], %hcl_new; }"));
        assert!(out.contains("max.s32 %hcl_new, %hcl_old, %r4;"));
        assert!(!out.contains("atom") && !out.contains("red."));
    }

    #[test]
    fn float_adds_keep_their_register_type() {
        let (out, n) = lower("atom.local.add.f32 %f1, [%rd1], %f2;\n");
        assert_eq!(n, 1);
        assert!(out.starts_with("{ .reg .f32 %hcl_old; .reg .f32 %hcl_new; ld.local.f32 %hcl_old, [%rd1]; add.f32"));
    }

    #[test]
    fn global_guarded_and_unknown_atomics_are_left_alone() {
        let ptx = "atom.global.add.u32 %r1, [%rd1], 1;\n\
                   @%p1 atom.local.add.u32 %r1, [%rd1], 1;\n\
                   atom.local.add.noftz.f16 %h1, [%rd1], %h2;\n\
                   atom.local.cas.b16 %rs1, [%rd1], %rs2, %rs3;\n\
                   atom.acquire.sys.cas.b32 %r1, [%rd1], 0, 1;\n\
                   // atom.local in a comment\n";
        let (out, n) = lower(ptx);
        assert_eq!((out.as_str(), n), (ptx, 0));
    }

    #[test]
    fn a_module_without_local_atomics_is_unchanged() {
        let ptx = ".version 8.0\n.target sm_90\nld.local.u32 %r1, [%rd1];\n";
        assert_eq!(lower(ptx), (ptx.to_owned(), 0));
    }
}
