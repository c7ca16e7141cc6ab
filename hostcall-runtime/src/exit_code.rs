//! How a run's outcome becomes a process exit code, as a shell would report
//! the same ending of a CPU process. Every command-line runner uses these
//! (`launcher`, and [`crate::devices`] for the code of several devices).

use crate::{RunReport, RuntimeError, StopReason};

/// The exit code of one launch's outcome: the kernel's `exit` code (its low
/// 8 bits; 134 after a panic or `abort`), 0 when it returned, 1 when output
/// it did not wait for could not be written; a fault as the matching signal
/// ([`fault_code`]); a stopped run as `timeout(1)` and shells say
/// ([`stop_code`]); 1 for a run that could not be set up or served.
pub fn of(outcome: &Result<RunReport, RuntimeError>) -> u8 {
    match outcome {
        Ok(report) => match exit_byte(report.exit_code.unwrap_or(0)) {
            0 if report.first_unanswered.is_some() => 1,
            code => code,
        },
        Err(RuntimeError::KernelFailed { message, .. }) => fault_code(message),
        Err(RuntimeError::Stopped { reason, .. }) => stop_code(*reason),
        Err(_) => 1,
    }
}

/// The exit code of a stopped run, as `timeout(1)` and shells give it: 124
/// for the watchdog, 128 + the signal's number (130 for Ctrl-C).
pub fn stop_code(reason: StopReason) -> u8 {
    match reason {
        StopReason::Timeout(_) => 124,
        StopReason::Signal(n) => 128u8.saturating_add(n.min(127) as u8),
    }
}

/// The exit code of a kernel that faulted, as a shell reports a process
/// killed by the matching signal, so that it differs from the codes a
/// kernel's own `exit` usually gives: 139 (SIGSEGV) for a bad address or a
/// stack overflow, 132 (SIGILL) for a trap or an illegal instruction, 134
/// (SIGABRT) for a failed device assertion, 1 for anything else (the
/// emulation's traps among them).
pub fn fault_code(message: &str) -> u8 {
    const SEGV: &[&str] = &[
        "CUDA_ERROR_ILLEGAL_ADDRESS",
        "CUDA_ERROR_MISALIGNED_ADDRESS",
        "CUDA_ERROR_INVALID_ADDRESS_SPACE",
        "CUDA_ERROR_INVALID_PC",
        "CUDA_ERROR_HARDWARE_STACK_ERROR",
    ];
    const ILL: &[&str] = &["CUDA_ERROR_ILLEGAL_INSTRUCTION", "CUDA_ERROR_LAUNCH_FAILED"];
    if SEGV.iter().any(|e| message.contains(e)) {
        139
    } else if ILL.iter().any(|e| message.contains(e)) {
        132
    } else if message.contains("CUDA_ERROR_ASSERT") {
        134
    } else {
        1
    }
}

/// `exit(code)` on the device becomes the process's status, as on Linux: the
/// low 8 bits.
pub fn exit_byte(code: i32) -> u8 {
    (code & 0xff) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostcall_abi::Errno;
    use std::time::Duration;

    #[test]
    fn faults_exit_as_the_matching_signal_would() {
        assert_eq!(fault_code("CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)"), 139);
        assert_eq!(fault_code("CUDA_ERROR_MISALIGNED_ADDRESS"), 139);
        assert_eq!(fault_code("CUDA_ERROR_LAUNCH_FAILED (unspecified launch failure)"), 132);
        assert_eq!(fault_code("CUDA_ERROR_ILLEGAL_INSTRUCTION"), 132);
        assert_eq!(fault_code("CUDA_ERROR_ASSERT"), 134);
        assert_eq!(fault_code("CUDA_ERROR_UNKNOWN"), 1);
    }

    #[test]
    fn stopped_runs_exit_as_timeout_and_shells_say() {
        assert_eq!(stop_code(StopReason::Timeout(Duration::from_secs(3))), 124);
        assert_eq!((stop_code(StopReason::Signal(2)), stop_code(StopReason::Signal(15))), (130, 143));
    }

    #[test]
    fn exit_codes_keep_their_low_byte() {
        assert_eq!((exit_byte(0), exit_byte(3), exit_byte(256 + 7), exit_byte(-1)), (0, 3, 7, 255));
    }

    #[test]
    fn an_outcome_exits_with_its_kernels_code_or_as_its_ending_says() {
        let ended = |code| Ok(RunReport { exit_code: code, ..RunReport::default() });
        assert_eq!((of(&ended(None)), of(&ended(Some(0))), of(&ended(Some(3)))), (0, 0, 3));
        let lost = Ok(RunReport { first_unanswered: Some(("write".into(), Errno::EPIPE)), ..RunReport::default() });
        assert_eq!(of(&lost), 1, "output lost is not a success");
        let report = Box::default();
        let faulted = Err(RuntimeError::KernelFailed { message: "CUDA_ERROR_ILLEGAL_ADDRESS".into(), report });
        assert_eq!(of(&faulted), 139);
        let stopped = Err(RuntimeError::Stopped { reason: StopReason::Signal(2), report: Box::default() });
        assert_eq!(of(&stopped), 130);
        assert_eq!(of(&Err(RuntimeError::NoModule)), 1);
    }
}
