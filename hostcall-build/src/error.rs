//! The one error type of the pipeline. Every variant says which step failed
//! and carries what a person needs to fix it (the tool's stderr tail, the
//! fixup that no longer applies, the path that could not be written).

use std::fmt;
use std::path::Path;

#[derive(Debug)]
pub enum BuildError {
    /// rustup, the pinned toolchain or one of its components is unusable.
    Toolchain(String),
    /// A file-system operation on `path` failed.
    Io { action: &'static str, path: String, source: std::io::Error },
    /// An external tool could not start or exited unsuccessfully.
    Tool { step: String, command: String, status: String, stderr_tail: String },
    /// A patch in `fixups/` no longer applies to this rust-src.
    Fixup { patch: String, reason: String },
    /// The options or the kernel crate are not usable as given.
    Invalid(String),
}

impl BuildError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        BuildError::Io { action, path: path.display().to_string(), source }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Toolchain(msg) => write!(f, "toolchain: {msg}"),
            BuildError::Io { action, path, source } => write!(f, "cannot {action} {path}: {source}"),
            BuildError::Tool { step, command, status, stderr_tail } => {
                write!(f, "{step} failed ({status})\n  command: {command}")?;
                if !stderr_tail.is_empty() {
                    write!(f, "\n  --- output (tail) ---\n{stderr_tail}")?;
                }
                Ok(())
            }
            BuildError::Fixup { patch, reason } => write!(
                f,
                "fixup {patch} does not apply to this rust-src: {reason}\n  \
                 (the pinned channel in stage0/channel and fixups/ must move together)"
            ),
            BuildError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The last `lines` lines of `text`, for error messages.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
