//! `hostcall-bench`: every hostcall figure beside its floor or CUDA's own
//! equivalent, measured in the same run on the same GPU (docs/bench.md).
//!
//! * [`gpu`]: the measurements, [`kernels`]: the images they load;
//!   [`several`]: the rates of several GPUs at once (`run --devices`);
//! * [`report`]: the table, the JSON and the plots; [`lines`]: what printed
//!   output delivered; [`build_time`]: `build_s` (no GPU);
//! * [`cli`]: the command line.

pub mod build_time;
pub mod cli;
pub mod gpu;
pub mod kernels;
pub mod lines;
pub mod report;
pub mod several;
