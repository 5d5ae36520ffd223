#!/usr/bin/env python3
"""What one cold read of a BPF map value costs, by the map's size and where its memory is.

The flow cache's hit path reads one 64-byte entry picked by the flow hash; over 10,000
flows that line is cold. This probe isolates that read: an XDP program reads the
8-byte word at the start of entry `i` of a map, `i` taken from the frame, and returns
XDP_PASS. It is run with BPF_PROG_RUN, repeat 1, over `--flows` indices cycling at
random (cold) and over one index (hot), interleaved with an XDP_PASS program run the same
way; the figures are medians over XDP_PASS.

Layouts (64-byte values, `--mib` MiB in all):
- array: one BPF_MAP_TYPE_ARRAY (vmalloc'd, 4 KiB pages), as the flow cache is today;
- array-of-maps: BPF_MAP_TYPE_ARRAY_OF_MAPS over inner arrays of 448 entries (28 KiB
  each, kmalloc'd, so in the kernel's direct map and its large pages).

Run as root: python3 perf-lab/tools/cold_read.py [--mib 4] [--flows 10000]
"""

import argparse
import ctypes
import os
import random
import statistics
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bpf_raw import bpf, insn, load_xdp, test_run  # noqa: E402

BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM = 0, 2
MAP_ARRAY, MAP_ARRAY_OF_MAPS = 2, 12
XDP_PASS = 2
VALUE = 64
INNER_ENTRIES = 448  # 28 KiB of values: the array and its header stay under 32 KiB
FRAME = 64

def map_create(kind, key, value, entries, inner_fd=0):
    attr = bytearray(72)
    struct.pack_into("<IIIIII", attr, 0, kind, key, value, entries, 0, inner_fd)
    return bpf(BPF_MAP_CREATE, attr)[0]


def map_update(fd, key, value):
    k = ctypes.create_string_buffer(struct.pack("<I", key))
    v = ctypes.create_string_buffer(value, len(value))
    attr = bytearray(32)
    struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0)
    bpf(BPF_MAP_UPDATE_ELEM, attr)


def ld_map(dst, fd):
    # ld_imm64 with src = BPF_PSEUDO_MAP_FD
    return insn(0x18, dst, 1, 0, fd) + insn(0, 0, 0, 0, 0)


MOV_IMM, MOV_REG, EXIT, CALL = 0xB7, 0xBF, 0x95, 0x85
LDX_W, LDX_DW, STX_W = 0x61, 0x79, 0x63
ADD_IMM, AND_IMM, RSH_IMM = 0x07, 0x57, 0x77
JGT_REG, JEQ_IMM = 0x2D, 0x15
LOOKUP = 1


def program(outer_fd, nested):
    """r = frame[0..4] as index; read map[index] (through the outer array if nested)."""
    p = [
        insn(LDX_W, 2, 1, 0),        # r2 = ctx->data
        insn(LDX_W, 3, 1, 4),        # r3 = ctx->data_end
        insn(MOV_REG, 4, 2),
        insn(ADD_IMM, 4, imm=4),
        insn(JGT_REG, 4, 3, off=0),  # patched below: if data + 4 > end goto out
        insn(LDX_W, 6, 2, 0),        # r6 = index
    ]
    body = []
    if nested:
        body += [
            insn(MOV_REG, 7, 6),
            insn(RSH_IMM, 7, imm=16),          # outer index in the high half
            insn(STX_W, 10, 7, -4),
            ld_map(1, outer_fd),
            insn(MOV_REG, 2, 10), insn(ADD_IMM, 2, imm=-4),
            insn(CALL, imm=LOOKUP),
            insn(JEQ_IMM, 0, off=0),           # patched: if !inner goto out
            insn(MOV_REG, 1, 0),
            insn(AND_IMM, 6, imm=0xFFFF),      # inner index in the low half
        ]
    else:
        body += [ld_map(1, outer_fd)]
    body += [
        insn(STX_W, 10, 6, -8),
        insn(MOV_REG, 2, 10), insn(ADD_IMM, 2, imm=-8),
        insn(CALL, imm=LOOKUP),
        insn(JEQ_IMM, 0, off=1),
        insn(LDX_DW, 3, 0, 0),                 # the read itself
        insn(MOV_IMM, 0, imm=XDP_PASS),
        insn(EXIT),
    ]
    code = bytearray(b"".join(p + body))
    n = len(code) // 8
    # out == the final mov r0, PASS (index n - 2)
    for i in range(n):
        op = code[i * 8]
        if op in (JGT_REG, JEQ_IMM) and struct.unpack_from("<h", code, i * 8 + 2)[0] == 0:
            struct.pack_into("<h", code, i * 8 + 2, (n - 2) - (i + 1))
    return bytes(code)


def load(code):
    return load_xdp(code)


def pass_program():
    return load(insn(MOV_IMM, 0, imm=XDP_PASS) + insn(EXIT))


def run_once(fd, frame):
    return test_run(fd, frame, FRAME, 1)


def frames(indices):
    out = []
    for i in indices:
        f = ctypes.create_string_buffer(FRAME)
        struct.pack_into("<I", f, 0, i)
        out.append(f)
    return out


def measure(fd, pass_fd, pool, calls):
    diffs = []
    for n in range(calls):
        f = pool[n % len(pool)]
        diffs.append(run_once(fd, f) - run_once(pass_fd, f))
    return statistics.median(diffs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    entries = args.mib * (1 << 20) // VALUE
    rng = random.Random(7)

    flat = map_create(MAP_ARRAY, 4, VALUE, entries)
    inners = (entries + INNER_ENTRIES - 1) // INNER_ENTRIES
    template = map_create(MAP_ARRAY, 4, VALUE, INNER_ENTRIES)
    outer = map_create(MAP_ARRAY_OF_MAPS, 4, 4, inners, inner_fd=template)
    for i in range(inners):
        map_update(outer, i, struct.pack("<I", map_create(MAP_ARRAY, 4, VALUE, INNER_ENTRIES)))

    picks = rng.sample(range(entries), min(args.flows, entries))
    flat_cold = frames(picks)
    nested_cold = frames([(p // INNER_ENTRIES) << 16 | (p % INNER_ENTRIES) for p in picks])
    flat_fd, nested_fd, pass_fd = load(program(flat, False)), load(program(outer, True)), pass_program()

    rows = {"array, cold": [], "array, hot": [], "array-of-maps, cold": [], "array-of-maps, hot": []}
    for _ in range(args.rounds):
        rows["array, cold"].append(measure(flat_fd, pass_fd, flat_cold, args.calls))
        rows["array, hot"].append(measure(flat_fd, pass_fd, flat_cold[:1], args.calls // 4))
        rows["array-of-maps, cold"].append(measure(nested_fd, pass_fd, nested_cold, args.calls))
        rows["array-of-maps, hot"].append(measure(nested_fd, pass_fd, nested_cold[:1], args.calls // 4))
    print(f"{args.mib} MiB of 64-byte values, {len(picks)} entries cycling (cold) or one (hot); "
          f"ns over XDP_PASS, median of {args.rounds} rounds")
    for name, values in rows.items():
        print(f"  {name:22} {statistics.median(values):7.0f}   rounds: {values}")


if __name__ == "__main__":
    main()
