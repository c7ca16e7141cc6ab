//! Reading a PTX module's module-scope declarations: its `.entry` kernels,
//! the `.global` variables it defines, and the `.extern` symbols it leaves
//! undefined (a module with any does not load).
//!
//! The driver can look a global up by name but cannot list them, so the
//! runtime reads the list from here to find every `__HOSTCALL__<name>` a
//! kernel uses; the pipeline reads the same list to check what it built.

/// What a PTX module declares at module scope, each list in declaration
/// order without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PtxSummary {
    /// `.entry` kernels.
    pub entries: Vec<String>,
    /// `.extern` functions and variables: defined nowhere in the module.
    pub externs: Vec<String>,
    /// `.global` variables the module defines.
    pub globals: Vec<String>,
}

impl PtxSummary {
    /// The defined globals whose name starts with `__HOSTCALL`.
    pub fn hostcall_globals(&self) -> impl Iterator<Item = &str> {
        self.globals.iter().map(String::as_str).filter(|g| g.starts_with("__HOSTCALL"))
    }
}

fn is_symbol(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_$.%".contains(c))
}

fn identifier(text: &str) -> Option<&str> {
    let text = text.trim_start();
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || "_$.%".contains(c))).unwrap_or(text.len());
    Some(&text[..end]).filter(|n| is_symbol(n))
}

/// The symbol of a `.func`/`.entry` declaration, after an optional
/// `(.param ...)` return list; `rest` starts after the keyword.
pub(crate) fn function_name(rest: &str) -> Option<&str> {
    let rest = rest.trim_start();
    let rest = match rest.strip_prefix('(') {
        Some(params) => &params[params.find(')')? + 1..],
        None => rest,
    };
    identifier(rest)
}

/// The symbol of a variable declaration: the last word before `[`, `=` or `;`.
fn variable_name(line: &str) -> Option<String> {
    let end = line.find(['[', '=', ';']).unwrap_or(line.len());
    line[..end].split_whitespace().last().map(str::to_owned).filter(|n| is_symbol(n))
}

fn push_new(list: &mut Vec<String>, name: Option<String>) {
    if let Some(name) = name {
        if !list.contains(&name) {
            list.push(name);
        }
    }
}

/// Lists the module's entries, defined globals and undefined symbols.
///
/// Undefined functions are `.extern .func` declarations, and `.weak .func`
/// prototypes (what a weak reference such as std's `weak!` leaves) that no
/// function body of the module defines: ptxas refuses both.
pub fn ptx_summary(ptx: &str) -> PtxSummary {
    let mut summary = PtxSummary::default();
    // Braces open function bodies (and close on the line of an initialiser
    // list); only what stands outside every body is module scope.
    let mut depth = 0usize;
    // A `.func` header whose `{` (a body) or `;` (a prototype) is still to come.
    let mut header: Option<(String, bool)> = None;
    let (mut defined, mut weak_prototypes) = (Vec::new(), Vec::new());
    for raw in ptx.lines() {
        let line = raw.split("//").next().unwrap_or("");
        let directive = line.trim_start();
        if depth == 0 && directive.starts_with('.') {
            let words: Vec<&str> = directive.split_whitespace().take(4).collect();
            let has = |w: &str| words.contains(&w);
            let after = |w: &str| directive.find(w).map(|i| &directive[i + w.len()..]).unwrap_or("");
            if has(".entry") {
                push_new(&mut summary.entries, function_name(after(".entry")).map(str::to_owned));
            } else if has(".extern") && has(".func") {
                push_new(&mut summary.externs, function_name(after(".func")).map(str::to_owned));
            } else if has(".extern") {
                push_new(&mut summary.externs, variable_name(directive));
            } else if has(".func") {
                header = function_name(after(".func")).map(|name| (name.to_owned(), has(".weak")));
            } else if has(".global") {
                push_new(&mut summary.globals, variable_name(directive));
            }
        }
        for c in line.chars() {
            match c {
                '{' => {
                    if depth == 0 {
                        if let Some((name, _)) = header.take() {
                            defined.push(name);
                        }
                    }
                    depth += 1;
                }
                '}' => depth = depth.saturating_sub(1),
                ';' if depth == 0 => {
                    if let Some((name, true)) = header.take() {
                        weak_prototypes.push(name);
                    }
                    header = None;
                }
                _ => {}
            }
        }
    }
    for name in weak_prototypes {
        if !defined.contains(&name) {
            push_new(&mut summary.externs, Some(name));
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = "\
.version 8.0
.target sm_90
.address_size 64

.extern .func  (.param .b64 func_retval0) malloc
(
\t.param .b64 malloc_param_0
)
;
.extern .func abort
(
)
;
.extern .global .align 4 .b8 missing_table[16];
.visible .global .align 8 .u64 __HOSTCALL_BUFF_PTR__;
.visible .global .align 4 .b8 __HOSTCALL__open[4];
.global .align 1 .b8 anon_1[8] = {1, 2, 3, 4, 5, 6, 7, 8};
.visible .entry kernel_main()
{
\t.reg .b64 %rd<4>;
\t// .global .u64 not_me;
\tld.global.u64 \t%rd1, [__HOSTCALL_BUFF_PTR__];
\tret;
}
.entry other_kernel(
\t.param .u64 other_kernel_param_0
)
{
}
.visible .global .align 8 .u64 FAILURES;
.visible .global .align 8 .u64 __HOSTCALL_BUFF_PTR__;
";

    #[test]
    fn summary_lists_entries_globals_and_externs_in_order() {
        let summary = ptx_summary(PTX);
        assert_eq!(summary.entries, ["kernel_main", "other_kernel"]);
        assert_eq!(summary.externs, ["malloc", "abort", "missing_table"]);
        assert_eq!(summary.globals, ["__HOSTCALL_BUFF_PTR__", "__HOSTCALL__open", "anon_1", "FAILURES"]);
        assert_eq!(summary.hostcall_globals().collect::<Vec<_>>(), ["__HOSTCALL_BUFF_PTR__", "__HOSTCALL__open"]);
    }

    #[test]
    fn weak_prototypes_without_a_body_are_undefined() {
        // Forward declarations of defined functions (weak or not) are not.
        let ptx = ".weak .func (.param .b32 func_retval0) pidfd_spawnp\n(\n\t.param .b64 p0\n)\n;\n\
                   .weak .func defined_later\n(\n)\n;\n\
                   .func local_proto()\n;\n\
                   .weak .func defined_later()\n{\n\tret;\n}\n\
                   .func local_proto()\n{\n}\n";
        assert_eq!(ptx_summary(ptx).externs, ["pidfd_spawnp"]);
    }

    #[test]
    fn nothing_inside_a_body_is_module_scope() {
        let ptx = ".visible .func f()\n{\n.global .u64 inner;\n.entry fake()\n}\n.global .u64 outer;\n";
        let summary = ptx_summary(ptx);
        assert!(summary.entries.is_empty());
        assert_eq!(summary.globals, ["outer"]);
    }
}
