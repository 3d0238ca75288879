/*
 * Escape probe: performs one attack, for real, and prints what the kernel
 * answered: "ok" if the call succeeded, "err NAME" with the errno name if
 * it failed. The battery (../escape.rs) runs it inside real sandboxes and
 * checks each answer.
 *
 * Every attack uses arguments that would succeed (or fail differently)
 * without the layer that is expected to stop it, so an "err EPERM" from
 * seccomp is told apart from, say, an "err EINVAL" from bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/kcmp.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif

static int report(long ret) {
    if (ret >= 0) {
        printf("ok\n");
    } else {
        const char *name = strerrorname_np(errno);
        printf("err %s\n", name ? name : "?");
    }
    return 0;
}

/* A child that just waits, as a target for process attacks. */
static pid_t sleeper(void) {
    pid_t pid = fork();
    if (pid == 0) {
        pause();
        _exit(0);
    }
    return pid;
}

static void reap(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static int connect_to(int family, const char *addr, int port) {
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) return report(-1);
    if (family == AF_INET) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
        inet_pton(AF_INET, addr, &sa.sin_addr);
        return report(connect(fd, (struct sockaddr *)&sa, sizeof sa));
    }
    struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    inet_pton(AF_INET6, addr, &sa6.sin6_addr);
    return report(connect(fd, (struct sockaddr *)&sa6, sizeof sa6));
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe ATTACK\n");
        return 2;
    }
    const char *a = argv[1];

    if (!strcmp(a, "bpf")) {
        union bpf_attr attr = {0};
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        return report(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    }
    if (!strcmp(a, "perf_event_open")) {
        struct perf_event_attr attr = {0};
        attr.type = PERF_TYPE_SOFTWARE;
        attr.size = sizeof attr;
        attr.config = PERF_COUNT_SW_CPU_CLOCK;
        attr.exclude_kernel = 1;
        return report(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
    }
    if (!strcmp(a, "userfaultfd"))
        return report(syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */));
    if (!strcmp(a, "keyctl"))
        return report(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1));
    if (!strcmp(a, "add_key"))
        return report(syscall(SYS_add_key, "user", "airlock-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
    if (!strcmp(a, "request_key"))
        return report(syscall(SYS_request_key, "user", "airlock-probe", NULL, KEY_SPEC_PROCESS_KEYRING));
    if (!strcmp(a, "io_uring_setup")) {
        struct io_uring_params p = {0};
        return report(syscall(SYS_io_uring_setup, 4, &p));
    }
    if (!strcmp(a, "unshare_user"))
        return report(unshare(CLONE_NEWUSER));
    if (!strcmp(a, "unshare_mount"))
        return report(unshare(CLONE_NEWNS));
    if (!strcmp(a, "clone_newuser")) {
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        return report(pid);
    }
    if (!strcmp(a, "clone3")) {
        struct { unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; } args = {0};
        args.exit_signal = SIGCHLD;
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        return report(pid);
    }
    if (!strcmp(a, "setns")) {
        int fd = open("/proc/self/ns/uts", O_RDONLY);
        if (fd < 0) return report(-1);
        return report(setns(fd, 0));
    }
    if (!strcmp(a, "mount"))
        return report(mount("none", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(a, "mount_cgroup")) {
        mkdir("/tmp/cg", 0700);
        return report(mount("cgroup", "/tmp/cg", "cgroup", 0, "rdma"));
    }
    if (!strcmp(a, "umount"))
        return report(umount2("/proc/timer_list", MNT_DETACH));
    if (!strcmp(a, "pivot_root"))
        return report(syscall(SYS_pivot_root, "/tmp", "/tmp"));
    if (!strcmp(a, "chroot"))
        return report(chroot("/tmp"));
    if (!strcmp(a, "ptrace")) {
        pid_t pid = sleeper();
        long r = ptrace(PTRACE_ATTACH, pid, 0, 0);
        reap(pid);
        return report(r);
    }
    if (!strcmp(a, "process_vm_readv")) {
        static char target[16] = "airlock";
        char buf[16];
        pid_t pid = sleeper();
        struct iovec local = {buf, sizeof buf}, remote = {target, sizeof target};
        long r = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        reap(pid);
        return report(r);
    }
    if (!strcmp(a, "pidfd_getfd")) {
        pid_t pid = sleeper();
        long pfd = syscall(SYS_pidfd_open, pid, 0);
        long r = pfd < 0 ? pfd : syscall(SYS_pidfd_getfd, pfd, 0, 0);
        int saved = errno;
        reap(pid);
        errno = saved;
        return report(r);
    }
    if (!strcmp(a, "kcmp")) {
        pid_t pid = sleeper();
        long r = syscall(SYS_kcmp, getpid(), pid, KCMP_FILE, 0, 0);
        int saved = errno;
        reap(pid);
        errno = saved;
        return report(r);
    }
    if (!strcmp(a, "open_by_handle_at")) {
        struct { unsigned int bytes; int type; unsigned char f[8]; } h = {8, 1, {0}};
        return report(syscall(SYS_open_by_handle_at, AT_FDCWD, &h, O_RDONLY));
    }
    if (!strcmp(a, "name_to_handle_at")) {
        struct { unsigned int bytes; int type; unsigned char f[128]; } h = {128, 0, {0}};
        int mount_id;
        return report(syscall(SYS_name_to_handle_at, AT_FDCWD, "/usr", &h, &mount_id, 0));
    }
    if (!strcmp(a, "kexec_load"))
        return report(syscall(SYS_kexec_load, 0, 0, NULL, 0));
    if (!strcmp(a, "init_module"))
        return report(syscall(SYS_init_module, "", 0, ""));
    if (!strcmp(a, "finit_module")) {
        int fd = open("/dev/null", O_RDONLY);
        return report(syscall(SYS_finit_module, fd, "", 0));
    }
    if (!strcmp(a, "swapon"))
        return report(swapon("/workspace", 0));
    if (!strcmp(a, "reboot"))
        return report(syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, NULL));
    if (!strcmp(a, "syslog"))
        return report(syscall(SYS_syslog, 10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0));
    if (!strcmp(a, "personality"))
        return report(personality(READ_IMPLIES_EXEC));
    if (!strcmp(a, "fsopen"))
        return report(syscall(SYS_fsopen, "tmpfs", 0));
    if (!strcmp(a, "open_tree"))
        return report(syscall(SYS_open_tree, AT_FDCWD, "/tmp", OPEN_TREE_CLONE));
    if (!strcmp(a, "acct"))
        return report(acct("/tmp/acct"));
    if (!strcmp(a, "clock_settime")) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return report(clock_settime(CLOCK_REALTIME, &ts));
    }
    if (!strcmp(a, "mknod"))
        return report(mknod("/workspace/sda", S_IFBLK | 0600, makedev(8, 0)));
    if (!strcmp(a, "tty"))
        return report(open("/dev/tty", O_RDWR));
    if (!strcmp(a, "proc1_mem"))
        return report(open("/proc/1/mem", O_RDONLY));
    if (!strcmp(a, "proc1_environ"))
        return report(open("/proc/1/environ", O_RDONLY));
    if (!strcmp(a, "proc1_exe_write"))
        return report(open("/proc/1/exe", O_WRONLY));
    if (!strcmp(a, "raw_socket"))
        return report(socket(AF_PACKET, SOCK_RAW, 0));
    if (!strcmp(a, "connect_metadata"))
        return connect_to(AF_INET, "169.254.169.254", 80);
    if (!strcmp(a, "connect_v6"))
        return connect_to(AF_INET6, "2001:db8::1", 80);
    if (!strcmp(a, "sethostname"))
        return report(sethostname("escaped", 7));
    if (!strcmp(a, "fd_exhaustion")) {
        long n = 0;
        while (open("/dev/null", O_RDONLY) >= 0) n++;
        printf("%s after %ld\n", strerrorname_np(errno), n);
        return 0;
    }
    fprintf(stderr, "unknown attack %s\n", a);
    return 2;
}
