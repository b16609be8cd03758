/* Reads one array message from a ring (what RingBuffer.put_array writes: a
 * .npy file, docs/format.md "Array messages") and prints its shape, dtype,
 * order and the sum of its elements; with --values also every element, in
 * C (row-major) index order whatever the message's order.
 *
 *   array_reader [--values] RING_PATH [TIMEOUT_MS]
 *
 * It decodes the common case: a descr of one little- or big-endian integer
 * (i1 to i8, u1 to u8), float (f4, f8) or bool (b1), C or Fortran order, any
 * number of dimensions (up to 64). Anything else (structured, complex,
 * strings, datetimes, half floats) is refused with a message saying so.
 * The message is read in place (rb_peek_wait) and consumed in every case,
 * as get_array does. Exit status: 0 read; 1 not an array, or one this
 * example does not decode; 2 ring error; 3 no message within TIMEOUT_MS
 * (default 10000); 64 usage.
 *
 * Build it like examples/hello.c, e.g. against the installed package:
 *   cc examples/array_reader.c $(pkg-config --cflags --libs ringbuf) -o array_reader
 * (tests/c builds it with the tests' warnings; tests/test_array.py runs it).
 */
#include <ringbuf.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIMS 64

struct npy {
    char byteorder; /* '<', '>' or '|' */
    char kind;      /* 'b', 'i', 'u' or 'f' */
    size_t itemsize;
    int fortran;
    int ndim;
    size_t shape[MAX_DIMS];
    size_t count; /* elements */
    const unsigned char *data;
};

/* Why the message was refused, for the caller's one error line. */
static char why[160];

static int refuse(const char *text)
{
    snprintf(why, sizeof why, "%s", text);
    return -1;
}

static uint64_t load_le(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static const char *skip_spaces(const char *s)
{
    while (*s == ' ')
        s++;
    return s;
}

/* A quoted string of at most cap - 1 characters into out; NULL if s does
 * not start with one (a structured descr is a list: refused here). */
static const char *parse_string(const char *s, char *out, size_t cap)
{
    if (*s != '\'')
        return NULL;
    size_t n = 0;
    for (s++; *s != '\''; s++) {
        if (*s == '\0' || *s == '\\' || n + 1 >= cap)
            return NULL;
        out[n++] = *s;
    }
    out[n] = '\0';
    return s + 1;
}

/* "(2, 3)", "(5,)" or "()": the shape's dimensions, each checked for overflow. */
static const char *parse_shape(const char *s, struct npy *a)
{
    if (*s++ != '(')
        return NULL;
    a->ndim = 0;
    for (;;) {
        s = skip_spaces(s);
        if (*s == ')')
            return s + 1;
        if (*s < '0' || *s > '9' || a->ndim == MAX_DIMS)
            return NULL;
        size_t d = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
            if (d > (SIZE_MAX - 9) / 10)
                return NULL;
            d = d * 10 + (size_t)(*s - '0');
        }
        a->shape[a->ndim++] = d;
        s = skip_spaces(s);
        if (*s == ',')
            s++;
        else if (*s != ')')
            return NULL;
    }
}

/* The descr of one scalar type, e.g. "<f4": byte order, kind, item size. */
static int parse_descr(const char *descr, struct npy *a)
{
    if (strlen(descr) != 3 || strchr("<>|", descr[0]) == NULL || strchr("biuf", descr[1]) == NULL ||
        strchr("1248", descr[2]) == NULL) {
        snprintf(why, sizeof why,
                 "unsupported dtype '%s' (this example reads b1, i1 to i8, u1 to u8, f4 and f8)", descr);
        return -1;
    }
    a->byteorder = descr[0];
    a->kind = descr[1];
    a->itemsize = (size_t)(descr[2] - '0');
    if ((a->kind == 'b' && a->itemsize != 1) || (a->kind == 'f' && a->itemsize < 4)) {
        snprintf(why, sizeof why, "unsupported dtype '%s'", descr);
        return -1;
    }
    return 0;
}

/* The header dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * (numpy writes the keys in this order, but any order is read). */
static int parse_dict(const char *s, struct npy *a)
{
    int seen = 0;
    s = skip_spaces(s);
    if (*s++ != '{')
        return refuse("the header is not a dict");
    for (;;) {
        char key[16], descr[16];
        s = skip_spaces(s);
        if (*s == '}')
            break;
        if ((s = parse_string(s, key, sizeof key)) == NULL)
            return refuse("a header key is not a short string");
        s = skip_spaces(s);
        if (*s++ != ':')
            return refuse("no ':' after a header key");
        s = skip_spaces(s);
        if (strcmp(key, "descr") == 0) {
            if ((s = parse_string(s, descr, sizeof descr)) == NULL)
                return refuse("unsupported dtype: a structured or unknown descr");
            if (parse_descr(descr, a) != 0)
                return -1;
            seen |= 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            a->fortran = strncmp(s, "True", 4) == 0;
            if (!a->fortran && strncmp(s, "False", 5) != 0)
                return refuse("fortran_order is neither True nor False");
            s += a->fortran ? 4 : 5;
            seen |= 2;
        } else if (strcmp(key, "shape") == 0) {
            if ((s = parse_shape(s, a)) == NULL)
                return refuse("the shape is not a tuple of non-negative integers");
            seen |= 4;
        } else {
            return refuse("an unknown header key");
        }
        s = skip_spaces(s);
        if (*s == ',')
            s++;
        else if (*s != '}')
            return refuse("no ',' or '}' after a header value");
    }
    return seen == 7 ? 0 : refuse("the header lacks descr, fortran_order or shape");
}

/* Checks the message and fills *a. Returns 0, or -1 with why[] set. */
static int parse_npy(const unsigned char *msg, size_t len, struct npy *a)
{
    if (len < 10 || memcmp(msg, "\x93NUMPY", 6) != 0)
        return refuse("not an array message (no .npy magic)");
    unsigned major = msg[6], minor = msg[7];
    size_t start = major == 1 ? 10 : 12; /* after the header length: 2 bytes in 1.0, 4 in 2.0 and 3.0 */
    if ((major < 1 || major > 3) || minor != 0 || len < start)
        return refuse("not an array message (unknown .npy version)");
    size_t hlen = (size_t)load_le(msg + 8, start - 8);
    if (hlen > len - start)
        return refuse("not an array message (the header runs past the message)");
    /* The header is text (Latin-1 or UTF-8) padded with spaces and a
     * newline; a NUL-terminated copy makes it a C string. */
    char *text = malloc(hlen + 1);
    if (text == NULL)
        return refuse("out of memory");
    memcpy(text, msg + start, hlen);
    text[hlen] = '\0';
    int rc = parse_dict(text, a);
    free(text);
    if (rc != 0)
        return -1;
    size_t count = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] != 0 && count > SIZE_MAX / a->shape[d])
            return refuse("not an array message (the shape overflows)");
        count *= a->shape[d];
    }
    size_t data_len = len - start - hlen;
    if (count > SIZE_MAX / a->itemsize || count * a->itemsize != data_len)
        return refuse("not an array message (the data is not as long as the shape says)");
    a->count = count;
    a->data = msg + start + hlen;
    return 0;
}

/* Element i of the data, in memory order, as the bits of its type. The
 * data may sit at any alignment in another writer's .npy: read bytes. */
static uint64_t bits(const struct npy *a, size_t i)
{
    const unsigned char *p = a->data + i * a->itemsize;
    unsigned char le[8];
    for (size_t k = 0; k < a->itemsize; k++)
        le[k] = a->byteorder == '>' ? p[a->itemsize - 1 - k] : p[k];
    return load_le(le, a->itemsize);
}

static int64_t as_signed(uint64_t v, size_t size)
{
    if (size < 8 && (v >> (8 * size - 1)) & 1)
        v |= ~(uint64_t)0 << (8 * size); /* sign-extend */
    int64_t s;
    memcpy(&s, &v, sizeof s);
    return s;
}

static double as_double(uint64_t v, size_t size)
{
    if (size == 4) {
        uint32_t w = (uint32_t)v;
        float f;
        memcpy(&f, &w, sizeof f);
        return f;
    }
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

static void print_value(const struct npy *a, uint64_t v)
{
    if (a->kind == 'f')
        printf(" %.17g", as_double(v, a->itemsize));
    else if (a->kind == 'i')
        printf(" %" PRId64, as_signed(v, a->itemsize));
    else
        printf(" %" PRIu64, a->kind == 'b' ? (uint64_t)(v != 0) : v);
}

/* Prints shape, dtype, order and the sum; then, with values, the elements
 * in C index order (a Fortran-order message is walked with its strides). */
static void report(const struct npy *a, int values)
{
    printf("shape (");
    for (int d = 0; d < a->ndim; d++)
        printf(d ? ", %zu" : "%zu", a->shape[d]);
    printf(a->ndim == 1 ? ",)\n" : ")\n");
    printf("dtype %c%c%zu\n", a->byteorder, a->kind, a->itemsize);
    printf("order %c\n", a->fortran ? 'F' : 'C');

    uint64_t isum = 0; /* integers and bools: modulo 2^64, as numpy's 64-bit sum */
    double fsum = 0;
    for (size_t i = 0; i < a->count; i++) {
        uint64_t v = bits(a, i);
        if (a->kind == 'f')
            fsum += as_double(v, a->itemsize);
        else if (a->kind == 'i')
            isum += (uint64_t)as_signed(v, a->itemsize);
        else
            isum += a->kind == 'b' ? (v != 0) : v;
    }
    if (a->kind == 'f')
        printf("sum %.17g\n", fsum);
    else if (a->kind == 'i')
        printf("sum %" PRId64 "\n", as_signed(isum, 8));
    else
        printf("sum %" PRIu64 "\n", isum);
    if (!values)
        return;

    /* The element at C index (i0, ..., in-1) sits at sum(i_d * stride_d). */
    size_t stride[MAX_DIMS], idx[MAX_DIMS] = {0};
    size_t step = 1;
    for (int k = 0; k < a->ndim; k++) {
        int d = a->fortran ? k : a->ndim - 1 - k;
        stride[d] = step;
        step *= a->shape[d];
    }
    printf("values");
    for (size_t n = 0; n < a->count; n++) {
        size_t at = 0;
        for (int d = 0; d < a->ndim; d++)
            at += idx[d] * stride[d];
        print_value(a, bits(a, at));
        for (int d = a->ndim - 1; d >= 0 && ++idx[d] == a->shape[d]; d--)
            idx[d] = 0;
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    int values = argc > 1 && strcmp(argv[1], "--values") == 0;
    if (argc < 2 + values) {
        fprintf(stderr, "usage: array_reader [--values] RING_PATH [TIMEOUT_MS]\n");
        return 64;
    }
    const char *path = argv[1 + values];
    long timeout_ms = argc > 2 + values ? strtol(argv[2 + values], NULL, 10) : 10000;

    rb_ring *rb;
    int rc = rb_open(path, &rb);
    if (rc != RB_OK) {
        fprintf(stderr, "array_reader: rb_open %s: %s\n", path, rb_strerror(rc));
        return 2;
    }
    const void *msg;
    size_t len;
    do
        rc = rb_peek_wait(rb, &msg, &len, (int64_t)timeout_ms * 1000000);
    while (rc == RB_EINTR);
    if (rc != RB_OK) {
        fprintf(stderr, "array_reader: rb_peek_wait: %s\n", rb_strerror(rc));
        rb_close(rb);
        return rc == RB_ETIMEDOUT ? 3 : 2;
    }
    /* The message stays valid, and the read turn ours, until rb_release:
     * decode it in place. */
    struct npy a;
    int status = 0;
    if (parse_npy(msg, len, &a) == 0) {
        report(&a, values);
    } else {
        fprintf(stderr, "array_reader: %s\n", why);
        status = 1;
    }
    rb_release(rb);
    rb_close(rb);
    return status;
}
