"""A producer process and a consumer process sharing one ring by path."""

import multiprocessing as mp
import os
import tempfile

from ringbuffer import RingBuffer

COUNT = 100_000


def producer(path: str) -> None:
    with RingBuffer.open(path) as rb:
        for i in range(COUNT):
            msg = f"message {i}".encode()
            while not rb.try_write(msg):  # the ring is full: the consumer will make room
                pass


def consumer(path: str) -> None:
    with RingBuffer.open(path) as rb:
        for i in range(COUNT):
            msg = rb.try_read()
            while msg is None:
                msg = rb.try_read()
            assert msg == f"message {i}".encode(), msg
    print(f"consumer received {COUNT} messages in order")


if __name__ == "__main__":
    path = os.path.join(tempfile.gettempdir(), "pc.ring")
    RingBuffer(path, 1 << 20, remove=True).close()
    procs = [mp.Process(target=producer, args=(path,)), mp.Process(target=consumer, args=(path,))]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    os.remove(path)
