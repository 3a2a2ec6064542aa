/* notify.h — rt_host's side of the supervisor: systemd's notify protocol (readiness, watchdog,
 * status, stopping), the stop signals, log lines on standard error, and the monotonic clock.
 *
 * The protocol is written here without libsystemd: one datagram per message to the AF_UNIX
 * socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace), holding
 * newline-separated KEY=VALUE assignments. $WATCHDOG_USEC asks for "WATCHDOG=1" at least that
 * often; rt_host pings at half of it, from its main thread only, so a thread stuck in the GPU
 * stops the pings and lets the supervisor see the hang. $WATCHDOG_PID, when set, must be this
 * process, else the watchdog request is for someone else and is ignored.
 *
 * SIGTERM and SIGINT set a flag and write a byte to a self-pipe, so a loop blocked in poll()
 * wakes up; the flag is read between tokens, so a generation stops at its next token.
 * SIGPIPE is ignored: a reader that went away shows up as EPIPE where it is written to. */
#ifndef HOST_NOTIFY_H
#define HOST_NOTIFY_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

struct host_notify {
    int fd; /* datagram socket, -1 when NOTIFY_SOCKET is not set */
    struct sockaddr_un addr;
    socklen_t addr_len;
    double interval_ms; /* watchdog ping period (half of WATCHDOG_USEC); 0: none */
    double next_ms;     /* when the next ping is due */
    int failed;         /* a send failed once (logged once) */
};

/* Read the environment and open the socket. Returns 0 (notification may be off: fd -1), or
 * -1 with a message in err[256] when NOTIFY_SOCKET or WATCHDOG_USEC is set but unusable; the
 * struct is then off and the caller may carry on. */
int host_notify_init(struct host_notify *n, char *err);
void host_notify_free(struct host_notify *n);

/* Send msg ("READY=1", "STOPPING=1", "STATUS=...", several joined by '\n'). Returns 0, or -1
 * when off or the send failed (the first failure is logged). */
int host_notify_send(struct host_notify *n, const char *msg);
/* Send "STATUS=<formatted text>". */
void host_notify_status(struct host_notify *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Send WATCHDOG=1 when a ping is due at time now (host_now_ms). */
void host_notify_watchdog(struct host_notify *n, double now);
/* Milliseconds until the next ping is due (>= 0), or -1 without a watchdog: a poll timeout. */
int host_notify_timeout_ms(const struct host_notify *n, double now);

/* Install the SIGTERM/SIGINT handlers and the self-pipe, ignore SIGPIPE. Call early (before
 * a long load), once. Returns 0, or -1 with a message in err[256]. */
int host_signals_init(char *err);
/* The signal that asked rt_host to stop (SIGTERM or SIGINT), or 0. */
int host_signals_stop(void);
/* Read end of the self-pipe: readable after a signal (poll it, drain it). */
int host_signals_fd(void);
/* Close the self-pipe. */
void host_signals_free(void);

/* Milliseconds on the monotonic clock. */
double host_now_ms(void);

/* One log line on standard error: "rt_host: <message>\n", written with one write(2) so lines
 * of concurrent writers do not mix. Standard output is reserved for the protocol. */
void host_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
