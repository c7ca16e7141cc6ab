//! Several devices from one runtime: one [`Runtime`] per device (each with
//! its queue, rings and server threads), launched at once, served at once,
//! sharing what one process has. What the command-line runners'
//! `--devices` runs; the devices' backends come from the caller (CUDA in
//! `launcher`, the emulation in the tests).
//!
//! What the devices of one run share, as the processes of one shell
//! pipeline would:
//!
//! * the sandbox root, the arguments and the environment, to which each
//!   device's runtime adds [`DEVICE_VAR`] (its index in the run, `0..n`)
//!   and [`DEVICES_VAR`] (`n`);
//! * stdout and stderr: each device writes through a [`LineJoiner`] of its
//!   own, which passes only whole lines to the shared stream, so that lines
//!   of different devices never mix mid-line (a device's unfinished last
//!   line goes out when its run ends; so does a prompt without a newline,
//!   even when the kernel flushes it: on several devices, `print!` then
//!   `read_line` shows the prompt only once its line is done);
//! * stdin: one stream ([`Stdin`] clones): each read takes the next bytes,
//!   whichever device asks first. A device's std reads ahead (its
//!   `BufReader`), so, as with two processes sharing a pipe, which lines a
//!   device gets depends on timing; one reader is the predictable way.
//!
//! Each device's run ends as a process would: its `exit`, a fault or an
//! error ends that device's run only, and the others go on to their end.
//! The stop flag and the watchdog of the shared [`RuntimeConfig`] stop every
//! device. The run's exit code is [`DevicesReport::exit_code`]: the first
//! non-zero code in device order.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::handlers::stdin::Stdin;
use crate::{cubin_suits, exit_code, Backend, Dim3, RunReport, Runtime, RuntimeConfig, RuntimeError};

/// The environment variable that tells a device's kernel its index in the
/// run (`0..n`, the order the devices were given in); what
/// `hostcall_thread::device()` reads.
pub const DEVICE_VAR: &str = "HOSTCALL_DEVICE";
/// The number of devices in the run; `hostcall_thread::device_count()`.
pub const DEVICES_VAR: &str = "HOSTCALL_DEVICES";

/// One runtime per device, loaded and launched together.
pub struct Devices {
    runtimes: Vec<Runtime>,
    /// Each device's stdout and stderr writers, to finish after each run.
    outputs: Vec<[LineJoiner; 2]>,
}

/// A device that failed before its kernel ran (while loading), by its
/// index in the run.
#[derive(Debug)]
pub struct DeviceError {
    pub device: usize,
    pub error: RuntimeError,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {}: {}", self.device, self.error)
    }
}

impl std::error::Error for DeviceError {}

/// What each device's launch did, in device order.
#[derive(Debug)]
pub struct DevicesReport {
    pub devices: Vec<Result<RunReport, RuntimeError>>,
}

impl DevicesReport {
    /// The run's exit code: the first non-zero [`exit_code::of`] in device
    /// order (not in time: which device ends first varies from run to run,
    /// device order does not), 0 when every device's is 0.
    pub fn exit_code(&self) -> u8 {
        first_nonzero(self.devices.iter().map(exit_code::of))
    }

    /// Whether a device's run was stopped (signal or watchdog): its kernel
    /// may still be running, so its runtime must not be dropped (freeing
    /// device memory waits for the kernel).
    pub fn any_stopped(&self) -> bool {
        self.devices.iter().any(|d| matches!(d, Err(RuntimeError::Stopped { .. })))
    }
}

/// The first non-zero code, else 0.
pub fn first_nonzero(codes: impl IntoIterator<Item = u8>) -> u8 {
    codes.into_iter().find(|&c| c != 0).unwrap_or(0)
}

impl Devices {
    /// A runtime on each of `backends` (device `i` is the `i`-th), with the
    /// built-in handlers, sharing `config` as the module's docs say.
    pub fn new<B: Backend + 'static>(
        backends: impl IntoIterator<Item = B>,
        config: RuntimeConfig,
    ) -> Result<Self, RuntimeError> {
        let backends: Vec<B> = backends.into_iter().collect();
        if backends.is_empty() {
            return Err(RuntimeError::Config("a run on no device at all".into()));
        }
        let n = backends.len();
        let stdin = Stdin::new(config.stdin);
        let (stdout, stderr) = (shared(config.stdout), shared(config.stderr));
        let mut devices = Devices { runtimes: Vec::with_capacity(n), outputs: Vec::with_capacity(n) };
        for (i, backend) in backends.into_iter().enumerate() {
            let out = [LineJoiner::new(stdout.clone()), LineJoiner::new(stderr.clone())];
            let device_config = RuntimeConfig {
                root: config.root.clone(),
                queue: config.queue,
                // Replaced by the shared stream below, before anything reads.
                stdin: Box::new(io::empty()),
                stdout: Box::new(out[0].clone()),
                stderr: Box::new(out[1].clone()),
                env: device_env(&config.env, i, n),
                args: config.args.clone(),
                debug: config.debug,
                timeout: config.timeout,
                stop: config.stop.clone(),
            };
            let mut rt = Runtime::new(backend, device_config)?;
            rt.state_mut().stdin = stdin.clone();
            devices.runtimes.push(rt);
            devices.outputs.push(out);
        }
        Ok(devices)
    }

    /// Devices in the run.
    pub fn len(&self) -> usize {
        self.runtimes.len()
    }

    /// Never: [`Devices::new`] refuses an empty run.
    pub fn is_empty(&self) -> bool {
        self.runtimes.is_empty()
    }

    /// Each device's runtime, device 0 first (to add handlers, read
    /// globals, set the queue).
    pub fn runtimes_mut(&mut self) -> &mut [Runtime] {
        &mut self.runtimes
    }

    pub fn runtimes(&self) -> &[Runtime] {
        &self.runtimes
    }

    /// Load `image` (PTX or a cubin, as [`Runtime::load`]) on every device;
    /// how long each took.
    pub fn load(&mut self, image: &[u8]) -> Result<Vec<Duration>, DeviceError> {
        let compiles = !image.starts_with(b"\x7fELF");
        self.load_each(compiles, |rt| rt.load(image))
    }

    /// Load the cubin where it suits the device, else the PTX, on every
    /// device ([`Runtime::load_best`]); how long each took.
    pub fn load_best(&mut self, ptx: &[u8], cubin: Option<&[u8]>) -> Result<Vec<Duration>, DeviceError> {
        let arch = self.runtimes.first_mut().and_then(|rt| rt.backend_mut().cubin_arch());
        let compiles = cubin.is_none_or(|c| cubin_suits(c, arch.as_deref()).is_err());
        self.load_each(compiles, |rt| rt.load_best(ptx, cubin))
    }

    /// Run `load` on every device. When the driver `compiles` the image
    /// (PTX), device 0 loads alone first: what it compiles lands in the
    /// runtime's JIT cache (unless turned off), from which the others, GPUs
    /// of the same kind, then load at once instead of each compiling it
    /// again. A cubin loads on every device at once. The first failure in
    /// device order is the error.
    fn load_each(
        &mut self,
        compiles: bool,
        load: impl Fn(&mut Runtime) -> Result<(), RuntimeError> + Sync,
    ) -> Result<Vec<Duration>, DeviceError> {
        let timed = |rt: &mut Runtime| {
            let t = Instant::now();
            load(rt).map(|()| t.elapsed())
        };
        let mut times = Vec::with_capacity(self.runtimes.len());
        let (first, rest) = self.runtimes.split_at_mut(if compiles { 1 } else { 0 });
        if let Some(rt) = first.first_mut() {
            times.push(timed(rt).map_err(|error| DeviceError { device: 0, error })?);
        }
        let loaded = on_each(rest, first.len(), "load", |_, rt| timed(rt));
        for (k, r) in loaded.into_iter().enumerate() {
            times.push(r.map_err(|error| DeviceError { device: first.len() + k, error })?);
        }
        Ok(times)
    }

    /// Launch `entry` on every device at once and serve them all until each
    /// has ended; what each did.
    pub fn launch(&mut self, entry: &str, grid: impl Into<Dim3>, block: impl Into<Dim3>) -> DevicesReport {
        let (grid, block) = (grid.into(), block.into());
        let outputs = &self.outputs;
        let devices = on_each(&mut self.runtimes, 0, "serve", |i, rt| {
            let mut outcome = rt.launch(entry, grid, block);
            // The device's unfinished last lines go out now that it is done.
            for out in outputs.get(i).into_iter().flatten() {
                if let Err(e) = out.finish() {
                    count_lost_line(&mut outcome, &e);
                }
            }
            outcome
        });
        DevicesReport { devices }
    }
}

/// `job` on every runtime at once, each on a thread of its own (named
/// `hostcall-<what>-<i>`, `i` counted from device `from`); the results in
/// device order. A thread that cannot be started is that device's error. A panic, a bug of the runtime's own
/// (it answers a handler's panic with EIO), goes on in the caller once every
/// other device is done.
fn on_each<T: Send>(
    runtimes: &mut [Runtime],
    from: usize,
    what: &str,
    job: impl Fn(usize, &mut Runtime) -> Result<T, RuntimeError> + Sync,
) -> Vec<Result<T, RuntimeError>> {
    let job = &job;
    std::thread::scope(|scope| {
        let started: Vec<_> = runtimes
            .iter_mut()
            .enumerate()
            .map(|(k, rt)| {
                let i = from + k;
                std::thread::Builder::new()
                    .name(format!("hostcall-{what}-{i}"))
                    .spawn_scoped(scope, move || job(i, rt))
                    .map_err(|e| RuntimeError::Config(format!("a thread to {what} device {i}: {e}")))
            })
            .collect();
        started
            .into_iter()
            .map(|h| h.and_then(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))))
            .collect()
    })
}

/// Count a device's last line that could not be written as a failed posted
/// write of its run.
fn count_lost_line(outcome: &mut Result<RunReport, RuntimeError>, e: &io::Error) {
    let report = match outcome {
        Ok(report) => report,
        Err(RuntimeError::KernelFailed { report, .. } | RuntimeError::Stopped { report, .. }) => &mut **report,
        Err(_) => return,
    };
    report.errors += 1;
    report.unanswered_errors += 1;
    report.first_unanswered.get_or_insert_with(|| ("write".to_owned(), crate::error::errno_of(e)));
}

/// A stream the devices of a run share.
type Shared = Arc<Mutex<Box<dyn Write + Send>>>;

fn shared(sink: Box<dyn Write + Send>) -> Shared {
    Arc::new(Mutex::new(sink))
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A writer that panicked leaves no half-made state here: each write is
    // whole bytes appended or not.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A device's writer to a stream shared with other devices: passes on
/// whole lines only, every line of one `write` with one `write_all` under
/// the stream's lock, and holds the unfinished last line until its newline
/// comes or [`LineJoiner::finish`]. A line longer than
/// [`LineJoiner::MAX_HELD`] goes out in pieces (holding it whole would take
/// unbounded memory), and other devices' lines may come between them.
/// Clones share the held bytes (the runtime writes through one, the run
/// finishes through another).
#[derive(Clone)]
pub struct LineJoiner {
    sink: Shared,
    held: Arc<Mutex<Vec<u8>>>,
}

impl LineJoiner {
    /// Bytes of one unfinished line held, at most.
    pub const MAX_HELD: usize = 64 * 1024;

    fn new(sink: Shared) -> Self {
        LineJoiner { sink, held: Arc::default() }
    }

    /// Write the unfinished line held, if any, and flush the stream.
    pub fn finish(&self) -> io::Result<()> {
        let mut held = lock(&self.held);
        let mut sink = lock(&self.sink);
        let written = sink.write_all(&held).and_then(|()| sink.flush());
        held.clear();
        written
    }
}

impl Write for LineJoiner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut held = lock(&self.held);
        let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |nl| nl + 1);
        let (lines, rest) = buf.split_at(whole);
        let mut written = Ok(());
        if !lines.is_empty() {
            let mut sink = lock(&self.sink);
            written = sink.write_all(&held).and_then(|()| sink.write_all(lines));
            held.clear();
        }
        held.extend_from_slice(rest);
        if held.len() >= Self::MAX_HELD {
            written = written.and(lock(&self.sink).write_all(&held));
            held.clear();
        }
        written.map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.sink).flush()
    }
}

/// Which devices a run is on, as `--devices` takes it: `all`, or ordinals
/// separated by commas (`0,1,3`), each once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceList {
    All,
    These(Vec<usize>),
}

impl Default for DeviceList {
    /// Device 0 alone.
    fn default() -> Self {
        DeviceList::These(vec![0])
    }
}

impl FromStr for DeviceList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "all" {
            return Ok(DeviceList::All);
        }
        let mut these: Vec<usize> = Vec::new();
        for part in text.split(',').map(str::trim) {
            let ordinal = part.parse::<usize>().map_err(|_| {
                format!("`{text}` is not a list of devices: give `all` or device numbers separated by commas (0,1)")
            })?;
            if these.contains(&ordinal) {
                return Err(format!("`{text}` names device {ordinal} twice"));
            }
            these.push(ordinal);
        }
        Ok(DeviceList::These(these))
    }
}

impl DeviceList {
    /// The ordinals on a machine of `present` devices: every one for `All`;
    /// an error naming a device that is not there.
    pub fn resolve(&self, present: usize) -> Result<Vec<usize>, String> {
        match self {
            DeviceList::All if present == 0 => Err("--devices all: this machine has no device".into()),
            DeviceList::All => Ok((0..present).collect()),
            DeviceList::These(these) => match these.iter().find(|&&d| d >= present) {
                Some(d) => Err(format!(
                    "no device {d}: this machine has {present} ({})",
                    if present == 0 { "none".to_owned() } else { format!("0 to {}", present - 1) }
                )),
                None => Ok(these.clone()),
            },
        }
    }

    /// The one device of a list of one, which needs no count of the
    /// machine's devices to run.
    pub fn single(&self) -> Option<usize> {
        match self {
            DeviceList::These(these) if these.len() == 1 => Some(these[0]),
            _ => None,
        }
    }
}

/// The environment of device `i` of `n`: `env` and the two variables.
fn device_env(env: &HashMap<String, String>, i: usize, n: usize) -> HashMap<String, String> {
    let mut env = env.clone();
    env.insert(DEVICE_VAR.to_owned(), i.to_string());
    env.insert(DEVICES_VAR.to_owned(), n.to_string());
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedBuf;

    fn joiner(out: &SharedBuf) -> LineJoiner {
        LineJoiner::new(shared(Box::new(out.clone())))
    }

    #[test]
    fn a_joiner_passes_whole_lines_and_holds_the_rest_until_its_newline() {
        let out = SharedBuf::new();
        let mut a = joiner(&out);
        a.write_all(b"one\ntw").unwrap();
        assert_eq!(out.to_string_lossy(), "one\n");
        a.write_all(b"o, still").unwrap();
        assert_eq!(out.to_string_lossy(), "one\n", "no newline yet: held");
        a.write_all(b" two\nthree").unwrap();
        assert_eq!(out.to_string_lossy(), "one\ntwo, still two\n");
        a.finish().unwrap();
        assert_eq!(out.to_string_lossy(), "one\ntwo, still two\nthree", "the end of the run lets it out");
    }

    #[test]
    fn two_devices_partial_lines_never_mix() {
        let out = SharedBuf::new();
        let sink = shared(Box::new(out.clone()));
        let (mut a, mut b) = (LineJoiner::new(sink.clone()), LineJoiner::new(sink));
        a.write_all(b"device 0 sa").unwrap();
        b.write_all(b"device 1 says hi\ndevice 1 ag").unwrap();
        a.write_all(b"ys hi\n").unwrap();
        b.write_all(b"ain\n").unwrap();
        assert_eq!(out.to_string_lossy(), "device 1 says hi\ndevice 0 says hi\ndevice 1 again\n");
    }

    #[test]
    fn a_line_longer_than_the_bound_goes_out_in_pieces() {
        let out = SharedBuf::new();
        let mut a = joiner(&out);
        a.write_all(&vec![b'x'; LineJoiner::MAX_HELD + 10]).unwrap();
        assert_eq!(out.contents().len(), LineJoiner::MAX_HELD + 10);
    }

    #[test]
    fn the_first_nonzero_code_in_device_order_is_the_runs() {
        assert_eq!(first_nonzero([0, 0, 0]), 0);
        assert_eq!(first_nonzero([0, 3, 139]), 3);
        assert_eq!(first_nonzero([124, 0, 1]), 124);
    }

    #[test]
    fn device_lists_parse_and_resolve_against_the_machine() {
        let parse = |t: &str| t.parse::<DeviceList>();
        assert_eq!(parse("all"), Ok(DeviceList::All));
        assert_eq!(parse("0,1"), Ok(DeviceList::These(vec![0, 1])));
        assert_eq!(parse(" 3 , 1 "), Ok(DeviceList::These(vec![3, 1])), "the order given is the run's");
        assert_eq!(parse("2").map(|l| l.single()), Ok(Some(2)));
        assert!(parse("1,1").unwrap_err().contains("names device 1 twice"));
        for bad in ["", "0,", "a", "-1", "0;1", "all,0", "1.5"] {
            assert!(parse(bad).unwrap_err().contains("is not a list of devices"), "{bad:?}");
        }
        assert_eq!(DeviceList::All.resolve(2), Ok(vec![0, 1]));
        assert_eq!(DeviceList::All.resolve(0), Err("--devices all: this machine has no device".into()));
        assert_eq!(DeviceList::These(vec![1, 0]).resolve(2), Ok(vec![1, 0]));
        assert_eq!(DeviceList::These(vec![0, 2]).resolve(2), Err("no device 2: this machine has 2 (0 to 1)".into()));
        assert_eq!(DeviceList::These(vec![0]).resolve(0), Err("no device 0: this machine has 0 (none)".into()));
        assert_eq!(DeviceList::default().single(), Some(0));
        assert_eq!(DeviceList::All.single(), None);
    }
}
