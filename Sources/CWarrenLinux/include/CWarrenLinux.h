#ifndef CWARREN_LINUX_H
#define CWARREN_LINUX_H

#include <stddef.h>
#include <stdint.h>

// Thin C shims for the Linux calls whose structures Swift imports badly (ifreq, mmsghdr,
// cmsg). Every function returns a non-negative result or -errno; none allocates per packet.

// MARK: TUN

/// Opens /dev/net/tun and attaches it to the TUN interface `name` (IFF_TUN | IFF_NO_PI, plus
/// IFF_VNET_HDR when `vnet_header` is non-zero), creating it if needed. Writes the kernel's
/// interface name (at most 16 bytes with NUL) to `actual_name`. Returns the file descriptor, or -errno.
int cwarren_tun_open(const char *name, int vnet_header, char *actual_name, size_t actual_name_len);

/// TUNSETOFFLOAD with the given TUN_F_* flags (see cwarren_tun_offload_* below).
int cwarren_tun_set_offload(int fd, unsigned flags);
/// TUNSETVNETHDRSZ.
int cwarren_tun_set_vnet_header_size(int fd, int size);

extern const unsigned cwarren_tun_offload_csum;
extern const unsigned cwarren_tun_offload_tso4;
extern const unsigned cwarren_tun_offload_tso6;
/// TUN_F_USO4 / TUN_F_USO6 (UDP segmentation, Linux 6.2+; older kernels refuse the flags).
extern const unsigned cwarren_tun_offload_uso4;
extern const unsigned cwarren_tun_offload_uso6;

// MARK: interfaces (ioctl on an AF_INET datagram socket)

/// SIOCSIFMTU.
int cwarren_if_set_mtu(const char *name, int mtu);
/// SIOCSIFTXQLEN.
int cwarren_if_set_txqlen(const char *name, int length);
/// SIOCGIFMTU; returns the MTU.
int cwarren_if_get_mtu(const char *name);
/// SIOCGIFFLAGS then SIOCSIFFLAGS with IFF_UP set (`up` non-zero) or cleared.
int cwarren_if_set_up(const char *name, int up);
/// SIOCGIFFLAGS; returns the flags.
int cwarren_if_get_flags(const char *name);
/// IFF_UP.
extern const int cwarren_iff_up;
/// if_nametoindex; returns the index, or -errno (-ENODEV when there is no such interface).
int cwarren_if_index(const char *name);

// MARK: batched UDP

/// A UDP endpoint in a form both sides understand: family 4 or 6, address in network order
/// (first 4 bytes used for IPv4), port in host order.
typedef struct cwarren_endpoint {
    uint8_t family;
    uint8_t address[16];
    uint16_t port;
    uint32_t scope_id;
} cwarren_endpoint;

/// Preallocated mmsghdr/iovec/sockaddr arrays for recvmmsg and sendmmsg.
typedef struct cwarren_msg_batch cwarren_msg_batch;

/// Allocates a batch of `capacity` messages, each with one iovec and room for a control message.
cwarren_msg_batch *cwarren_msg_batch_create(unsigned capacity);
void cwarren_msg_batch_destroy(cwarren_msg_batch *batch);

/// Points message `index` at `length` bytes at `base`.
void cwarren_msg_batch_set_buffer(cwarren_msg_batch *batch, unsigned index, void *base, size_t length);
/// Sets the destination of message `index` (sendmmsg) from `endpoint`.
void cwarren_msg_batch_set_endpoint(cwarren_msg_batch *batch, unsigned index, const cwarren_endpoint *endpoint);
/// Asks the kernel to split message `index` into `segment_size`-byte datagrams (UDP_SEGMENT);
/// 0 removes the request.
void cwarren_msg_batch_set_segment_size(cwarren_msg_batch *batch, unsigned index, uint16_t segment_size);
/// After recvmmsg: byte count of message `index`.
unsigned cwarren_msg_batch_length(const cwarren_msg_batch *batch, unsigned index);
/// After recvmmsg: flags of message `index` (MSG_TRUNC is reported as 1).
int cwarren_msg_batch_truncated(const cwarren_msg_batch *batch, unsigned index);
/// After recvmmsg: the source of message `index`; returns 0, or -EAFNOSUPPORT.
int cwarren_msg_batch_endpoint(const cwarren_msg_batch *batch, unsigned index, cwarren_endpoint *endpoint);
/// After recvmmsg on a socket with UDP_GRO: the segment size the kernel coalesced at, or 0.
unsigned cwarren_msg_batch_gro_size(const cwarren_msg_batch *batch, unsigned index);

/// recvmmsg of up to `count` messages (MSG_DONTWAIT when `dont_wait`); returns the number received.
int cwarren_recvmmsg(int fd, cwarren_msg_batch *batch, unsigned count, int dont_wait);
/// sendmmsg of messages [first, first + count); returns the number sent.
int cwarren_sendmmsg(int fd, cwarren_msg_batch *batch, unsigned first, unsigned count);
/// sendmsg of `count` buffers (at most 64) to `endpoint` as one UDP_SEGMENT message: the kernel
/// sends them as `count` datagrams of `segment_size` bytes (the last may be shorter), moving them
/// through the stack as one packet (UDP GSO). Every buffer but the last must be `segment_size`
/// bytes. Returns the bytes sent, or -errno (-EINVAL/-EIO when the kernel refuses GSO here).
int cwarren_send_segments(int fd, const cwarren_endpoint *endpoint, void *const *bases, const size_t *lengths,
                          unsigned count, uint16_t segment_size);
/// sendto of one datagram.
int cwarren_sendto(int fd, const void *base, size_t length, const cwarren_endpoint *endpoint);

// MARK: sockets

/// socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) with IPV6_V6ONLY for IPv6,
/// bound to `port` on the wildcard address. Returns the descriptor.
int cwarren_udp_open(int family, uint16_t port);
/// getsockname's port.
int cwarren_udp_local_port(int fd);
/// SO_RCVBUFFORCE (falling back to SO_RCVBUF) and the same for SO_SNDBUF.
int cwarren_socket_set_buffers(int fd, int bytes);
/// Returns SO_RCVBUF as the kernel reports it.
int cwarren_socket_get_receive_buffer(int fd);
/// SO_MARK (0 clears it).
int cwarren_socket_set_mark(int fd, uint32_t mark);
/// UDP_GRO on (1) or off (0).
int cwarren_socket_set_gro(int fd, int on);
/// Probes UDP_SEGMENT support: returns 1 when the kernel accepts it.
int cwarren_socket_supports_gso(int fd);

// MARK: network namespaces

/// Opens a network namespace file (/run/netns/NAME, /proc/thread-self/ns/net); returns the descriptor.
int cwarren_netns_open(const char *path);
/// setns(fd, CLONE_NEWNET): moves the calling thread into the network namespace `fd`.
int cwarren_netns_enter(int fd);

// MARK: waiting

/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK).
int cwarren_eventfd(void);
/// Adds 1 to an eventfd.
int cwarren_eventfd_signal(int fd);
/// poll() for input on `fd` and `wake_fd` with a timeout in milliseconds (-1: none).
/// Returns 1 when `fd` is readable (or has an error/hangup), 2 when `wake_fd` fired, 0 on timeout.
int cwarren_poll_in(int fd, int wake_fd, int timeout_ms);

#endif
