"""Basic use: create a ring, write messages, read them back."""

import os
import tempfile

from ringbuffer import BufferEmpty, RingBuffer

path = os.path.join(tempfile.gettempdir(), "basic.ring")

with RingBuffer(path, 1 << 16, remove=True) as rb:  # 64 KiB; remove=True replaces an old file
    print(f"capacity {rb.capacity} bytes, messages up to {rb.max_message_size} bytes")
    rb.write(b"hello")
    rb.write(bytearray(b"world"))
    print(rb.read(), rb.read())
    try:
        rb.read()
    except BufferEmpty:
        print("empty, as expected")
os.remove(path)
