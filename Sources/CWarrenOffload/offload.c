#define _GNU_SOURCE
#include "CWarrenOffload.h"

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
// TUN_F_USO4/6 arrived in Linux 6.2 headers.
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

const unsigned cwarren_offload_tun_f_csum = TUN_F_CSUM;
const unsigned cwarren_offload_tun_f_tso4 = TUN_F_TSO4;
const unsigned cwarren_offload_tun_f_tso6 = TUN_F_TSO6;
const unsigned cwarren_offload_tun_f_tso_ecn = TUN_F_TSO_ECN;
const unsigned cwarren_offload_tun_f_uso4 = TUN_F_USO4;
const unsigned cwarren_offload_tun_f_uso6 = TUN_F_USO6;
const int cwarren_offload_iff_vnet_hdr = IFF_VNET_HDR;

int cwarren_offload_tun_open(const char *name, int vnet_header_size, char *actual_name, size_t actual_name_len) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) goto fail;
    if (ioctl(fd, TUNSETVNETHDRSZ, &vnet_header_size) < 0) goto fail;
    if (actual_name && actual_name_len > 0) {
        strncpy(actual_name, ifr.ifr_name, actual_name_len - 1);
        actual_name[actual_name_len - 1] = 0;
    }
    return fd;
fail:;
    int err = errno;
    close(fd);
    return -err;
}

int cwarren_offload_tun_set_offload(int fd, unsigned flags) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0 ? -errno : 0;
}

int cwarren_offload_tun_get_flags(int fd) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (ioctl(fd, TUNGETIFF, &ifr) < 0) return -errno;
    return (int)(unsigned short)ifr.ifr_flags;
}

int cwarren_offload_tun_get_vnet_header_size(int fd) {
    int size = 0;
    return ioctl(fd, TUNGETVNETHDRSZ, &size) < 0 ? -errno : size;
}

int cwarren_offload_udp_set_gro(int fd, int on) {
    return setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) < 0 ? -errno : 0;
}

int cwarren_offload_udp_gso_supported(int fd) {
    int value = 0;
    socklen_t len = sizeof value;
    return getsockopt(fd, SOL_UDP, UDP_SEGMENT, &value, &len) == 0 ? 1 : 0;
}

#define CONTROL_SPACE 64

struct cwarren_offload_batch {
    unsigned message_capacity;
    unsigned iovec_capacity;
    unsigned messages;  // begun since the reset
    unsigned iovecs;    // used since the reset
    struct mmsghdr *headers;
    struct iovec *iov;
    struct sockaddr_storage *addresses;
    unsigned char *control;
};

cwarren_offload_batch *cwarren_offload_batch_create(unsigned message_capacity, unsigned iovec_capacity) {
    if (message_capacity == 0 || iovec_capacity < message_capacity) return NULL;
    cwarren_offload_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->message_capacity = message_capacity;
    b->iovec_capacity = iovec_capacity;
    b->headers = calloc(message_capacity, sizeof *b->headers);
    b->iov = calloc(iovec_capacity, sizeof *b->iov);
    b->addresses = calloc(message_capacity, sizeof *b->addresses);
    b->control = calloc(message_capacity, CONTROL_SPACE);
    if (!b->headers || !b->iov || !b->addresses || !b->control) {
        cwarren_offload_batch_destroy(b);
        return NULL;
    }
    return b;
}

void cwarren_offload_batch_destroy(cwarren_offload_batch *b) {
    if (!b) return;
    free(b->headers);
    free(b->iov);
    free(b->addresses);
    free(b->control);
    free(b);
}

void cwarren_offload_batch_reset(cwarren_offload_batch *b) {
    b->messages = 0;
    b->iovecs = 0;
}

static socklen_t to_sockaddr(const cwarren_offload_endpoint *e, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    if (e->family == 4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(e->port);
        memcpy(&sin->sin_addr, e->address, 4);
        return sizeof *sin;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(e->port);
    memcpy(&sin6->sin6_addr, e->address, 16);
    sin6->sin6_scope_id = e->scope_id;
    return sizeof *sin6;
}

int cwarren_offload_batch_begin(cwarren_offload_batch *b, const cwarren_offload_endpoint *endpoint, uint16_t segment_size) {
    if (b->messages >= b->message_capacity || b->iovecs >= b->iovec_capacity) return -ENOBUFS;
    unsigned i = b->messages++;
    struct msghdr *m = &b->headers[i].msg_hdr;
    memset(m, 0, sizeof *m);
    m->msg_name = &b->addresses[i];
    m->msg_namelen = to_sockaddr(endpoint, &b->addresses[i]);
    m->msg_iov = &b->iov[b->iovecs];
    m->msg_iovlen = 0;
    if (segment_size > 0) {
        unsigned char *space = b->control + (size_t)i * CONTROL_SPACE;
        memset(space, 0, CMSG_SPACE(sizeof(uint16_t)));
        m->msg_control = space;
        m->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        struct cmsghdr *c = CMSG_FIRSTHDR(m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &segment_size, sizeof segment_size);
    }
    return (int)i;
}

int cwarren_offload_batch_append(cwarren_offload_batch *b, const void *base, size_t length) {
    if (b->messages == 0 || b->iovecs >= b->iovec_capacity) return -ENOBUFS;
    struct msghdr *m = &b->headers[b->messages - 1].msg_hdr;
    b->iov[b->iovecs].iov_base = (void *)base;
    b->iov[b->iovecs].iov_len = length;
    b->iovecs++;
    m->msg_iovlen++;
    return 0;
}

unsigned cwarren_offload_batch_count(const cwarren_offload_batch *b) { return b->messages; }

int cwarren_offload_batch_send(int fd, cwarren_offload_batch *b, unsigned first) {
    if (first >= b->messages) return 0;
    int n;
    do {
        n = sendmmsg(fd, b->headers + first, b->messages - first, 0);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int cwarren_offload_batch_set_receive(cwarren_offload_batch *b, unsigned index, void *base, size_t length) {
    if (index >= b->message_capacity || index >= b->iovec_capacity) return -EINVAL;
    b->iov[index].iov_base = base;
    b->iov[index].iov_len = length;
    return 0;
}

int cwarren_offload_batch_receive(int fd, cwarren_offload_batch *b, unsigned count) {
    if (count > b->message_capacity) count = b->message_capacity;
    for (unsigned i = 0; i < count; i++) {
        struct msghdr *m = &b->headers[i].msg_hdr;
        m->msg_name = &b->addresses[i];
        m->msg_namelen = sizeof b->addresses[i];
        m->msg_iov = &b->iov[i];
        m->msg_iovlen = 1;
        m->msg_control = b->control + (size_t)i * CONTROL_SPACE;
        m->msg_controllen = CONTROL_SPACE;
        m->msg_flags = 0;
    }
    b->messages = 0;
    b->iovecs = 0;
    int n;
    do {
        n = recvmmsg(fd, b->headers, count, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

unsigned cwarren_offload_batch_length(const cwarren_offload_batch *b, unsigned index) {
    return index < b->message_capacity ? b->headers[index].msg_len : 0;
}

int cwarren_offload_batch_truncated(const cwarren_offload_batch *b, unsigned index) {
    if (index >= b->message_capacity) return 0;
    return (b->headers[index].msg_hdr.msg_flags & MSG_TRUNC) ? 1 : 0;
}

unsigned cwarren_offload_batch_gro_size(const cwarren_offload_batch *b, unsigned index) {
    if (index >= b->message_capacity) return 0;
    struct msghdr *m = (struct msghdr *)&b->headers[index].msg_hdr;
    if (m->msg_controllen < sizeof(struct cmsghdr)) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int size = 0;
            memcpy(&size, CMSG_DATA(c), sizeof size);
            return size > 0 ? (unsigned)size : 0;
        }
    }
    return 0;
}

int cwarren_offload_batch_source(const cwarren_offload_batch *b, unsigned index, cwarren_offload_endpoint *e) {
    if (index >= b->message_capacity) return -EINVAL;
    const struct sockaddr_storage *ss = &b->addresses[index];
    memset(e, 0, sizeof *e);
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        e->family = 4;
        memcpy(e->address, &sin->sin_addr, 4);
        e->port = ntohs(sin->sin_port);
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        e->family = 6;
        memcpy(e->address, &sin6->sin6_addr, 16);
        e->port = ntohs(sin6->sin6_port);
        e->scope_id = sin6->sin6_scope_id;
        return 0;
    }
    return -EAFNOSUPPORT;
}

int cwarren_offload_netns_open(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int cwarren_offload_netns_enter(int fd) {
    return setns(fd, CLONE_NEWNET) < 0 ? -errno : 0;
}

int cwarren_offload_poll_in(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    do {
        n = poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    return n > 0 ? 1 : 0;
}
#else
// Not Linux: every call reports ENOSYS.
#include <errno.h>
const unsigned cwarren_offload_tun_f_csum = 0, cwarren_offload_tun_f_tso4 = 0, cwarren_offload_tun_f_tso6 = 0,
    cwarren_offload_tun_f_tso_ecn = 0, cwarren_offload_tun_f_uso4 = 0, cwarren_offload_tun_f_uso6 = 0;
const int cwarren_offload_iff_vnet_hdr = 0;
int cwarren_offload_tun_open(const char *n, int s, char *a, size_t l) { (void)n; (void)s; (void)a; (void)l; return -ENOSYS; }
int cwarren_offload_tun_set_offload(int fd, unsigned f) { (void)fd; (void)f; return -ENOSYS; }
int cwarren_offload_tun_get_flags(int fd) { (void)fd; return -ENOSYS; }
int cwarren_offload_tun_get_vnet_header_size(int fd) { (void)fd; return -ENOSYS; }
int cwarren_offload_udp_set_gro(int fd, int on) { (void)fd; (void)on; return -ENOSYS; }
int cwarren_offload_udp_gso_supported(int fd) { (void)fd; return 0; }
cwarren_offload_batch *cwarren_offload_batch_create(unsigned m, unsigned i) { (void)m; (void)i; return 0; }
void cwarren_offload_batch_destroy(cwarren_offload_batch *b) { (void)b; }
void cwarren_offload_batch_reset(cwarren_offload_batch *b) { (void)b; }
int cwarren_offload_batch_begin(cwarren_offload_batch *b, const cwarren_offload_endpoint *e, uint16_t s) { (void)b; (void)e; (void)s; return -ENOSYS; }
int cwarren_offload_batch_append(cwarren_offload_batch *b, const void *p, size_t l) { (void)b; (void)p; (void)l; return -ENOSYS; }
unsigned cwarren_offload_batch_count(const cwarren_offload_batch *b) { (void)b; return 0; }
int cwarren_offload_batch_send(int fd, cwarren_offload_batch *b, unsigned f) { (void)fd; (void)b; (void)f; return -ENOSYS; }
int cwarren_offload_batch_set_receive(cwarren_offload_batch *b, unsigned i, void *p, size_t l) { (void)b; (void)i; (void)p; (void)l; return -ENOSYS; }
int cwarren_offload_batch_receive(int fd, cwarren_offload_batch *b, unsigned c) { (void)fd; (void)b; (void)c; return -ENOSYS; }
unsigned cwarren_offload_batch_length(const cwarren_offload_batch *b, unsigned i) { (void)b; (void)i; return 0; }
int cwarren_offload_batch_truncated(const cwarren_offload_batch *b, unsigned i) { (void)b; (void)i; return 0; }
unsigned cwarren_offload_batch_gro_size(const cwarren_offload_batch *b, unsigned i) { (void)b; (void)i; return 0; }
int cwarren_offload_batch_source(const cwarren_offload_batch *b, unsigned i, cwarren_offload_endpoint *e) { (void)b; (void)i; (void)e; return -ENOSYS; }
int cwarren_offload_poll_in(int fd, int t) { (void)fd; (void)t; return -ENOSYS; }
int cwarren_offload_netns_open(const char *path) { (void)path; return -ENOSYS; }
int cwarren_offload_netns_enter(int fd) { (void)fd; return -ENOSYS; }
#endif
