"""A consumer coroutine: an asyncio program reads what another process
writes, without a thread and without polling.

    python examples/asyncio_consumer.py
"""

import asyncio
import multiprocessing as mp
import os
import tempfile

from ringbuffer import RingBuffer


def produce(path):
    with RingBuffer.open(path) as rb:
        for i in range(5):
            rb.put(f"reading {i}".encode())
        rb.put(b"stop")


async def consume(rb):
    while (msg := await rb.aget(timeout=10)) != b"stop":  # the loop runs other tasks meanwhile
        print("got", msg.decode())


async def main(path):
    with RingBuffer(path, 1 << 20) as rb:
        producer = mp.Process(target=produce, args=(path,))
        producer.start()
        await consume(rb)
        producer.join()


if __name__ == "__main__":
    path = os.path.join(tempfile.mkdtemp(dir="/dev/shm"), "readings.ring")
    try:
        asyncio.run(main(path))
    finally:
        os.remove(path)
        os.rmdir(os.path.dirname(path))
