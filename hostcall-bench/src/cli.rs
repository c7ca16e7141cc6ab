//! The command line: `hostcall-bench [run]`, `build`, `plot`, and the
//! hidden `child` the run starts for figures about a process of its own.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hostcall_runtime::devices::DeviceList;

use crate::gpu::{Impl, LoadHow};

/// Measure hostcall against its floors and CUDA's own device printf and
/// malloc, in one run on one GPU; print `name value unit baseline ratio
/// goal`, write JSON and SVG plots.
#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "hostcall-bench",
    version,
    after_help = "With no subcommand: `run`. docs/bench.md says what each figure measures and why its \
    baseline is the fair one."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum Command {
    /// Measure every GPU figure (needs an NVIDIA GPU; about 2 minutes, `--quick` well under one).
    Run(RunArgs),
    /// Measure `build_s`: the demo's cold PTX build and a kernel-only rebuild (no GPU; minutes).
    Build(BuildArgs),
    /// Print the table of a result file and draw its plots again beside it.
    Plot {
        /// A `bench/results/*.json` file.
        json: PathBuf,
    },
    /// One measurement in a process of its own (started by `run`).
    #[command(hide = true)]
    Child {
        #[arg(long, default_value_t = 0)]
        device: usize,
        /// Every one of these at once instead (`print --impl hostcall` only).
        #[arg(long, conflicts_with = "device")]
        devices: Option<DeviceList>,
        #[command(subcommand)]
        what: ChildCommand,
    },
}

#[derive(clap::Args, Debug, PartialEq)]
pub struct RunArgs {
    /// Smaller sizes and fewer points, no first-load figure: a check, not figures to quote.
    #[arg(long)]
    pub quick: bool,
    /// Where the JSON and plots go (`<gpu>-<date>.json`, `-quick` in quick mode).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Print the table only.
    #[arg(long)]
    pub no_write: bool,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// A tmpfs directory for the file figures.
    #[arg(long, default_value = "/dev/shm")]
    pub tmpfs: PathBuf,
    /// Measure only these groups of figures (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<crate::gpu::Group>,
    /// Measure calls/s and println lines/s on these GPUs at once (`all`, or
    /// device numbers separated by commas), per GPU and in total, against
    /// the first of them alone; instead of the one-GPU figures.
    #[arg(long, value_name = "LIST", conflicts_with = "device")]
    pub devices: Option<DeviceList>,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            quick: false,
            out: "bench/results".into(),
            no_write: false,
            device: 0,
            tmpfs: "/dev/shm".into(),
            only: Vec::new(),
            devices: None,
        }
    }
}

#[derive(clap::Args, Debug, PartialEq)]
pub struct BuildArgs {
    /// Run the builds on this many CPUs (2: as the CI machine).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub cores: Option<u64>,
    /// Where the JSON goes (`build-<date>.json`).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Print the table only.
    #[arg(long)]
    pub no_write: bool,
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum ChildCommand {
    /// Every thread prints one line; stdout is what the parent measures.
    Print {
        #[arg(long, value_enum)]
        r#impl: Impl,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65535))]
        grid: u32,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        block: u32,
        /// Time the first launch of the process (queue set-up included),
        /// not one after a same-size launch.
        #[arg(long)]
        cold: bool,
    },
    /// Load the demo's image once.
    Load {
        #[arg(long, value_enum)]
        how: LoadHow,
    },
}
