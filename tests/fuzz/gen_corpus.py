"""Write the fuzzing seed corpus (tests/fuzz/corpus/): python tests/fuzz/gen_corpus.py.

Each seed is an input for fuzz_ring.c, whose header comment describes the
format: a mode byte (base ring number, or RAW), four parameter bytes, then
patch operations. The numbers below mirror fuzz_ring.c's enums; keep them in
step. RAW seeds are real ring files made by the installed ringbuffer package.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

# enum base
EMPTY, MESSAGES, WRAPPED, BUSY_HEAD, DISCARD_HEAD, PEEKING, FULL, DRAINED = range(8)
# enum gbase (mode 0xE0 + n): rings with consumer groups
GROUPS, NO_DEFAULT, OVERWRITE, LAZY = range(0xE0, 0xE4)
RAW = 0xF0
# fields[] (by index)
FIELDS = [
    "magic", "version", "header_size", "capacity", "max_message", "state", "flags", "created_ns",
    "tail", "head", "reclaim_turn", "turn_seq", "turn_waiters", "data_seq", "data_waiters", "space_seq",
    "space_waiters", "slot_count", "slot_size", "slots_used", "join_tail", "release_end",
    "slot0_gen", "slot0_parked0", "slot0_intent0_start", "slot0_intent0_end",
    "slot1_gen", "slot1_intent0_start", "slot1_intent0_end",
    "slot0_written", "slot0_shared_written_bytes", "slot1_read", "slot1_shared_parked_ns",
    "g0_head", "g0_turn", "g0_gen", "g0_lost_pending", "g0_kind", "g1_head", "g1_gen", "g1_kind",
    "g1_owner", "g1_name", "g1_turn", "groups_used", "slot0_group", "slot1_group_gen",
]  # fmt: skip
WIDTH = {
    "magic": 8, "capacity": 8, "max_message": 8, "created_ns": 8, "tail": 8, "head": 8,
    "join_tail": 8, "release_end": 8, "slot0_intent0_start": 8, "slot0_intent0_end": 8,
    "g0_head": 8, "g0_lost_pending": 8, "g1_head": 8, "g1_name": 8,
    "slot1_intent0_start": 8, "slot1_intent0_end": 8, "slot0_written": 8, "slot0_shared_written_bytes": 8,
    "slot1_read": 8, "slot1_shared_parked_ns": 8,
}  # fmt: skip
# enum op
HEADER_BYTES, DATA_BYTES, FIELD_SET, FIELD_ADD, RECORD, RESIZE, SHIFT, FILL = range(8)
BIT7 = 0x80
# record flags
BUSY, DISCARD = 1, 2


def params(rd=128, many=0x33, wr=5, flags=1):
    """rd: read buffer (>= 128: max, else 8*rd bytes); many: read_many (size 300*(many>>4), count many&7);
    wr: write lengths; flags: bit 0 release (else cancel), 1 shutdown, 2 abort, 3 leave BUSY."""
    return bytes([rd, many, wr, flags])


def field_set(name, value):
    return bytes([FIELD_SET, FIELDS.index(name)]) + value.to_bytes(WIDTH.get(name, 4), "little")


def field_add(name, delta, times8=False):
    return bytes([FIELD_ADD | (BIT7 if times8 else 0), FIELDS.index(name), delta & 0xFF])


def record(k, length, flags=0, writer=0, ours=False):
    return bytes([RECORD | (BIT7 if ours else 0), k]) + struct.pack("<IBB", length, flags, writer)


def data_bytes(offset, data):
    return bytes([DATA_BYTES]) + struct.pack("<HB", offset, len(data) - 1) + data


def header_bytes(offset, data):
    return bytes([HEADER_BYTES]) + struct.pack("<HB", offset, len(data) - 1) + data


def resize_data(shift):
    """File = header + (4096 << shift) bytes (shift 0-4)."""
    return bytes([RESIZE, 130 + shift])


def resize_short(n64):
    """File = n64 * 64 bytes (n64 < 128)."""
    return bytes([RESIZE, n64])


def shift(k, high=False):
    return bytes([SHIFT | (BIT7 if high else 0)]) + struct.pack("<H", k)


def fill(offset, n, byte):
    return bytes([FILL]) + struct.pack("<HHB", offset, n, byte)


def seeds():
    """(name, base ring, parameters, patch operations)"""
    yield "empty", EMPTY, params(), b""
    yield "messages", MESSAGES, params(), b""
    yield "messages-small-buffers", MESSAGES, params(rd=2, many=0x13, flags=0), b""
    yield "wrapped", WRAPPED, params(flags=4), b""
    yield "busy-head", BUSY_HEAD, params(), b""
    yield "discard-head", DISCARD_HEAD, params(flags=2), b""
    yield "peeking", PEEKING, params(), b""
    yield "full", FULL, params(wr=200, flags=8), b""
    yield "drained", DRAINED, params(wr=255), b""
    yield "magic", MESSAGES, params(), field_set("magic", int.from_bytes(b"RINGBUG\0", "little"))
    yield "version-other", MESSAGES, params(), field_set("version", 1)
    grown = field_set("capacity", 8192) + field_set("max_message", 4096) + resize_data(1)
    yield "capacity-8192", MESSAGES, params(), grown
    yield "capacity-odd", EMPTY, params(), field_set("capacity", 6000)
    yield "truncated", MESSAGES, params(), resize_short(64)
    yield "tail-ahead", MESSAGES, params(), field_add("tail", 1, times8=True)
    yield "head-past-tail", WRAPPED, params(), field_add("head", 127, times8=True)
    yield "positions-high", WRAPPED, params(), shift(0xFFFF, high=True)
    yield "record-len-zero", MESSAGES, params(), record(0, 0, writer=1)
    yield "record-len-huge", MESSAGES, params(), record(2, 2049)
    yield "record-flags", MESSAGES, params(), record(0, 1, flags=0x80)
    yield "record-past-tail", BUSY_HEAD, params(), record(0, 2000)
    yield "record-busy-ours", EMPTY, params(), record(0, 40, BUSY, ours=True) + field_set("tail", 48)
    yield "record-discard", MESSAGES, params(), record(0, 1, DISCARD)
    yield "reclaim-lock-held", FULL, params(), field_set("reclaim_turn", 12345)
    # Crash recovery (stall timeout 0 in the harness: it acts at once).
    gap = field_set("tail", 64) + field_set("slots_used", 2)
    yield (
        "gap-with-dead-intent",
        EMPTY,
        params(),
        gap + field_set("slot1_intent0_start", 0) + field_set("slot1_intent0_end", 64),
    )
    yield "gap-without-intent", EMPTY, params(), gap
    yield (
        "gap-stale-intents",
        EMPTY,
        params(),
        gap
        + field_set("slot1_intent0_start", 0)
        + field_set("slot1_intent0_end", 24)
        + field_set("slot0_intent0_start", 0)
        + field_set("slot0_intent0_end", 64),
    )
    dead_turn = field_set("g0_turn", 1 | 1 << 9) + field_set("slots_used", 2)
    yield "dead-reader-turn", MESSAGES, params(), dead_turn
    dead_lock = field_set("reclaim_turn", 1 | 1 << 9) + field_set("slots_used", 2)
    yield "dead-reclaimer-release", LAZY, params(), dead_lock + field_set("release_end", 16)
    yield "dead-reclaimer-bad-release", LAZY, params(), dead_lock + field_set("release_end", 1 << 40)
    # Consumer groups (format 4): forged group table entries.
    yield "groups", GROUPS, params(), b""
    yield "groups-earliest-remove", GROUPS, params(wr=4, flags=5), b""
    yield "no-default-group", NO_DEFAULT, params(wr=2), b""
    yield "no-default-remove-default", NO_DEFAULT, params(wr=4), b""
    yield "overwrite", OVERWRITE, params(), b""
    yield "lazy-full-of-read-records", LAZY, params(), b""
    yield "group-head-past-tail", GROUPS, params(), field_set("g0_head", 1 << 40)
    yield "group-head-unaligned", GROUPS, params(), field_add("g0_head", 3)
    yield "group-head-behind-head", LAZY, params(), field_set("head", 4096) + field_set("tail", 8192)
    yield "group1-head-forged", GROUPS, params(wr=1), field_set("g1_head", 5)
    yield "group-gen-even", GROUPS, params(), field_add("g0_gen", 1)
    yield "group1-kind-bad", GROUPS, params(), field_set("g1_kind", 77)
    unterminated = field_set("g1_name", int.from_bytes(b"auditXYZ", "little"))
    yield "group1-name-unterminated", GROUPS, params(), unterminated
    yield "groups-used-zero", GROUPS, params(), field_set("groups_used", 0)
    yield "groups-used-huge", GROUPS, params(), field_set("groups_used", 1 << 20)
    yield "group1-turn-dead", GROUPS, params(), field_set("g1_turn", 1 | 1 << 9) + field_set("slots_used", 2)
    yield "overwrite-lost-forged", OVERWRITE, params(), field_set("g0_lost_pending", (1 << 64) - 1)
    yield "overwrite-head-tagged", OVERWRITE, params(), field_add("g0_head", 1)
    yield "ephemeral-owner-forged", NO_DEFAULT, params(), field_set("g1_owner", 0xFFFFFF)
    yield "join-tail-forged", GROUPS, params(wr=200), field_set("join_tail", (1 << 63) - 8)
    yield "parked-leftover", EMPTY, params(), field_set("data_waiters", 3) + field_set("slot0_parked0", 3)
    yield (
        "counters-absurd",
        MESSAGES,
        params(),
        field_set("slot0_written", (1 << 64) - 3)
        + field_set("slot0_shared_written_bytes", (1 << 64) - 1)
        + field_set("slot1_read", 1 << 63)
        + field_set("slots_used", 2),
    )
    yield "garbage-past-tail", EMPTY, params(), fill(0, 64, 0x41)
    yield "state-zero", MESSAGES, params(), header_bytes(32, b"\0\0\0\0")
    yield "data-bytes", WRAPPED, params(), data_bytes(4090, b"\xff" * 12)
    for name, contents in raw_files():
        yield name, RAW, params(), contents


def raw_files():
    """Whole ring files written by the library (through the Python binding)."""
    try:
        from ringbuffer import RingBuffer
    except ImportError:
        sys.exit("gen_corpus.py: the ringbuffer package is needed for the RAW seeds (pip install -e .)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ring")
        with RingBuffer(path, 4096) as rb:
            empty = open(path, "rb").read()
            rb.write_many([b"x", b"hello world", bytes(300)])
            full = open(path, "rb").read()
        with RingBuffer(path, 4096, remove=True, overwrite=True, default_group=False) as rb:
            sub = RingBuffer.open(path, group="audit")
            for _ in range(40):
                rb.write(bytes(200))
            overwritten = open(path, "rb").read()
            sub.close()
    yield "raw-empty", empty
    yield "raw-messages", full
    yield "raw-overwrite-group-behind", overwritten
    yield "raw-short", full[:100]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    for name, base, prm, ops in seeds():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([base]) + prm + ops)
    print(f"gen_corpus.py: {len(os.listdir(OUT))} seeds in {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
