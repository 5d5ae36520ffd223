#!/usr/bin/env python3
"""What a call costs in an XDP program on this kernel, measured with BPF_PROG_RUN.

Each probe is a tiny XDP program of raw instructions that makes ten calls of one kind
(a BPF-to-BPF subprogram call, or a helper call) and returns XDP_PASS. The kernel runs
each program `--repeat` times per BPF_PROG_RUN call and reports the mean time per run;
the probes are run in turns (`--rounds` times) and the median is printed, with the
figure per call: (probe - pass) / 10.

Why it matters: on kernels whose return thunk mitigates SRSO (see
/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow), every return of a
subprogram or helper pays for it, so the balancer's hot paths keep calls out.

Run as root: python3 perf-lab/tools/call_cost.py
"""

import argparse
import ctypes
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bpf_raw import insn, load_xdp, test_run  # noqa: E402

XDP_PASS = 2
CALLS = 10

# Opcodes
MOV64_IMM = 0xB7
MOV64_REG = 0xBF
CALL = 0x85
EXIT = 0x95
PSEUDO_CALL = 1  # src_reg of a BPF-to-BPF call

# Helper ids (include/uapi/linux/bpf.h)
KTIME_GET_NS = 5
GET_SMP_PROCESSOR_ID = 8
XDP_ADJUST_HEAD = 44
JIFFIES64 = 118
KTIME_GET_COARSE_NS = 160

def ret_pass():
    return [insn(MOV64_IMM, 0, imm=XDP_PASS), insn(EXIT)]


def helper_calls(helper_id):
    return [insn(CALL, imm=helper_id) for _ in range(CALLS)] + ret_pass()


def subprogram_calls():
    # Call i jumps to the subprogram after the main body: imm is relative to the next insn.
    body = CALLS + 2
    calls = [insn(CALL, src=PSEUDO_CALL, imm=body - (i + 1)) for i in range(CALLS)]
    return calls + ret_pass() + [insn(MOV64_IMM, 0, imm=0), insn(EXIT)]


def adjust_head_calls():
    # Five pairs: grow the head by 20 bytes, then shrink it back (ten calls).
    prog = [insn(MOV64_REG, 6, 1)]
    for _ in range(CALLS // 2):
        prog += [
            insn(MOV64_REG, 1, 6),
            insn(MOV64_IMM, 2, imm=-20),
            insn(CALL, imm=XDP_ADJUST_HEAD),
            insn(MOV64_REG, 1, 6),
            insn(MOV64_IMM, 2, imm=20),
            insn(CALL, imm=XDP_ADJUST_HEAD),
        ]
    return prog + ret_pass()


def load(program):
    return load_xdp(b"".join(program))


def run(fd, repeat):
    frame = ctypes.create_string_buffer(64)
    return test_run(fd, frame, 64, repeat)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    probes = {
        "pass (baseline)": ret_pass(),
        "subprogram call": subprogram_calls(),
        "bpf_xdp_adjust_head": adjust_head_calls(),
        "bpf_ktime_get_ns": helper_calls(KTIME_GET_NS),
        "bpf_ktime_get_coarse_ns": helper_calls(KTIME_GET_COARSE_NS),
        "bpf_jiffies64 (inlined)": helper_calls(JIFFIES64),
        "bpf_get_smp_processor_id (inlined)": helper_calls(GET_SMP_PROCESSOR_ID),
    }
    fds = {name: load(program) for name, program in probes.items()}
    times = {name: [] for name in fds}
    for _ in range(args.rounds):
        for name, fd in fds.items():
            times[name].append(run(fd, args.repeat))
    medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    base = medians["pass (baseline)"]
    print(f"{'probe':38} {'ns per run':>10} {'ns per call':>12}")
    for name, median in medians.items():
        per_call = "" if name == "pass (baseline)" else f"{(median - base) / CALLS:12.1f}"
        print(f"{name:38} {median:10d} {per_call}")


if __name__ == "__main__":
    main()
