#define _GNU_SOURCE
#include "CWarrenLinux.h"

#ifdef __linux__
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#define CWARREN_CONTROL_SPACE 64

struct cwarren_msg_batch {
    unsigned capacity;
    struct mmsghdr *headers;
    struct iovec *iovecs;
    struct sockaddr_storage *addresses;
    unsigned char *control;
};

cwarren_msg_batch *cwarren_msg_batch_create(unsigned capacity) {
    cwarren_msg_batch *batch = calloc(1, sizeof *batch);
    if (!batch) return NULL;
    batch->capacity = capacity;
    batch->headers = calloc(capacity, sizeof *batch->headers);
    batch->iovecs = calloc(capacity, sizeof *batch->iovecs);
    batch->addresses = calloc(capacity, sizeof *batch->addresses);
    batch->control = calloc(capacity, CWARREN_CONTROL_SPACE);
    if (!batch->headers || !batch->iovecs || !batch->addresses || !batch->control) {
        cwarren_msg_batch_destroy(batch);
        return NULL;
    }
    for (unsigned i = 0; i < capacity; i++) {
        struct msghdr *m = &batch->headers[i].msg_hdr;
        m->msg_iov = &batch->iovecs[i];
        m->msg_iovlen = 1;
        m->msg_name = &batch->addresses[i];
        m->msg_namelen = sizeof batch->addresses[i];
    }
    return batch;
}

void cwarren_msg_batch_destroy(cwarren_msg_batch *batch) {
    if (!batch) return;
    free(batch->headers);
    free(batch->iovecs);
    free(batch->addresses);
    free(batch->control);
    free(batch);
}

void cwarren_msg_batch_set_buffer(cwarren_msg_batch *batch, unsigned index, void *base, size_t length) {
    if (index >= batch->capacity) return;
    batch->iovecs[index].iov_base = base;
    batch->iovecs[index].iov_len = length;
}

static socklen_t endpoint_to_sockaddr(const cwarren_endpoint *e, struct sockaddr_storage *ss) {
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

void cwarren_msg_batch_set_endpoint(cwarren_msg_batch *batch, unsigned index, const cwarren_endpoint *endpoint) {
    if (index >= batch->capacity) return;
    batch->headers[index].msg_hdr.msg_namelen = endpoint_to_sockaddr(endpoint, &batch->addresses[index]);
}

void cwarren_msg_batch_set_segment_size(cwarren_msg_batch *batch, unsigned index, uint16_t segment_size) {
    if (index >= batch->capacity) return;
    struct msghdr *m = &batch->headers[index].msg_hdr;
    if (segment_size == 0) {
        m->msg_control = NULL;
        m->msg_controllen = 0;
        return;
    }
    unsigned char *space = batch->control + (size_t)index * CWARREN_CONTROL_SPACE;
    memset(space, 0, CMSG_SPACE(sizeof(uint16_t)));
    m->msg_control = space;
    m->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    struct cmsghdr *c = CMSG_FIRSTHDR(m);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &segment_size, sizeof segment_size);
}

unsigned cwarren_msg_batch_length(const cwarren_msg_batch *batch, unsigned index) {
    if (index >= batch->capacity) return 0;
    return batch->headers[index].msg_len;
}

int cwarren_msg_batch_truncated(const cwarren_msg_batch *batch, unsigned index) {
    if (index >= batch->capacity) return 0;
    return (batch->headers[index].msg_hdr.msg_flags & MSG_TRUNC) ? 1 : 0;
}

int cwarren_msg_batch_endpoint(const cwarren_msg_batch *batch, unsigned index, cwarren_endpoint *e) {
    if (index >= batch->capacity) return -EINVAL;
    const struct sockaddr_storage *ss = &batch->addresses[index];
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

unsigned cwarren_msg_batch_gro_size(const cwarren_msg_batch *batch, unsigned index) {
    if (index >= batch->capacity) return 0;
    struct msghdr *m = (struct msghdr *)&batch->headers[index].msg_hdr;
    if (m->msg_controllen == 0) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int size = 0;
            memcpy(&size, CMSG_DATA(c), sizeof size);
            return size > 0 ? (unsigned)size : 0;
        }
    }
    return 0;
}

int cwarren_recvmmsg(int fd, cwarren_msg_batch *batch, unsigned count, int dont_wait) {
    if (count > batch->capacity) count = batch->capacity;
    for (unsigned i = 0; i < count; i++) {
        struct msghdr *m = &batch->headers[i].msg_hdr;
        m->msg_namelen = sizeof batch->addresses[i];
        m->msg_control = batch->control + (size_t)i * CWARREN_CONTROL_SPACE;
        m->msg_controllen = CWARREN_CONTROL_SPACE;
        m->msg_flags = 0;
    }
    int n;
    do {
        n = recvmmsg(fd, batch->headers, count, dont_wait ? MSG_DONTWAIT : 0, NULL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int cwarren_sendmmsg(int fd, cwarren_msg_batch *batch, unsigned first, unsigned count) {
    if (first >= batch->capacity) return 0;
    if (count > batch->capacity - first) count = batch->capacity - first;
    int n;
    do {
        n = sendmmsg(fd, batch->headers + first, count, 0);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int cwarren_send_segments(int fd, const cwarren_endpoint *endpoint, void *const *bases, const size_t *lengths,
                          unsigned count, uint16_t segment_size) {
    if (count == 0 || count > 64) return -EINVAL;
    struct iovec iov[64];
    for (unsigned i = 0; i < count; i++) {
        iov[i].iov_base = bases[i];
        iov[i].iov_len = lengths[i];
    }
    struct sockaddr_storage ss;
    socklen_t len = endpoint_to_sockaddr(endpoint, &ss);
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_name = &ss;
    m.msg_namelen = len;
    m.msg_iov = iov;
    m.msg_iovlen = count;
    m.msg_control = control.buf;
    m.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &segment_size, sizeof segment_size);
    ssize_t n;
    do {
        n = sendmsg(fd, &m, 0);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (int)n;
}

int cwarren_sendto(int fd, const void *base, size_t length, const cwarren_endpoint *endpoint) {
    struct sockaddr_storage ss;
    socklen_t len = endpoint_to_sockaddr(endpoint, &ss);
    ssize_t n;
    do {
        n = sendto(fd, base, length, 0, (struct sockaddr *)&ss, len);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (int)n;
}

int cwarren_udp_open(int family, uint16_t port) {
    int af = family == 6 ? AF_INET6 : AF_INET;
    int fd = socket(af, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (af == AF_INET6) {
        int one = 1;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) goto fail;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        sin6->sin6_addr = in6addr_any;
        len = sizeof *sin6;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        len = sizeof *sin;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) goto fail;
    return fd;
fail:;
    int err = errno;
    close(fd);
    return -err;
}

int cwarren_udp_local_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}

int cwarren_socket_set_buffers(int fd, int bytes) {
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0 &&
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) < 0) return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) < 0 &&
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes) < 0) return -errno;
    return 0;
}

int cwarren_socket_get_receive_buffer(int fd) {
    int value = 0;
    socklen_t len = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, &len) < 0) return -errno;
    return value;
}

int cwarren_socket_set_mark(int fd, uint32_t mark) {
    if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) return -errno;
    return 0;
}

int cwarren_socket_set_gro(int fd, int on) {
    if (setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) < 0) return -errno;
    return 0;
}

int cwarren_socket_supports_gso(int fd) {
    int value = 0;
    socklen_t len = sizeof value;
    return getsockopt(fd, SOL_UDP, UDP_SEGMENT, &value, &len) == 0 ? 1 : 0;
}

int cwarren_eventfd(void) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int cwarren_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof one) < 0 ? -errno : 0;
}

int cwarren_poll_in(int fd, int wake_fd, int timeout_ms) {
    struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = wake_fd, .events = POLLIN}};
    int n;
    do {
        n = poll(fds, wake_fd >= 0 ? 2 : 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n == 0) return 0;
    if (wake_fd >= 0 && fds[1].revents) return 2;
    return 1;
}
#else
#include <errno.h>
#include <stdlib.h>
struct cwarren_msg_batch { unsigned capacity; };
cwarren_msg_batch *cwarren_msg_batch_create(unsigned capacity) { (void)capacity; return NULL; }
void cwarren_msg_batch_destroy(cwarren_msg_batch *batch) { (void)batch; }
void cwarren_msg_batch_set_buffer(cwarren_msg_batch *b, unsigned i, void *p, size_t l) { (void)b; (void)i; (void)p; (void)l; }
void cwarren_msg_batch_set_endpoint(cwarren_msg_batch *b, unsigned i, const cwarren_endpoint *e) { (void)b; (void)i; (void)e; }
void cwarren_msg_batch_set_segment_size(cwarren_msg_batch *b, unsigned i, uint16_t s) { (void)b; (void)i; (void)s; }
unsigned cwarren_msg_batch_length(const cwarren_msg_batch *b, unsigned i) { (void)b; (void)i; return 0; }
int cwarren_msg_batch_truncated(const cwarren_msg_batch *b, unsigned i) { (void)b; (void)i; return 0; }
int cwarren_msg_batch_endpoint(const cwarren_msg_batch *b, unsigned i, cwarren_endpoint *e) { (void)b; (void)i; (void)e; return -ENOSYS; }
unsigned cwarren_msg_batch_gro_size(const cwarren_msg_batch *b, unsigned i) { (void)b; (void)i; return 0; }
int cwarren_recvmmsg(int fd, cwarren_msg_batch *b, unsigned c, int d) { (void)fd; (void)b; (void)c; (void)d; return -ENOSYS; }
int cwarren_sendmmsg(int fd, cwarren_msg_batch *b, unsigned f, unsigned c) { (void)fd; (void)b; (void)f; (void)c; return -ENOSYS; }
int cwarren_sendto(int fd, const void *p, size_t l, const cwarren_endpoint *e) { (void)fd; (void)p; (void)l; (void)e; return -ENOSYS; }
int cwarren_send_segments(int fd, const cwarren_endpoint *e, void *const *b, const size_t *l, unsigned c, uint16_t s) {
    (void)fd; (void)e; (void)b; (void)l; (void)c; (void)s; return -ENOSYS;
}
int cwarren_udp_open(int family, uint16_t port) { (void)family; (void)port; return -ENOSYS; }
int cwarren_udp_local_port(int fd) { (void)fd; return -ENOSYS; }
int cwarren_socket_set_buffers(int fd, int bytes) { (void)fd; (void)bytes; return -ENOSYS; }
int cwarren_socket_get_receive_buffer(int fd) { (void)fd; return -ENOSYS; }
int cwarren_socket_set_mark(int fd, uint32_t mark) { (void)fd; (void)mark; return -ENOSYS; }
int cwarren_socket_set_gro(int fd, int on) { (void)fd; (void)on; return -ENOSYS; }
int cwarren_socket_supports_gso(int fd) { (void)fd; return 0; }
int cwarren_eventfd(void) { return -ENOSYS; }
int cwarren_eventfd_signal(int fd) { (void)fd; return -ENOSYS; }
int cwarren_poll_in(int fd, int wake_fd, int timeout_ms) { (void)fd; (void)wake_fd; (void)timeout_ms; return -ENOSYS; }
#endif
