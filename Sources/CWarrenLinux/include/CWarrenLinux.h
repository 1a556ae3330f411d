#ifndef CWARREN_LINUX_H
#define CWARREN_LINUX_H

#include <stddef.h>

/// Opens /dev/net/tun and attaches it to the TUN interface `name` (IFF_TUN | IFF_NO_PI),
/// creating it if needed. Writes the kernel's interface name (at most 16 bytes with NUL)
/// to `actual_name`. Returns the file descriptor, or -errno.
int cwarren_tun_open(const char *name, char *actual_name, size_t actual_name_len);

#endif
