"""The bpf(2) calls the probes in this directory share: raw instructions, program load,
one BPF_PROG_RUN. x86-64 only (the syscall number)."""

import ctypes
import struct
import sys

SYS_BPF = 321  # x86-64
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_TYPE_XDP = 6

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    """bpf(cmd, attr); returns the result and the attribute buffer as the kernel left it."""
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    rc = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if rc < 0:
        raise OSError(ctypes.get_errno(), f"bpf({cmd})")
    return rc, buf


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def load_xdp(code):
    """Loads raw instructions as an XDP program; prints the verifier's log on refusal."""
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    attr = bytearray(160)
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf
    struct.pack_into(
        "<IIQQIIQ", attr, 0, BPF_PROG_TYPE_XDP, len(code) // 8, ctypes.addressof(insns),
        ctypes.addressof(license), 1, len(log), ctypes.addressof(log),
    )
    try:
        return bpf(BPF_PROG_LOAD, attr)[0]
    except OSError:
        sys.stderr.write(log.value.decode(errors="replace")[-3000:] + "\n")
        raise


def test_run(fd, frame, size, repeat):
    """One BPF_PROG_RUN of `frame` (`size` bytes), `repeat` times; ns per run."""
    attr = bytearray(80)
    # prog_fd, retval, data_size_in, data_size_out, data_in, data_out, repeat, duration
    struct.pack_into("<IIIIQQII", attr, 0, fd, 0, size, 0, ctypes.addressof(frame), 0, repeat, 0)
    return struct.unpack_from("<I", bpf(BPF_PROG_TEST_RUN, attr)[1].raw, 36)[0]
