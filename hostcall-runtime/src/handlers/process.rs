//! The process around the kernel: environment, arguments, exit, abort, and
//! the `unsupported` report; plus `echo`, the test-only call.

use hostcall_abi::op::{Abort, Arg, Echo, Environ, Exit, Getenv, Unsupported};
use hostcall_abi::Errno;

use super::{ExitStatus, HostState};
use crate::error::{Duplicate, HandlerResult, HostError};
use crate::registry::{HostCx, Payload, Registry, ReplyCx};

/// The code `abort()` ends the run with (128 + SIGABRT).
pub const ABORT_CODE: i32 = 134;

pub fn register(r: &mut Registry<HostState>) -> Result<(), Duplicate> {
    r.register::<Getenv, _>(getenv)?;
    r.register::<Arg, _>(arg)?;
    r.register::<Environ, _>(environ)?;
    r.register::<Exit, _>(|cx, req: Exit, _| {
        record_exit(cx, ExitStatus { code: req.code, aborted: false });
        Ok(0)
    })?;
    r.register::<Abort, _>(|cx, _: Abort, _| {
        record_exit(cx, ExitStatus { code: ABORT_CODE, aborted: true });
        Ok(0)
    })?;
    r.register::<Unsupported, _>(unsupported)?;
    r.register_concurrent::<Echo, _>(echo)?;
    Ok(())
}

/// The first `exit`/`abort` wins: later ones come from threads that had not
/// yet seen the trap.
fn record_exit(cx: &mut HostCx<'_, HostState>, status: ExitStatus) {
    if cx.state.exit.is_none() {
        cx.state.exit = Some(status);
    }
}

fn getenv(cx: &mut HostCx<'_, HostState>, _: Getenv, data: &Payload<'_>) -> HandlerResult {
    let name = data.str()?;
    let value = cx.state.env.get(name).ok_or(HostError(Errno::ENOENT))?.clone();
    cx.reply_data(value.as_bytes());
    Ok(value.len() as u64)
}

fn arg(cx: &mut HostCx<'_, HostState>, req: Arg, _: &Payload<'_>) -> HandlerResult {
    let a = cx.state.args.get(req.index as usize).ok_or(HostError(Errno::ENOENT))?.clone();
    cx.reply_data(a.as_bytes());
    Ok(a.len() as u64)
}

/// Entry `index` of the environment as `NAME=value`, names in byte order;
/// an entry longer than one reply is left out (the device could not read it
/// with `getenv` either).
fn environ(cx: &mut HostCx<'_, HostState>, req: Environ, _: &Payload<'_>) -> HandlerResult {
    let capacity = cx.reply_capacity();
    let mut names: Vec<&String> = cx.state.env.keys().collect();
    names.sort();
    let entry = names
        .into_iter()
        .map(|name| format!("{name}={}", cx.state.env[name]))
        .filter(|entry| entry.len() <= capacity)
        .nth(req.index as usize)
        .ok_or(HostError(Errno::ENOENT))?;
    cx.reply_data(entry.as_bytes());
    Ok(entry.len() as u64)
}

fn unsupported(cx: &mut HostCx<'_, HostState>, _: Unsupported, data: &Payload<'_>) -> HandlerResult {
    let name = String::from_utf8_lossy(data.inline()).into_owned();
    tracing::debug!(target: "hostcall", "device called unsupported `{name}`: ENOSYS");
    if cx.state.unsupported.len() < 1024 && !cx.state.unsupported.contains(&name) {
        cx.state.unsupported.push(name);
    }
    Err(HostError(Errno::ENOSYS))
}

/// `echo(a, b)`: value `a ^ b`, reply data = the inline payload. A
/// concurrent handler (served on every ring): the test op that measures the
/// queue itself.
fn echo(cx: &mut ReplyCx<'_>, req: Echo, data: &[u8]) -> HandlerResult {
    cx.reply_data(data);
    Ok(req.a ^ req.b)
}
