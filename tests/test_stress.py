"""Cross-process stress: 2 producer and 2 consumer processes (spawn) share one
small ring by path, so it wraps thousands of times. Every message carries its
producer, sequence number and a CRC-32 of its body; the parent checks that each
was delivered exactly once, intact, and in per-producer order as seen by each
consumer. Workers live in _helpers.py.
"""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections import Counter

import pytest
from _helpers import reap, rec_size, stress_consumer, stress_plan, stress_producer

from ringbuffer import RingBuffer

PRODUCERS = 2
CONSUMERS = 2
PER_PRODUCER = 20_000
FILLERS_EVERY = 10  # a 1..8-byte filler message after every 10th data message
RING_SIZE = 64 * 1024
TIMEOUT = 120  # seconds for the whole run; a hang fails instead of blocking the suite


@pytest.mark.parametrize(
    ("ring_size", "producer_batches", "consumer_batches"),
    [
        (RING_SIZE, (1, 1), (1, 1)),
        (RING_SIZE, (16, 16), (32, 32)),
        (RING_SIZE, (1, 8), (1, 16)),
        (4096, (1, 4), (1, 4)),  # the minimum: at most a few messages fit, constant full/empty races
    ],
    ids=["single", "batched", "mixed", "mixed-4k-ring"],
)
def test_two_producers_two_consumers_exactly_once(tmp_path, ring_size, producer_batches, consumer_batches):
    ctx = multiprocessing.get_context("spawn")
    path = str(tmp_path / "stress.ring")
    RingBuffer(path, ring_size).close()

    plans = [stress_plan(p, PER_PRODUCER, FILLERS_EVERY) for p in range(PRODUCERS)]
    expected_total = sum(len(plan) for plan in plans)
    expected_fillers = {p: sum(1 for m in plans[p] if len(m) <= 8) for p in range(PRODUCERS)}
    expected_bytes = sum(rec_size(len(m)) for plan in plans for m in plan)
    assert min(len(m) for plan in plans for m in plan) == 1
    assert max(len(m) for plan in plans for m in plan) == 2000
    del plans

    total = ctx.Value("q", 0)
    start = ctx.Barrier(PRODUCERS + CONSUMERS)
    deadline = time.time() + TIMEOUT
    outs = [str(tmp_path / f"consumer{c}.pickle") for c in range(CONSUMERS)]
    procs = [
        ctx.Process(
            target=stress_producer,
            args=(path, p, PER_PRODUCER, FILLERS_EVERY, producer_batches[p], deadline, start),
            name=f"producer{p}",
        )
        for p in range(PRODUCERS)
    ] + [
        ctx.Process(
            target=stress_consumer,
            args=(path, c, total, expected_total, consumer_batches[c], deadline, start, outs[c]),
            name=f"consumer{c}",
        )
        for c in range(CONSUMERS)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(max(1.0, deadline + 10 - time.time()))
    finally:
        reap(procs, f"{TIMEOUT} s")

    seen_all: list[tuple[int, int]] = []
    fillers = Counter()
    for c, out in enumerate(outs):
        with open(out, "rb") as f:
            seen, consumer_fillers, errors = pickle.load(f)
        assert errors == [], f"consumer {c}: {errors}"
        # each consumer sees each producer's messages in strictly increasing order
        last = {}
        for producer, seq in seen:
            assert seq > last.get(producer, -1), (
                f"consumer {c}: producer {producer} seq {seq} after {last[producer]}"
            )
            last[producer] = seq
        seen_all.extend(seen)
        print(f"consumer {c}: {len(seen)} data messages, fillers {consumer_fillers}")
        fillers.update(consumer_fillers)

    counts = Counter(seen_all)
    duplicates = [k for k, v in counts.items() if v > 1]
    assert duplicates == [], f"delivered more than once: {duplicates[:10]}"
    missing = [(p, s) for p in range(PRODUCERS) for s in range(PER_PRODUCER) if (p, s) not in counts]
    assert missing == [], f"never delivered: {missing[:10]} ({len(missing)} in all)"
    assert len(seen_all) == PRODUCERS * PER_PRODUCER
    assert dict(fillers) == expected_fillers
    assert total.value == expected_total

    with RingBuffer.open(path) as rb:
        head, tail = rb.positions()
        assert head == tail == expected_bytes
        assert head > 100 * ring_size  # wrapped many times
        assert rb.try_read() is None
