#ifndef CWARREN_OFFLOAD_H
#define CWARREN_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>

// Thin C shims for the Linux offload calls: a TUN device with IFF_VNET_HDR and TUNSETOFFLOAD,
// and UDP sockets with UDP_SEGMENT (GSO) and UDP_GRO. Every function returns a non-negative
// result or -errno; nothing allocates after the batch is created.

// MARK: TUN with virtio-net headers

/// Opens /dev/net/tun (O_RDWR | O_CLOEXEC | O_NONBLOCK) and attaches it to the TUN interface
/// `name` with IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, creating it if needed; then TUNSETVNETHDRSZ
/// `vnet_header_size`. Writes the kernel's interface name to `actual_name`. Returns the descriptor.
int cwarren_offload_tun_open(const char *name, int vnet_header_size, char *actual_name, size_t actual_name_len);
/// TUNSETOFFLOAD with TUN_F_* flags.
int cwarren_offload_tun_set_offload(int fd, unsigned flags);
/// TUNGETIFF's flags (to confirm IFF_VNET_HDR).
int cwarren_offload_tun_get_flags(int fd);
/// TUNGETVNETHDRSZ.
int cwarren_offload_tun_get_vnet_header_size(int fd);

extern const unsigned cwarren_offload_tun_f_csum;
extern const unsigned cwarren_offload_tun_f_tso4;
extern const unsigned cwarren_offload_tun_f_tso6;
extern const unsigned cwarren_offload_tun_f_tso_ecn;
extern const unsigned cwarren_offload_tun_f_uso4;
extern const unsigned cwarren_offload_tun_f_uso6;
extern const int cwarren_offload_iff_vnet_hdr;

// MARK: UDP offloads

/// setsockopt(SOL_UDP, UDP_GRO).
int cwarren_offload_udp_set_gro(int fd, int on);
/// Whether the kernel knows UDP_SEGMENT: getsockopt(SOL_UDP, UDP_SEGMENT) succeeds (Linux 4.18+).
int cwarren_offload_udp_gso_supported(int fd);

/// A UDP endpoint: family 4 or 6, address in network order (first 4 bytes for IPv4), port in host order.
typedef struct cwarren_offload_endpoint {
    uint8_t family;
    uint8_t address[16];
    uint16_t port;
    uint32_t scope_id;
} cwarren_offload_endpoint;

/// Preallocated mmsghdr, iovec, address and control-message space for sendmmsg/recvmmsg
/// with UDP_SEGMENT and UDP_GRO. `message_capacity` messages share `iovec_capacity` iovecs.
typedef struct cwarren_offload_batch cwarren_offload_batch;

cwarren_offload_batch *cwarren_offload_batch_create(unsigned message_capacity, unsigned iovec_capacity);
void cwarren_offload_batch_destroy(cwarren_offload_batch *batch);

/// Empties the batch for sending.
void cwarren_offload_batch_reset(cwarren_offload_batch *batch);
/// Starts a new message to `endpoint`; `segment_size` > 0 adds a UDP_SEGMENT control message.
/// Returns the message's index, or -ENOBUFS when no message is left.
int cwarren_offload_batch_begin(cwarren_offload_batch *batch, const cwarren_offload_endpoint *endpoint, uint16_t segment_size);
/// Appends `length` bytes at `base` to the current message. Returns 0, or -ENOBUFS.
int cwarren_offload_batch_append(cwarren_offload_batch *batch, const void *base, size_t length);
/// Number of messages begun since the reset.
unsigned cwarren_offload_batch_count(const cwarren_offload_batch *batch);
/// sendmmsg of messages [first, count); returns how many the kernel took.
int cwarren_offload_batch_send(int fd, cwarren_offload_batch *batch, unsigned first);

/// Prepares message `index` to receive into `length` bytes at `base` (one iovec).
int cwarren_offload_batch_set_receive(cwarren_offload_batch *batch, unsigned index, void *base, size_t length);
/// recvmmsg of up to `count` messages, MSG_DONTWAIT; returns the number received.
int cwarren_offload_batch_receive(int fd, cwarren_offload_batch *batch, unsigned count);
/// After a receive: the byte count of message `index`.
unsigned cwarren_offload_batch_length(const cwarren_offload_batch *batch, unsigned index);
/// After a receive: 1 when message `index` was truncated (MSG_TRUNC).
int cwarren_offload_batch_truncated(const cwarren_offload_batch *batch, unsigned index);
/// After a receive: the UDP_GRO segment size of message `index`, or 0 (a single datagram).
unsigned cwarren_offload_batch_gro_size(const cwarren_offload_batch *batch, unsigned index);
/// After a receive: the source of message `index`. Returns 0 or -EAFNOSUPPORT.
int cwarren_offload_batch_source(const cwarren_offload_batch *batch, unsigned index, cwarren_offload_endpoint *endpoint);

/// poll() for input on `fd` for up to `timeout_ms`; returns 1 when readable, 0 on timeout.
int cwarren_offload_poll_in(int fd, int timeout_ms);

/// Opens a network namespace file (/run/netns/NAME, /proc/thread-self/ns/net); returns the descriptor.
int cwarren_offload_netns_open(const char *path);
/// Moves the calling thread into the network namespace `fd` (setns CLONE_NEWNET). For tests and tools.
int cwarren_offload_netns_enter(int fd);

#endif
