#define _GNU_SOURCE
#include "CWarrenLinux.h"

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <sched.h>

int cwarren_netns_open(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int cwarren_netns_enter(int fd) {
    return setns(fd, CLONE_NEWNET) < 0 ? -errno : 0;
}
#else
#include <errno.h>
int cwarren_netns_open(const char *path) { (void)path; return -ENOSYS; }
int cwarren_netns_enter(int fd) { (void)fd; return -ENOSYS; }
#endif
