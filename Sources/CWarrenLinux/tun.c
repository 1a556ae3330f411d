#include "CWarrenLinux.h"

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

const int cwarren_iff_up = IFF_UP;
const unsigned cwarren_tun_offload_csum = TUN_F_CSUM;
const unsigned cwarren_tun_offload_tso4 = TUN_F_TSO4;
const unsigned cwarren_tun_offload_tso6 = TUN_F_TSO6;
// TUN_F_USO4/6 are in the uapi headers from Linux 6.2 on; the values are fixed.
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif
const unsigned cwarren_tun_offload_uso4 = TUN_F_USO4;
const unsigned cwarren_tun_offload_uso6 = TUN_F_USO6;

int cwarren_tun_open(const char *name, int vnet_header, char *actual_name, size_t actual_name_len) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet_header ? IFF_VNET_HDR : 0);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    if (actual_name && actual_name_len > 0) {
        strncpy(actual_name, ifr.ifr_name, actual_name_len - 1);
        actual_name[actual_name_len - 1] = 0;
    }
    return fd;
}

int cwarren_tun_set_offload(int fd, unsigned flags) {
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) return -errno;
    return 0;
}

int cwarren_tun_set_vnet_header_size(int fd, int size) {
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) return -errno;
    return 0;
}

static int with_ifreq(const char *name, unsigned long request, struct ifreq *ifr) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    int rc = ioctl(s, request, ifr);
    int err = errno;
    close(s);
    return rc < 0 ? -err : 0;
}

int cwarren_if_set_mtu(const char *name, int mtu) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_mtu = mtu;
    return with_ifreq(name, SIOCSIFMTU, &ifr);
}

int cwarren_if_set_txqlen(const char *name, int length) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_qlen = length;
    return with_ifreq(name, SIOCSIFTXQLEN, &ifr);
}

int cwarren_if_get_mtu(const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = with_ifreq(name, SIOCGIFMTU, &ifr);
    return rc < 0 ? rc : ifr.ifr_mtu;
}

int cwarren_if_get_flags(const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = with_ifreq(name, SIOCGIFFLAGS, &ifr);
    return rc < 0 ? rc : (int)(unsigned short)ifr.ifr_flags;
}

int cwarren_if_set_up(const char *name, int up) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = with_ifreq(name, SIOCGIFFLAGS, &ifr);
    if (rc < 0) return rc;
    if (up) ifr.ifr_flags |= IFF_UP; else ifr.ifr_flags &= ~IFF_UP;
    return with_ifreq(name, SIOCSIFFLAGS, &ifr);
}

int cwarren_if_index(const char *name) {
    unsigned index = if_nametoindex(name);
    if (index == 0) return -errno;
    return (int)index;
}
#else
#include <errno.h>
const int cwarren_iff_up = 1;
const unsigned cwarren_tun_offload_csum = 0;
const unsigned cwarren_tun_offload_tso4 = 0;
const unsigned cwarren_tun_offload_tso6 = 0;
const unsigned cwarren_tun_offload_uso4 = 0;
const unsigned cwarren_tun_offload_uso6 = 0;
int cwarren_tun_open(const char *name, int vnet_header, char *actual_name, size_t actual_name_len) {
    (void)name; (void)vnet_header; (void)actual_name; (void)actual_name_len;
    return -ENOSYS;
}
int cwarren_tun_set_offload(int fd, unsigned flags) { (void)fd; (void)flags; return -ENOSYS; }
int cwarren_tun_set_vnet_header_size(int fd, int size) { (void)fd; (void)size; return -ENOSYS; }
int cwarren_if_set_mtu(const char *name, int mtu) { (void)name; (void)mtu; return -ENOSYS; }
int cwarren_if_get_mtu(const char *name) { (void)name; return -ENOSYS; }
int cwarren_if_set_txqlen(const char *name, int length) { (void)name; (void)length; return -ENOSYS; }
int cwarren_if_set_up(const char *name, int up) { (void)name; (void)up; return -ENOSYS; }
int cwarren_if_get_flags(const char *name) { (void)name; return -ENOSYS; }
int cwarren_if_index(const char *name) { (void)name; return -ENOSYS; }
#endif
