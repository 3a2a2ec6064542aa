/* server.h — rt_host's request loop: JSON lines from standard input and, with --listen, from
 * clients of a Unix stream socket; one request generates at a time (host/README.md has the
 * whole contract).
 *
 * Scheduling: every connection (standard input/output counts as one) is read all the time, so
 * health, stats and shutdown are answered at once, also in the middle of a generation.
 * Generation requests wait in one FIFO queue of at most queue_max entries behind the running
 * one. When it is full, a socket client's request is refused with "busy" (it can retry or go
 * elsewhere), while standard input is simply not read until there is room (back-pressure: a
 * file piped into rt_host is served in full, never refused).
 *
 * Stopping: on SIGTERM/SIGINT (notify.h) or a shutdown command, a request in flight ends with
 * finish_reason "shutdown" at its next token, waiting requests get the same, and
 * host_server_run returns HOST_EXIT_OK. A reader that went away (EPIPE, a closed socket) ends
 * its connection's generation early. */
#ifndef HOST_SERVER_H
#define HOST_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "host/gen.h"
#include "host/notify.h"

/* Exit codes of rt_host: what a supervisor should do (host/README.md). */
enum host_exit {
    HOST_EXIT_OK = 0,      /* clean stop: end of input, shutdown command, SIGTERM/SIGINT */
    HOST_EXIT_USAGE = 2,   /* bad command line: fix the unit file, do not restart */
    HOST_EXIT_CONFIG = 3,  /* plan, weights, tokenizer or socket path wrong: do not restart */
    HOST_EXIT_RUNTIME = 4, /* GPU or runtime failure (e.g. a lost context): restart may help */
};

struct host_server_opts {
    const char *listen_path; /* Unix socket path or "@abstract" name; NULL: none */
    int use_stdin;           /* serve standard input / standard output */
    size_t max_line;         /* bytes in one request line, newline excluded */
    uint32_t queue_max;      /* generation requests waiting behind the running one */
    uint32_t max_clients;    /* socket connections at once */
    int quiet;               /* no log line per request */
};

/* Open the listening socket for opts->listen_path. Returns the fd, or -1 with a message in
 * err[256] (HOST_EXIT_CONFIG: path unusable, or another process is serving it). */
int host_server_listen(const char *path, char *err);

/* Serve until the input ends (standard input closed and no socket), a shutdown command, a
 * signal, or an engine failure. listen_fd is from host_server_listen (or -1) and is closed
 * here. Sends READY=1 and watchdog pings through n. Returns an enum host_exit. */
int host_server_run(const struct host_server_opts *o, const struct host_gen *g,
                    struct host_notify *n, int listen_fd);

#endif
