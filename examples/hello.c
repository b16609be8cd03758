/* A C producer and consumer in one program. Build against the installed
 * Python package:
 *   INC=$(python -c 'import ringbuffer; print(ringbuffer.get_include())')
 *   LIB=$(python -c 'import ringbuffer; print(ringbuffer.get_library_dir())')
 *   cc examples/hello.c -I"$INC" -L"$LIB" -Wl,-rpath,"$LIB" -lringbuf -o hello
 * or against `make -C csrc install PREFIX=...` with pkg-config. */
#include <ringbuf.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/tmp/hello.ring";
    rb_ring *rb;
    int rc = rb_create(path, 1 << 16, RB_REMOVE, &rb);
    if (rc != RB_OK) {
        fprintf(stderr, "rb_create: %s\n", rb_strerror(rc));
        return 1;
    }
    const char *msg = "hello from C";
    rc = rb_write(rb, msg, strlen(msg));
    if (rc != RB_OK) {
        fprintf(stderr, "rb_write: %s\n", rb_strerror(rc));
        return 1;
    }
    char buf[256];
    size_t len;
    rc = rb_read(rb, buf, sizeof buf, &len);
    if (rc != RB_OK) {
        fprintf(stderr, "rb_read: %s\n", rb_strerror(rc));
        return 1;
    }
    printf("%.*s (capacity %zu, max message %zu)\n", (int)len, buf, rb_capacity(rb), rb_max_message_size(rb));
    rb_close(rb);
    return 0;
}
