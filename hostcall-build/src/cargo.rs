//! Runs the pinned toolchain's cargo for the nvptx target and reads back
//! which rlibs it produced, from `--message-format=json`.

use std::path::PathBuf;

use serde_json::Value;

use crate::error::{tail, BuildError};
use crate::toolchain::{describe, hermetic_command, Toolchain};

/// One `cargo build --release --target <spec>` invocation.
pub struct CargoBuild {
    pub step: &'static str,
    pub manifest: PathBuf,
    /// `-p` arguments; empty builds the manifest's package.
    pub packages: Vec<String>,
    /// `--bin` arguments; empty builds the package's default targets.
    pub bins: Vec<String>,
    pub target_spec: PathBuf,
    pub target_dir: PathBuf,
    pub rustflags: Vec<String>,
    /// `--config` arguments.
    pub config: Vec<String>,
    pub offline: bool,
    /// `RUSTC_WRAPPER`: [`crate::sysroot::RUSTC_WRAPPER`] written out.
    pub wrapper: PathBuf,
}

/// An rlib cargo built (or found fresh).
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The crate name (`target.name` in cargo's message).
    pub crate_name: String,
    /// An rlib, or for a binary the bitcode the rustc wrapper left where
    /// cargo expects the executable.
    pub rlib: PathBuf,
}

pub fn build(toolchain: &Toolchain, build: &CargoBuild) -> Result<Vec<Artifact>, BuildError> {
    let mut cmd = hermetic_command(&toolchain.cargo);
    // Cargo finds `.cargo/config.toml` from the working directory: the
    // manifest's own (rust-src's vendoring), never the caller's.
    if let Some(dir) = build.manifest.parent() {
        cmd.current_dir(dir);
    }
    cmd.arg("build")
        .arg("-Zjson-target-spec")
        .arg("--release")
        .arg("--message-format=json")
        .arg("--manifest-path")
        .arg(&build.manifest)
        .arg("--target")
        .arg(&build.target_spec)
        .arg("--target-dir")
        .arg(&build.target_dir);
    for package in &build.packages {
        cmd.arg("-p").arg(package);
    }
    for bin in &build.bins {
        cmd.arg("--bin").arg(bin);
    }
    for config in &build.config {
        cmd.arg("--config").arg(config);
    }
    if build.offline {
        cmd.arg("--offline");
    }
    // The encoded form keeps flags with spaces (paths) intact.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", build.rustflags.join("\x1f"))
        .env("RUSTC", &toolchain.rustc)
        .env("RUSTC_WRAPPER", &build.wrapper)
        .env("RUSTUP_TOOLCHAIN", &toolchain.channel)
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_TERM_COLOR", "never");

    let output = cmd.output().map_err(|e| BuildError::Tool {
        step: build.step.to_owned(),
        command: describe(&cmd),
        status: format!("could not start: {e}"),
        stderr_tail: String::new(),
    })?;

    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut artifacts = Vec::new();
    let mut errors = Vec::new();
    for message in stdout.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()) {
        match message["reason"].as_str() {
            Some("compiler-artifact") => {
                let crate_name = message["target"]["name"].as_str().unwrap_or_default().replace('-', "_");
                let files = message["filenames"].as_array().map(Vec::as_slice).unwrap_or_default();
                for file in files.iter().filter_map(Value::as_str) {
                    if file.ends_with(".rlib") {
                        artifacts.push(Artifact { crate_name: crate_name.clone(), rlib: file.into() });
                    }
                }
                if let Some(exe) = message["executable"].as_str() {
                    artifacts.push(Artifact { crate_name: crate_name.clone(), rlib: exe.into() });
                }
            }
            Some("compiler-message") if message["message"]["level"] == "error" => {
                let rendered = message["message"]["rendered"].as_str();
                errors.push(rendered.unwrap_or("(no rendered message)").to_owned());
            }
            _ => {}
        }
    }
    if !output.status.success() {
        // The first errors say what is wrong; cargo's last lines say where.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut text: String = errors.iter().take(3).map(|e| e.trim_end().to_owned() + "\n\n").collect();
        if errors.len() > 3 {
            text.push_str(&format!("... and {} more errors\n", errors.len() - 3));
        }
        text.push_str(&tail(&stderr, if errors.is_empty() { 30 } else { 4 }));
        return Err(BuildError::Tool {
            step: build.step.to_owned(),
            command: describe(&cmd),
            status: output.status.to_string(),
            stderr_tail: text,
        });
    }
    Ok(artifacts)
}

/// What `cargo metadata` says of the package at `manifest`.
pub struct PackageTargets {
    pub name: String,
    pub has_lib: bool,
    pub bins: Vec<String>,
    pub workspace_root: PathBuf,
}

pub fn package_targets(toolchain: &Toolchain, manifest: &std::path::Path) -> Result<PackageTargets, BuildError> {
    let mut cmd = hermetic_command(&toolchain.cargo);
    cmd.args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"]).arg(manifest);
    cmd.env("RUSTUP_TOOLCHAIN", &toolchain.channel);
    let output = cmd.output().map_err(|e| BuildError::Tool {
        step: "reading the kernel crate's manifest".into(),
        command: describe(&cmd),
        status: format!("could not start: {e}"),
        stderr_tail: String::new(),
    })?;
    if !output.status.success() {
        return Err(BuildError::Tool {
            step: "reading the kernel crate's manifest".into(),
            command: describe(&cmd),
            status: output.status.to_string(),
            stderr_tail: tail(&String::from_utf8_lossy(&output.stderr), 20),
        });
    }
    let invalid = |what: &str| BuildError::Invalid(format!("cargo metadata for {}: {what}", manifest.display()));
    let meta: Value = serde_json::from_slice(&output.stdout).map_err(|e| invalid(&e.to_string()))?;
    let manifest_text = manifest.display().to_string();
    let packages = meta["packages"].as_array().ok_or_else(|| invalid("no packages"))?;
    let package = packages
        .iter()
        .find(|p| p["manifest_path"].as_str().is_some_and(|m| std::path::Path::new(m) == manifest))
        .or(packages.first().filter(|_| packages.len() == 1))
        .ok_or_else(|| invalid(&format!("no package with manifest {manifest_text}")))?;
    let targets = package["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
    let kinds = |t: &Value, kind: &str| t["kind"].as_array().is_some_and(|k| k.iter().any(|x| x == kind));
    Ok(PackageTargets {
        name: package["name"].as_str().unwrap_or_default().to_owned(),
        has_lib: targets.iter().any(|t| ["lib", "rlib"].iter().any(|k| kinds(t, k))),
        bins: targets
            .iter()
            .filter(|t| kinds(t, "bin"))
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect(),
        workspace_root: meta["workspace_root"].as_str().map(PathBuf::from).unwrap_or_default(),
    })
}
