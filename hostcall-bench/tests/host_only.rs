//! What the bench does without a GPU: its command line, the JSON it writes
//! and reads back, the table and the plots, from a result measured on an
//! H200 (`tests/canned.json`, a quick run) — so none of it rots where CI
//! has no GPU.

use std::path::Path;

use clap::Parser;
use hostcall_bench::cli::{ChildCommand, Cli, Command};
use hostcall_bench::gpu::{self, Impl};
use hostcall_bench::report::{self, Goal};
use hostcall_runtime::devices::DeviceList;

fn canned() -> report::Results {
    report::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/canned.json")).expect("canned result")
}

#[test]
fn the_command_line_parses_and_refuses_nonsense() {
    assert_eq!(Cli::try_parse_from(["hostcall-bench"]).unwrap().command, None, "no subcommand: run");
    let Some(Command::Run(run)) =
        Cli::try_parse_from(["hostcall-bench", "run", "--quick", "--out", "x"]).unwrap().command
    else {
        panic!("run")
    };
    assert!(run.quick && run.out == Path::new("x") && !run.no_write);
    let Some(Command::Build(build)) = Cli::try_parse_from(["hostcall-bench", "build", "--cores", "2"]).unwrap().command
    else {
        panic!("build")
    };
    assert_eq!(build.cores, Some(2));
    assert!(Cli::try_parse_from(["hostcall-bench", "build", "--cores", "0"]).is_err());
    assert!(Cli::try_parse_from(["hostcall-bench", "run", "--bogus"]).is_err());
    let Some(Command::Run(some)) =
        Cli::try_parse_from(["hostcall-bench", "run", "--only", "null,file"]).unwrap().command
    else {
        panic!("run --only")
    };
    assert_eq!(some.only, [gpu::Group::Null, gpu::Group::File]);
    let mut plan = gpu::Plan::new(true, 0);
    assert!(plan.measures(gpu::Group::Println), "no --only: every group");
    plan.only = some.only;
    assert!(plan.measures(gpu::Group::File) && !plan.measures(gpu::Group::Calls));
    assert!(Cli::try_parse_from(["hostcall-bench", "run", "--only", "nonsense"]).is_err());
    let Some(Command::Run(several)) =
        Cli::try_parse_from(["hostcall-bench", "run", "--devices", "0,1"]).unwrap().command
    else {
        panic!("run --devices")
    };
    assert_eq!(several.devices, Some(DeviceList::These(vec![0, 1])));
    assert!(Cli::try_parse_from(["hostcall-bench", "run", "--devices", "all", "--device", "1"]).is_err());
    assert!(Cli::try_parse_from(["hostcall-bench", "run", "--devices", "1,1"]).is_err());
    let child =
        ["hostcall-bench", "child", "--devices", "all", "print", "--impl", "hostcall", "--grid", "2", "--block", "32"];
    let Some(Command::Child { devices, .. }) = Cli::try_parse_from(child).unwrap().command else { panic!("child") };
    assert_eq!(devices, Some(DeviceList::All));
    let child = ["hostcall-bench", "child", "print", "--impl", "cuda", "--grid", "2", "--block", "32"];
    let Some(Command::Child { what, .. }) = Cli::try_parse_from(child).unwrap().command else { panic!("child") };
    assert_eq!(what, ChildCommand::Print { r#impl: Impl::Cuda, grid: 2, block: 32, cold: false });
    assert!(Cli::try_parse_from(["hostcall-bench", "child", "print", "--impl", "cuda", "--grid", "0", "--block", "1"])
        .is_err());
    <Cli as clap::CommandFactory>::command().debug_assert();
}

#[test]
fn a_result_survives_json_and_prints_one_line_per_figure() {
    let results = canned();
    assert_eq!(results.machine.gpu, "NVIDIA H200");
    let dir = tempfile::tempdir().unwrap();
    let written = report::write(&results, dir.path(), "t").unwrap();
    assert_eq!(report::read(&dir.path().join("t.json")).unwrap(), results, "JSON round trip");
    let table = report::table(&results);
    assert_eq!(table.lines().count(), 2 + results.figures.len());
    let null = table.lines().find(|l| l.starts_with("null_call_us ")).expect("null_call_us line");
    for field in ["us", "pingpong_us", "<=1.25x", "MISSED by"] {
        assert!(null.contains(field), "{field} in {null:?}");
    }
    // Every figure with a baseline shows its ratio as value / baseline.
    for f in &results.figures {
        let line = table.lines().find(|l| l.starts_with(&format!("{} ", f.name))).unwrap();
        if let Some(r) = f.ratio() {
            assert!(line.contains(&format!("{r:.3}x")), "{line}");
        }
    }
    // The plots: one per curve and the ratio chart, each naming its series.
    let svgs: Vec<_> = written.iter().filter(|p| p.extension().is_some_and(|e| e == "svg")).collect();
    assert_eq!(svgs.len(), results.curves.len() + 1);
    let calls = std::fs::read_to_string(dir.path().join("t-calls_per_s.svg")).unwrap();
    for s in &results.curves[0].series {
        assert!(calls.contains(&s.label), "legend names {:?}", s.label);
    }
    let ratios = std::fs::read_to_string(dir.path().join("t-ratios.svg")).unwrap();
    assert!(ratios.contains("null_call_us") && ratios.contains("<rect"));
}

#[test]
fn a_result_of_another_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = canned();
    results.schema += 1;
    std::fs::write(dir.path().join("r.json"), serde_json::to_string(&results).unwrap()).unwrap();
    assert!(report::read(&dir.path().join("r.json")).unwrap_err().contains("schema"));
    std::fs::write(dir.path().join("bad.json"), "{").unwrap();
    assert!(report::read(&dir.path().join("bad.json")).is_err());
}

#[test]
fn goals_in_json_keep_their_direction() {
    let text = serde_json::to_string(&Goal::AtLeast(5.0)).unwrap();
    assert_eq!(text, r#"{"op":">=","ratio":5.0}"#);
    assert_eq!(serde_json::from_str::<Goal>(r#"{"op":"<=","ratio":1.25}"#).unwrap(), Goal::AtMost(1.25));
}

#[test]
fn the_checks_of_device_results_are_the_kernels_arithmetic() {
    // alloc_vec / cuda_malloc, summed element by element as the kernels do.
    let brute = |threads: u64| -> u64 {
        (0..threads)
            .flat_map(|t| (0..64u64).map(move |i| (i, 1 + (t * 31 + i * 17) % 256)))
            .map(|(i, n)| (0..n).map(|j| i + j).sum::<u64>())
            .sum()
    };
    assert_eq!(gpu::alloc_sum(1), brute(1));
    assert_eq!(gpu::alloc_sum(300), brute(300));
    // file_read over /dev/zero sums zeros; over the pattern file, the last
    // byte of each 1 MiB chunk: 2 chunks of one block.
    assert_eq!(gpu::read_sum(2 << 20, 1, true), 0);
    let last = |p: u64| p % 251;
    assert_eq!(gpu::read_sum(2 << 20, 1, false), last((1 << 20) - 1) + last((2 << 20) - 1));
    assert_eq!(gpu::moved(1 << 30, 132), (1 << 30) / 132 * 132);
    assert_eq!(gpu::geometry(1), (1, 32));
    assert_eq!(gpu::geometry(2112), (264, 256));
    // Every warp asked for is launched, none more.
    for w in [1u64, 16, 132, 528, 2112, 8448, 7, 9] {
        let (grid, block) = gpu::geometry(w);
        assert_eq!(u64::from(grid) * u64::from(block), w * 32, "{w} warps");
        assert!(block <= 256);
    }
}

#[test]
fn without_a_gpu_run_says_so_in_one_line_and_fails() {
    if gpu::probe(0).is_ok() {
        eprintln!("skipped: a GPU is present (this checks the no-GPU path)");
        return;
    }
    for several in [&[][..], &["--devices", "all"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hostcall-bench"))
            .args(["run", "--quick"])
            .args(several)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("hostcall-bench: no GPU to measure: "), "{err}");
    }
}
