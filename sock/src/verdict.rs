//! What a socket call gets once its outcome is decided: the return value the kernel acts
//! on (1 lets the call go on, 0 fails it) and the reason counter that records it.

use aya_ebpf::helpers::bpf_set_retval;
use lb_common::SockReason;

use crate::stats;

const ALLOW: i32 = 1;
const FAIL: i32 = 0;
const ECONNREFUSED: i32 = 111;

/// connect/sendmsg. A frontend that refuses fails the call with ECONNREFUSED at once, as
/// kube-proxy's reject does; any other failure is a drop, which the kernel reports as
/// EPERM.
#[inline(always)]
pub fn selected(outcome: Result<(), SockReason>) -> i32 {
    let reason = match outcome {
        Ok(()) => SockReason::Selected,
        Err(reason) => reason,
    };
    stats::count_reason(reason);
    match reason {
        SockReason::Selected | SockReason::PassNotService | SockReason::PassNotRewritten => ALLOW,
        SockReason::RejectNoBackend => {
            // SAFETY: plain helper call. A failing program with an error already set keeps
            // that error instead of the default EPERM.
            unsafe { bpf_set_retval(-ECONNREFUSED) };
            FAIL
        }
        _ => FAIL,
    }
}

/// recvmsg/getpeername may not fail a call (the verifier allows only 1): they restore or
/// leave the address alone.
#[inline(always)]
pub fn restored(reason: SockReason) -> i32 {
    stats::count_reason(reason);
    ALLOW
}
