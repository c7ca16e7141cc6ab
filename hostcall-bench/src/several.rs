//! `hostcall-bench run --devices LIST`: the rates of a run on several GPUs
//! at once (`hostcall_runtime::devices`), per device and in total, each
//! beside the same figure measured in the same run on the first of them
//! alone. The goal is issue 15's: the total within 10% of `n` times one GPU
//! alone (a ratio of at least `0.9 n`).
//!
//! * `calls_per_s@<W>warps/<n>gpus`: every lane of the plan's largest grid
//!   makes null calls on every device at once, each device with its own
//!   queue, rings and server threads in this process; the total is every
//!   device's calls over the longest device's span (each span read on its
//!   own GPU's `%globaltimer`);
//! * `println_lines_per_s@<G>x256><target>/<n>gpus`: every thread of the
//!   plan's largest print grid prints one line on every device at once, in a
//!   child process whose one stdout they share (lines stay whole: torn and
//!   lost lines are counted as on one GPU); launch to the last line written.

use hostcall_runtime::backend::cuda::CudaBackend;

use crate::gpu::{self, say, Impl, Ours, Plan, Res, CALLS_PER_FIGURE};
use crate::kernels;
use crate::report::{Figure, Goal, Results, SCHEMA};

/// Measure the plan's figures on `ordinals` at once (the plan's device is
/// the first of them, the one measured alone).
pub fn run(plan: &Plan, ordinals: &[usize]) -> Res<Results> {
    let mut figures = Vec::new();
    if plan.measures(gpu::Group::Calls) {
        calls_figures(plan, ordinals, &mut figures)?;
    }
    if plan.measures(gpu::Group::Println) {
        print_figures(plan, ordinals, &mut figures)?;
    }
    let mut machine = gpu::machine(plan.device, &[kernels::BENCH_STD]);
    let names: Vec<String> = ordinals
        .iter()
        .map(|&d| CudaBackend::new(d).map_or_else(|e| e.to_string(), |b| b.device_name().to_owned()))
        .collect();
    machine.gpu = format!("{} x {}", ordinals.len(), names.join(" + "));
    Ok(Results {
        schema: SCHEMA,
        date: crate::report::today(),
        quick: plan.quick,
        machine,
        figures,
        curves: Vec::new(),
    })
}

/// `job` on every device's `Ours` at once, one thread each; the results in
/// device order, or the first error.
fn on_each<T: Send>(ours: &mut [Ours], job: impl Fn(&mut Ours) -> Res<T> + Sync) -> Res<Vec<T>> {
    let job = &job;
    std::thread::scope(|scope| {
        let running: Vec<_> = ours.iter_mut().map(|o| scope.spawn(move || job(o))).collect();
        running.into_iter().map(|h| h.join().map_err(|_| "a device's thread panicked".to_string())?).collect()
    })
}

/// The ratio of `n` GPUs at once to one alone that the issue asks for.
fn goal(n: usize) -> Goal {
    Goal::AtLeast(0.9 * n as f64)
}

fn calls_figures(plan: &Plan, ordinals: &[usize], figures: &mut Vec<Figure>) -> Res<()> {
    let n = ordinals.len();
    let w = plan.warps.iter().copied().max().unwrap_or(2112);
    let per_thread = (CALLS_PER_FIGURE / (w * 32)).clamp(2, 256);
    say(&format!("calls_per_s at {w} warps on {n} GPUs at once, against the first alone"));
    let mut ours: Vec<Ours> = ordinals.iter().map(|&d| Ours::new(d)).collect::<Res<_>>()?;
    on_each(&mut ours, |o| o.calls("calls", w, per_thread, 0))?; // warm-up
    let (alone, _) = ours[0].calls("calls", w, per_thread, 0)?;
    let together = on_each(&mut ours, |o| o.calls("calls", w, per_thread, 0))?;
    let calls = (w * 32 * per_thread) as f64;
    let longest = together.iter().map(|(rate, _)| calls / rate).fold(0.0, f64::max);
    let alone_name = format!("calls_per_s@{w}warps/alone");
    for (&d, (rate, served)) in ordinals.iter().zip(&together) {
        figures.push(
            Figure::new(&format!("calls_per_s@{w}warps/gpu{d}"), *rate, "calls/s").against(&alone_name, alone).notes(
                format!(
                    "device {d} while {n} GPUs ran; {:.1} calls per record, {} ring(s)",
                    served.per_record, served.rings
                ),
            ),
        );
    }
    figures.push(
        Figure::new(&format!("calls_per_s@{w}warps/{n}gpus"), calls * n as f64 / longest, "calls/s")
            .against(&alone_name, alone)
            .goal(goal(n))
            .notes(format!("{per_thread} calls per lane on each of {n} GPUs, over the longest GPU's span")),
    );
    Ok(())
}

fn print_figures(plan: &Plan, ordinals: &[usize], figures: &mut Vec<Figure>) -> Res<()> {
    let n = ordinals.len();
    let Some(&grid) = plan.print_grids.iter().max() else { return Ok(()) };
    let lines = f64::from(grid * 256);
    for &target in &plan.print_targets {
        let name = format!("println_lines_per_s@{grid}x256>{}", target.name());
        say(&format!("{name} on {n} GPUs at once, against the first alone"));
        let alone = gpu::print_child_on(plan, &[], Impl::Hostcall, grid, 256, target, false)?;
        let together = gpu::print_child_on(plan, ordinals, Impl::Hostcall, grid, 256, target, false)?;
        let alone_name = format!("{name}/alone");
        for (&d, secs) in ordinals.iter().zip(&together.per_device) {
            figures.push(
                Figure::new(&format!("{name}/gpu{d}"), lines / secs, "lines/s")
                    .against(&alone_name, lines / alone.secs)
                    .notes(format!("device {d} while {n} GPUs printed, launch to the end of its serving")),
            );
        }
        figures.push(
            Figure::new(&format!("{name}/{n}gpus"), lines * n as f64 / together.secs, "lines/s")
                .against(&alone_name, lines / alone.secs)
                .goal(goal(n))
                .notes(format!("{} GPUs, one stdout: {}; alone: {}", n, together.summary(), alone.summary())),
        );
    }
    Ok(())
}
