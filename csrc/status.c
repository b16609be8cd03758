/*
 * status.c - status messages and the library version.
 */
#include "ringbuf.h"

#define RB_STR2(x) #x
#define RB_STR(x) RB_STR2(x)

RB_API int rb_version(void) { return RB_VERSION_NUMBER; }

RB_API const char *rb_strerror(int status)
{
    switch (status) {
    case RB_OK:
        return "success";
    case RB_EFULL:
        return "ring buffer is full";
    case RB_EEMPTY:
        return "ring buffer is empty";
    case RB_ESIZE:
        return "message size is 0 or larger than the maximum message size";
    case RB_ECLOSED:
        return "ring buffer is closed";
    case RB_ETIMEDOUT:
        return "timed out";
    case RB_ECORRUPT:
        return "not a valid ring buffer file (damaged, forged or not a ring)";
    case RB_ETRUNC:
        return "buffer too small for the message";
    case RB_EINVAL:
        return "invalid argument";
    case RB_ESYS:
        return "system call failed (see errno)";
    case RB_EINTR:
        return "interrupted by a signal";
    case RB_EVERSION:
        return "ring file of another format version than this library's (" RB_STR(RB_FORMAT_VERSION) ")";
    case RB_ELOST:
        return "messages were lost: an overwrite ring's writers reclaimed them before this consumer group read them";
    case RB_ENOGROUP:
        return "no such consumer group (removed, or the ring has no default group)";
    case RB_EGROUPS:
        return "no room for another consumer group (" RB_STR(RB_GROUPS_MAX) " per ring)";
    default:
        return "unknown ring buffer status code";
    }
}
