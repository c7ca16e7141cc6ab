//! `hostcall-bench`: see `hostcall-bench --help` and docs/bench.md.

use std::process::ExitCode;

use clap::Parser;
use hostcall_bench::cli::{ChildCommand, Cli, Command, RunArgs};
use hostcall_bench::{build_time, gpu, report, several};
use hostcall_runtime::backend::cuda::CudaBackend;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Command::Run(RunArgs::default()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostcall-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Run(args) => {
            let ordinals = match &args.devices {
                Some(list) => {
                    list.resolve(CudaBackend::device_count().map_err(|e| format!("no GPU to measure: {e}"))?)?
                }
                None => vec![args.device],
            };
            let gpu_name = gpu::probe(ordinals[0]).map_err(|e| format!("no GPU to measure: {e}"))?;
            let mut plan = gpu::Plan::new(args.quick, ordinals[0]);
            plan.tmpfs = args.tmpfs;
            plan.only = args.only;
            let several = args.devices.is_some().then_some(ordinals.as_slice());
            let on = match several {
                Some(o) => format!("{} GPUs ({gpu_name} first)", o.len()),
                None => gpu_name,
            };
            eprintln!("hostcall-bench: {on}, {} run", if args.quick { "quick" } else { "full" });
            let results = match several {
                Some(ordinals) => several::run(&plan, ordinals)?,
                None => gpu::run(&plan)?,
            };
            print!("{}", report::table(&results));
            if !args.no_write {
                let stem = format!(
                    "{}-{}{}{}",
                    report::gpu_slug(&results.machine.gpu),
                    results.date,
                    if args.quick { "-quick" } else { "" },
                    several.map_or(String::new(), |o| format!("-{}gpus", o.len()))
                );
                for path in report::write(&results, &args.out, &stem)? {
                    eprintln!("hostcall-bench: wrote {}", path.display());
                }
            }
            Ok(())
        }
        Command::Build(args) => {
            let results = build_time::measure(args.cores.map(|n| n as usize))?;
            print!("{}", report::table(&results));
            if !args.no_write {
                for path in report::write(&results, &args.out, &format!("build-{}", results.date))? {
                    eprintln!("hostcall-bench: wrote {}", path.display());
                }
            }
            Ok(())
        }
        Command::Plot { json } => {
            let results = report::read(&json)?;
            print!("{}", report::table(&results));
            let dir = json.parent().unwrap_or(std::path::Path::new("."));
            let stem = json.file_stem().and_then(|s| s.to_str()).ok_or("the result file has no name")?;
            for path in report::plots(&results, dir, stem)? {
                eprintln!("hostcall-bench: wrote {}", path.display());
            }
            Ok(())
        }
        Command::Child { device, devices, what } => {
            let secs = match (what, devices) {
                (ChildCommand::Print { r#impl, grid, block, cold }, Some(list)) => {
                    let ordinals = list.resolve(CudaBackend::device_count().map_err(|e| e.to_string())?)?;
                    gpu::child_print_devices(&ordinals, r#impl, grid, block, cold)?
                }
                (ChildCommand::Print { r#impl, grid, block, cold }, None) => {
                    gpu::child_print(device, r#impl, grid, block, cold)?
                }
                (ChildCommand::Load { .. }, Some(_)) => return Err("a load child runs on one device".into()),
                (ChildCommand::Load { how }, None) => gpu::child_load(device, how)?,
            };
            eprintln!("BENCH_CHILD {secs:.6}");
            Ok(())
        }
    }
}
