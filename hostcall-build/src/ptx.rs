//! Reading PTX back: what a module exports and still needs ([`ptx_summary`]),
//! and an optional `ptxas` check ([`run_ptxas`]) for machines that have one.

use std::path::{Path, PathBuf};

use crate::error::BuildError;
use crate::toolchain::{hermetic_command, run};

/// What a PTX module declares at module scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PtxSummary {
    /// `.entry` kernels.
    pub entries: Vec<String>,
    /// `.extern` symbols: defined nowhere in the module, so loading fails.
    pub externs: Vec<String>,
    /// `.global` variables whose name starts with `__HOSTCALL`.
    pub hostcall_globals: Vec<String>,
}

fn identifier(text: &str) -> Option<String> {
    let text = text.trim_start();
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || "_$.%".contains(c))).unwrap_or(text.len());
    (end > 0).then(|| text[..end].to_owned())
}

/// The symbol declared by a module-scope `.func`/`.entry` line, after an
/// optional `(.param ...)` return list.
fn function_name(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    let rest = match rest.strip_prefix('(') {
        Some(params) => &params[params.find(')')? + 1..],
        None => rest,
    };
    identifier(rest)
}

/// The symbol of a variable declaration: the last word before `[`, `=` or `;`.
fn variable_name(rest: &str) -> Option<String> {
    let end = rest.find(['[', '=', ';']).unwrap_or(rest.len());
    rest[..end].split_whitespace().last().map(str::to_owned)
}

/// Lists entries, undefined (`.extern`) symbols and `__HOSTCALL*` globals.
pub fn ptx_summary(ptx: &str) -> PtxSummary {
    let mut summary = PtxSummary::default();
    for line in ptx.lines() {
        // Module-scope directives start at column 0; instructions inside
        // bodies are indented, so `ld.global` never matches.
        if !line.starts_with('.') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let has = |w: &str| words.iter().take(4).any(|x| *x == w);
        let after = |w: &str| line.find(w).map(|i| &line[i + w.len()..]).unwrap_or("");
        if has(".entry") {
            summary.entries.extend(function_name(after(".entry")));
        } else if has(".extern") && has(".func") {
            summary.externs.extend(function_name(after(".func")));
        } else if has(".extern") {
            summary.externs.extend(variable_name(line));
        } else if has(".global") {
            if let Some(name) = variable_name(line).filter(|n| n.starts_with("__HOSTCALL")) {
                summary.hostcall_globals.push(name);
            }
        }
    }
    summary
}

/// The repository this crate lives in (fixed when it is compiled).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Finds `ptxas`: `$PTXAS`, then `PATH`, then the wheel unpacked at
/// `<repo>/.whl/nvidia/cuda_nvcc/bin/ptxas` (`pip install --target .whl
/// nvidia-cuda-nvcc-cu12`).
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("PTXAS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(explicit)).filter(|p| p.is_file());
    }
    let exe = format!("ptxas{}", std::env::consts::EXE_SUFFIX);
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&exe))
        .chain([repo_root().join(".whl/nvidia/cuda_nvcc/bin").join(&exe)])
        .find(|p| p.is_file())
}

/// The result of [`run_ptxas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtxasCheck {
    /// ptxas assembled the module for the arch.
    Accepted { ptxas: PathBuf, cubin_bytes: u64 },
    /// No ptxas here; the string says why (print it, do not fail).
    Skipped(String),
}

/// Assembles `ptx` for `arch` with ptxas when one is available. A rejected
/// module is an error carrying ptxas's diagnostics.
pub fn run_ptxas(ptx: &Path, arch: &str) -> Result<PtxasCheck, BuildError> {
    let Some(ptxas) = find_ptxas() else {
        return Ok(PtxasCheck::Skipped(
            "no ptxas (set PTXAS, put it on PATH, or `pip install --target .whl nvidia-cuda-nvcc-cu12`)".into(),
        ));
    };
    let cubin = ptx.with_extension(format!("{arch}.cubin"));
    let mut cmd = hermetic_command(&ptxas);
    cmd.arg(format!("-arch={arch}")).arg("-o").arg(&cubin).arg(ptx);
    run("ptxas", &mut cmd)?;
    let cubin_bytes = std::fs::metadata(&cubin).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&cubin);
    Ok(PtxasCheck::Accepted { ptxas, cubin_bytes })
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
\tld.global.u64 \t%rd1, [__HOSTCALL_BUFF_PTR__];
\tret;
}
.entry other_kernel(
\t.param .u64 other_kernel_param_0
)
{
}
";

    #[test]
    fn summary_lists_entries_externs_and_hostcall_globals() {
        let summary = ptx_summary(PTX);
        assert_eq!(summary.entries, ["kernel_main", "other_kernel"]);
        assert_eq!(summary.externs, ["malloc", "abort", "missing_table"]);
        assert_eq!(summary.hostcall_globals, ["__HOSTCALL_BUFF_PTR__", "__HOSTCALL__open"]);
    }
}
