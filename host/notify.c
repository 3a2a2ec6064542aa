/* notify.c — systemd's notify protocol, the stop signals, log lines and the clock (notify.h).
 *
 * What systemd's sd_notify() does, reduced to what rt_host needs: the socket address comes
 * from $NOTIFY_SOCKET, where a leading '@' stands for a NUL byte (a Linux abstract-namespace
 * name, whose address length then counts the name's bytes exactly: no terminating NUL);
 * messages are sent with sendto(MSG_NOSIGNAL) on a SOCK_DGRAM socket opened once. Credentials
 * are passed by the kernel. A failed send never stops the service: the supervisor, not
 * rt_host, decides what a missing ping means.
 *
 * The signal handler does only async-signal-safe things: it sets a sig_atomic_t and writes
 * one byte to a non-blocking pipe (a full pipe means a wake-up is pending anyway). It is
 * installed without SA_RESTART, so a blocked write returns EINTR and the writer can look at
 * the flag. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host/notify.h"

double host_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void host_log(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int k = snprintf(line, sizeof line, "rt_host: ");
    va_start(ap, fmt);
    int m = vsnprintf(line + k, sizeof line - (size_t)k - 1, fmt, ap);
    va_end(ap);
    size_t n = (size_t)k + (m < 0 ? 0 : (size_t)m);
    if (n > sizeof line - 2)
        n = sizeof line - 2; /* a long line is cut, never split across writes */
    line[n++] = '\n';
    for (size_t off = 0; off < n;) {
        ssize_t w = write(STDERR_FILENO, line + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

/* ---- signals -------------------------------------------------------------------------------- */

static volatile sig_atomic_t sig_got;
static int sig_pipe[2] = {-1, -1};

static void on_signal(int signo)
{
    int saved = errno;
    if (!sig_got)
        sig_got = signo;
    if (sig_pipe[1] >= 0) {
        char c = 1;
        ssize_t w = write(sig_pipe[1], &c, 1); /* full pipe: a wake-up is pending anyway */
        (void)w;
    }
    errno = saved;
}

int host_signals_init(char *err)
{
    struct sigaction sa;
    if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC)) {
        snprintf(err, 256, "pipe: %s", strerror(errno));
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked write returns EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL)) {
        snprintf(err, 256, "sigaction: %s", strerror(errno));
        return -1;
    }
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    return 0;
}

int host_signals_stop(void)
{
    return sig_got;
}

void host_signals_free(void)
{
    for (int i = 0; i < 2; i++) {
        if (sig_pipe[i] >= 0)
            close(sig_pipe[i]);
        sig_pipe[i] = -1;
    }
}

int host_signals_fd(void)
{
    return sig_pipe[0];
}

/* ---- environment ---------------------------------------------------------------------------- */

/* Fill the socket address from $NOTIFY_SOCKET. */
static int notify_addr(struct host_notify *n, const char *path, char *err)
{
    size_t len = strlen(path);
    memset(&n->addr, 0, sizeof n->addr);
    n->addr.sun_family = AF_UNIX;
    if ((path[0] != '/' && path[0] != '@') || len < 2 || len > sizeof n->addr.sun_path - 1) {
        snprintf(err, 256,
                 "NOTIFY_SOCKET='%s' is neither an absolute path nor an @abstract "
                 "name of at most %zu bytes",
                 path, sizeof n->addr.sun_path - 1);
        return -1;
    }
    memcpy(n->addr.sun_path, path, len);
    if (path[0] == '@') {
        n->addr.sun_path[0] = 0;
        n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    } else {
        n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    return 0;
}

/* The ping period from $WATCHDOG_USEC (and $WATCHDOG_PID); 0 when not asked for. */
static int notify_watchdog_env(struct host_notify *n, char *err)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    char *end;
    if (!usec)
        return 0;
    if (pid) {
        errno = 0;
        long p = strtol(pid, &end, 10);
        if (errno || *end || p != (long)getpid())
            return 0; /* meant for another process */
    }
    errno = 0;
    unsigned long long us = strtoull(usec, &end, 10);
    if (errno || *end || usec[0] < '0' || usec[0] > '9' || us == 0) {
        snprintf(err, 256, "WATCHDOG_USEC='%s' is not a positive number of microseconds", usec);
        return -1;
    }
    n->interval_ms = (double)us / 2000.0;
    n->next_ms = 0; /* the first ping goes out at the first chance */
    return 0;
}

int host_notify_init(struct host_notify *n, char *err)
{
    memset(n, 0, sizeof *n);
    n->fd = -1;
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path)
        return 0;
    if (notify_addr(n, path, err) || notify_watchdog_env(n, err)) {
        n->interval_ms = 0;
        return -1;
    }
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (n->fd < 0) {
        snprintf(err, 256, "cannot open a socket for NOTIFY_SOCKET: %s", strerror(errno));
        n->interval_ms = 0;
        return -1;
    }
    return 0;
}

void host_notify_free(struct host_notify *n)
{
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
    n->interval_ms = 0;
}

/* ---- messages ------------------------------------------------------------------------------- */

int host_notify_send(struct host_notify *n, const char *msg)
{
    if (n->fd < 0)
        return -1;
    ssize_t w;
    do
        w = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL, (const struct sockaddr *)&n->addr,
                   n->addr_len);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        if (!n->failed)
            host_log("cannot notify the supervisor (NOTIFY_SOCKET): %s", strerror(errno));
        n->failed = 1;
        return -1;
    }
    return 0;
}

void host_notify_status(struct host_notify *n, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (n->fd < 0)
        return;
    int k = snprintf(msg, sizeof msg, "STATUS=");
    va_start(ap, fmt);
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    for (char *c = msg; *c; c++)
        if (*c == '\n')
            *c = ' '; /* a newline would start another assignment */
    host_notify_send(n, msg);
}

void host_notify_watchdog(struct host_notify *n, double now)
{
    if (n->fd < 0 || n->interval_ms <= 0 || now < n->next_ms)
        return;
    host_notify_send(n, "WATCHDOG=1");
    n->next_ms = now + n->interval_ms;
}

int host_notify_timeout_ms(const struct host_notify *n, double now)
{
    if (n->fd < 0 || n->interval_ms <= 0)
        return -1;
    double left = n->next_ms - now;
    return left <= 0 ? 0 : (int)left + 1;
}
