/* server.c — the request loop (server.h): connections, lines, the queue, commands.
 *
 * One thread. The loop polls the signal self-pipe, the listening socket and every connection;
 * a generation runs inside host_gen_run, and between two tokens the engine's callback comes
 * back here (server_hook) for one poll with no wait: that is where signals, watchdog pings,
 * new clients, commands and disconnects are handled while a request runs. Connections are
 * freed only from the top of the main loop, never from inside a generation.
 *
 * Input: each connection has a line buffer of at most max_line + 2 bytes. A line longer than
 * max_line gets one line_too_long error, and the rest of it is read and dropped up to its
 * newline. Output: standard output is written with blocking writes (it is the supervisor's
 * pipe; rt_host does not change the flags of a descriptor it shares with its parent);
 * sockets are non-blocking, with what a client has not read yet kept in its buffer, and a
 * client that lets OUT_MAX bytes pile up is dropped rather than allowed to stall everyone. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "host/server.h"

#define READ_CHUNK 65536
#define OUT_MAX    (8u << 20) /* bytes a socket client may leave unread before it is dropped */
#define FLUSH_MS   2000       /* at shutdown, how long unread output is offered to clients */

struct conn {
    int in_fd, out_fd; /* standard input/output, or one socket twice */
    int stdio;
    char *in; /* unparsed input */
    size_t in_n, in_cap;
    int discarding;      /* dropping the rest of a line that was too long */
    int held;            /* complete lines wait until the queue has room (stdio only) */
    int eof, dead;       /* no more input; reader gone (output dropped, requests cut) */
    struct host_buf out; /* sockets: output not written yet, from out_off */
    size_t out_off;
    uint32_t refs; /* requests of this connection queued or running */
};

struct job {
    struct conn *c;
    struct host_req req;
    double t_recv;
};

struct stats {
    uint64_t requests, completed, errors, busy, disconnects, prompt_tokens, completion_tokens;
    char last_code[32], last_msg[HOST_MSG_LEN];
    double last_at;
};

struct server {
    const struct host_server_opts *o;
    const struct host_gen *g;
    struct host_notify *notify;
    int listen_fd;
    struct conn **conns; /* [0, n_conns) */
    uint32_t n_conns, max_conns;
    struct job *queue; /* ring of queue_max + 1 */
    uint32_t q_head, q_len, q_cap;
    struct job *running;
    int stopping;
    int exit_code;
    double t_start;
    struct stats st;
    struct host_buf rec; /* the record being written */
};

/* ---- connections ---------------------------------------------------------------------------- */

static struct conn *conn_new(struct server *s, int in_fd, int out_fd, int stdio)
{
    struct conn *c;
    if (s->n_conns == s->max_conns || !(c = calloc(1, sizeof *c)))
        return NULL;
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->stdio = stdio;
    s->conns[s->n_conns++] = c;
    return c;
}

static void conn_free(struct conn *c)
{
    if (!c->stdio)
        close(c->in_fd);
    free(c->in);
    host_buf_free(&c->out);
    free(c);
}

/* A connection whose reader went away: its output is dropped and its requests cut short.
 * A client that leaves with nothing outstanding is just done; one that leaves requests
 * unanswered, or standard output closing, is counted and logged. */
static void conn_kill(struct server *s, struct conn *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (!c->stdio && !c->refs)
        return;
    s->st.disconnects++;
    if (c->stdio)
        host_log("standard output: %s", why);
    else
        host_log("client: %s, %u request(s) unanswered", why, c->refs);
}

static void conn_flush(struct server *s, struct conn *c)
{
    while (!c->dead && c->out_off < c->out.n) {
        ssize_t w = send(c->out_fd, c->out.p + c->out_off, c->out.n - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (w <= 0) {
            conn_kill(s, c, "disconnected");
            return;
        }
        c->out_off += (size_t)w;
    }
    c->out.n = c->out_off = 0;
}

/* Blocking write of a whole record to standard output; EINTR (a signal) does not cut it. */
static void stdio_write(struct server *s, struct conn *c, const char *p, size_t n)
{
    for (size_t off = 0; off < n;) {
        ssize_t w = write(c->out_fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            conn_kill(s, c, errno == EPIPE ? "closed (EPIPE)" : strerror(errno));
            return;
        }
        off += (size_t)w;
    }
}

/* Send one record (s->rec) to c. Returns -1 when the reader is gone. */
static int conn_send(struct server *s, struct conn *c)
{
    if (c->dead)
        return -1;
    if (s->rec.oom) {
        host_log("out of memory writing a record");
        s->rec.oom = 0;
        return 0;
    }
    if (c->stdio) {
        stdio_write(s, c, s->rec.p, s->rec.n);
    } else {
        host_buf_put(&c->out, s->rec.p, s->rec.n);
        conn_flush(s, c);
        if (c->out.oom || c->out.n - c->out_off > OUT_MAX)
            conn_kill(s, c, "too slow reading its output");
    }
    return c->dead ? -1 : 0;
}

static void note_error(struct server *s, enum host_errc code, const char *msg)
{
    s->st.errors++;
    snprintf(s->st.last_code, sizeof s->st.last_code, "%s", host_errc_name(code));
    snprintf(s->st.last_msg, sizeof s->st.last_msg, "%s", msg);
    s->st.last_at = host_now_ms();
}

static void send_error(struct server *s, struct conn *c, const char *id, enum host_errc code,
                       const char *msg)
{
    note_error(s, code, msg);
    if (!s->o->quiet)
        host_log("request %s: %s: %s", id, host_errc_name(code), msg);
    s->rec.n = 0;
    host_rec_error(&s->rec, id, code, msg);
    conn_send(s, c);
}

/* ---- commands and the queue ----------------------------------------------------------------- */

static uint32_t outstanding(const struct server *s)
{
    return s->q_len + (s->running ? 1 : 0);
}

static int can_accept(const struct server *s)
{
    return outstanding(s) < s->o->queue_max + 1;
}

static void reply_stats(struct server *s, const char *id)
{
    struct host_buf *b = &s->rec;
    double now = host_now_ms();
    host_buf_fmt(b, "{\"id\":%s,\"cmd\":\"stats\",\"stats\":{\"uptime_s\":", id);
    host_buf_json_num(b, (now - s->t_start) / 1e3);
    host_buf_fmt(b,
                 ",\"requests\":%llu,\"completed\":%llu,\"errors\":%llu,\"busy\":%llu,"
                 "\"disconnects\":%llu,\"prompt_tokens\":%llu,\"completion_tokens\":%llu,"
                 "\"queued\":%u,\"running\":%d,\"clients\":%u,\"backend\":",
                 (unsigned long long)s->st.requests, (unsigned long long)s->st.completed,
                 (unsigned long long)s->st.errors, (unsigned long long)s->st.busy,
                 (unsigned long long)s->st.disconnects, (unsigned long long)s->st.prompt_tokens,
                 (unsigned long long)s->st.completion_tokens, s->q_len, s->running ? 1 : 0,
                 s->n_conns);
    host_buf_json_str(b, s->g->info.backend, strlen(s->g->info.backend));
    host_buf_puts(b, ",\"device\":");
    host_buf_json_str(b, s->g->info.device, strlen(s->g->info.device));
    host_buf_fmt(b, ",\"max_seq\":%u,\"vocab\":%u,\"last_error\":", s->g->info.max_seq,
                 s->g->info.vocab);
    if (s->st.last_code[0]) {
        host_buf_fmt(b, "{\"code\":\"%s\",\"message\":", s->st.last_code);
        host_buf_json_str(b, s->st.last_msg, strlen(s->st.last_msg));
        host_buf_puts(b, ",\"age_s\":");
        host_buf_json_num(b, (now - s->st.last_at) / 1e3);
        host_buf_puts(b, "}");
    } else {
        host_buf_puts(b, "null");
    }
    host_buf_puts(b, "}}\n");
}

static void handle_cmd(struct server *s, struct conn *c, const struct host_req *r)
{
    s->rec.n = 0;
    if (r->kind == HOST_REQ_HEALTH) {
        host_buf_fmt(&s->rec,
                     "{\"id\":%s,\"cmd\":\"health\",\"status\":\"ok\",\"busy\":%s,"
                     "\"queued\":%u,\"uptime_s\":",
                     r->id, s->running ? "true" : "false", s->q_len);
        host_buf_json_num(&s->rec, (host_now_ms() - s->t_start) / 1e3);
        host_buf_puts(&s->rec, "}\n");
    } else if (r->kind == HOST_REQ_STATS) {
        reply_stats(s, r->id);
    } else {
        host_buf_fmt(&s->rec, "{\"id\":%s,\"cmd\":\"shutdown\",\"ok\":true}\n", r->id);
        host_log("shutdown requested");
        s->stopping = 1;
    }
    conn_send(s, c);
}

/* Queue a generation request (taking over r), or refuse it with busy. */
static void enqueue(struct server *s, struct conn *c, struct host_req *r, double t_recv)
{
    if (!can_accept(s)) {
        char msg[96];
        s->st.busy++;
        snprintf(msg, sizeof msg, "%u requests are waiting already; retry later", s->q_len);
        send_error(s, c, r->id, HOST_E_BUSY, msg);
        host_req_free(r);
        return;
    }
    struct job *j = &s->queue[(s->q_head + s->q_len++) % s->q_cap];
    j->c = c;
    j->req = *r;
    j->t_recv = t_recv;
    memset(r, 0, sizeof *r);
    c->refs++;
    s->st.requests++;
}

static int blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

static void handle_line(struct server *s, struct conn *c, const char *line, size_t len)
{
    struct host_req r;
    struct host_error e;
    double t = host_now_ms();
    if (blank(line, len))
        return; /* empty lines are allowed between requests and get no answer */
    if (host_req_parse(&r, line, len, &e))
        send_error(s, c, r.id, e.code, e.msg);
    else if (r.kind != HOST_REQ_GENERATE)
        handle_cmd(s, c, &r);
    else
        enqueue(s, c, &r, t);
    host_req_free(&r);
}

/* ---- reading -------------------------------------------------------------------------------- */

/* Handle the complete lines in c's buffer, as far as the queue allows for standard input. */
static void conn_lines(struct server *s, struct conn *c)
{
    size_t off = 0;
    c->held = 0;
    while (!c->dead && !s->stopping && off < c->in_n) {
        char *p = c->in + off, *nl = memchr(p, '\n', c->in_n - off);
        if (c->discarding) {
            off = nl ? (size_t)(nl - c->in) + 1 : c->in_n;
            c->discarding = !nl;
            continue;
        }
        size_t len = nl ? (size_t)(nl - p) : c->in_n - off;
        if (len > s->o->max_line) {
            char msg[96];
            snprintf(msg, sizeof msg, "a request line may hold at most %zu bytes", s->o->max_line);
            send_error(s, c, "null", HOST_E_LINE_TOO_LONG, msg);
            off = nl ? off + len + 1 : c->in_n;
            c->discarding = !nl;
            continue;
        }
        if (!nl)
            break;
        if (c->stdio && !can_accept(s) && !blank(p, len)) {
            c->held = 1;
            break;
        }
        off += len + 1;
        handle_line(s, c, p, len);
    }
    memmove(c->in, c->in + off, c->in_n - off);
    c->in_n -= off;
}

static int want_read(const struct server *s, const struct conn *c)
{
    return !c->dead && !c->eof && !c->held && !s->stopping;
}

static void conn_read(struct server *s, struct conn *c)
{
    size_t cap = s->o->max_line + 2; /* a full line, its newline, and one byte to see more */
    if (c->in_cap - c->in_n < READ_CHUNK && c->in_cap < cap) {
        size_t want = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
        want = want < cap ? want : cap;
        char *p = realloc(c->in, want);
        if (!p) {
            conn_kill(s, c, "out of memory for its input");
            return;
        }
        c->in = p;
        c->in_cap = want;
    }
    size_t room = c->in_cap - c->in_n;
    if (!room)
        return; /* cannot happen: conn_lines leaves at most max_line bytes unless held */
    ssize_t r = read(c->in_fd, c->in + c->in_n, room < READ_CHUNK ? room : READ_CHUNK);
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (r <= 0) {
        c->eof = 1;
        if (c->in_n && c->in[c->in_n - 1] != '\n')
            c->in[c->in_n++] = '\n'; /* the last line needs no newline (room is kept for it) */
    } else {
        c->in_n += (size_t)r;
    }
    conn_lines(s, c);
}

static void accept_client(struct server *s)
{
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (!conn_new(s, fd, fd, 0)) {
        static const char busy[] =
            "{\"id\":null,\"error\":{\"code\":\"busy\",\"message\":\"too many clients\"}}\n";
        ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL);
        (void)w;
        close(fd);
        s->st.busy++;
        note_error(s, HOST_E_BUSY, "too many clients");
    }
}

/* ---- polling -------------------------------------------------------------------------------- */

enum poll_role { ROLE_SIGNAL = 1, ROLE_LISTEN, ROLE_STDIN, ROLE_STDOUT, ROLE_SOCKET };

/* What service() polls: the descriptor, what for, and whose it is. */
struct poll_set {
    struct pollfd *pf;
    struct conn **who;
    uint8_t *role;
    nfds_t n;
};

static void poll_add(struct poll_set *ps, int fd, short ev, struct conn *c, enum poll_role r)
{
    ps->pf[ps->n] = (struct pollfd){fd, ev, 0};
    ps->who[ps->n] = c;
    ps->role[ps->n++] = (uint8_t)r;
}

/* Standard input is left out while it is not to be read: at the end of a pipe it would
 * report POLLHUP at every call. Standard output is watched for its reader going away. */
static void poll_build(struct server *s, struct poll_set *ps)
{
    poll_add(ps, host_signals_fd(), POLLIN, NULL, ROLE_SIGNAL);
    if (s->listen_fd >= 0 && !s->stopping)
        poll_add(ps, s->listen_fd, POLLIN, NULL, ROLE_LISTEN);
    for (uint32_t i = 0; i < s->n_conns; i++) {
        struct conn *c = s->conns[i];
        short ev = want_read(s, c) ? POLLIN : 0;
        if (c->dead)
            continue;
        if (c->stdio) {
            if (ev)
                poll_add(ps, c->in_fd, ev, c, ROLE_STDIN);
            poll_add(ps, c->out_fd, 0, c, ROLE_STDOUT);
        } else {
            poll_add(ps, c->in_fd, ev | (c->out_off < c->out.n ? POLLOUT : 0), c, ROLE_SOCKET);
        }
    }
}

static void poll_handle(struct server *s, struct conn *c, enum poll_role role, short re)
{
    char drain[64];
    switch (role) {
    case ROLE_SIGNAL:
        while (read(host_signals_fd(), drain, sizeof drain) > 0) {
        }
        break;
    case ROLE_LISTEN:
        accept_client(s);
        break;
    case ROLE_STDIN:
        conn_read(s, c);
        break; /* POLLHUP: what is left, then the end */
    case ROLE_STDOUT:
        conn_kill(s, c, "closed");
        break;
    case ROLE_SOCKET:
        if (re & (POLLHUP | POLLERR | POLLNVAL)) { /* the peer closed both directions */
            conn_kill(s, c, "disconnected");
            break;
        }
        if (re & POLLIN)
            conn_read(s, c);
        if (re & POLLOUT)
            conn_flush(s, c);
        break;
    }
}

/* One poll over every descriptor, waiting at most timeout ms (-1: until something happens). */
static void service(struct server *s, int timeout)
{
    struct pollfd pf[2 + 2 * s->max_conns];
    struct conn *who[2 + 2 * s->max_conns];
    uint8_t role[2 + 2 * s->max_conns];
    struct poll_set ps = {pf, who, role, 0};
    int wd = host_notify_timeout_ms(s->notify, host_now_ms());

    poll_build(s, &ps);
    if (wd >= 0 && (timeout < 0 || wd < timeout))
        timeout = wd;
    int r = poll(pf, ps.n, timeout);
    host_notify_watchdog(s->notify, host_now_ms());
    for (nfds_t i = 0; r > 0 && i < ps.n; i++)
        if (pf[i].revents && (!who[i] || !who[i]->dead))
            poll_handle(s, who[i], (enum poll_role)role[i], pf[i].revents);
}

/* Called by the engine between tokens: one poll without waiting, then whether to stop. */
static int server_hook(void *ctx)
{
    struct server *s = ctx;
    service(s, 0);
    if (host_signals_stop() && !s->stopping) {
        host_log("signal %d: stopping", host_signals_stop());
        s->stopping = 1;
    }
    if (s->stopping)
        return HOST_HALT_SHUTDOWN;
    return s->running && s->running->c->dead ? HOST_HALT_GONE : HOST_HALT_NONE;
}

static int server_token(void *ctx, int32_t id, const char *text, size_t n)
{
    struct server *s = ctx;
    s->rec.n = 0;
    host_rec_token(&s->rec, s->running->req.id, id, text, n);
    return conn_send(s, s->running->c);
}

/* ---- running requests ----------------------------------------------------------------------- */

static void log_done(struct server *s, const struct job *j, const struct host_result *res)
{
    if (s->o->quiet)
        return;
    host_log("request %s: %u prompt + %u generated tokens, %s; ttft %.1f ms, prefill %.1f tok/s, "
             "decode %.1f tok/s",
             j->req.id, res->prompt_tokens, res->completion_tokens, res->finish, res->ttft_ms,
             res->prefill_tok_s, res->decode_tok_s);
}

/* A request that will not run: the process is stopping. It still gets its final record. */
static void job_cancel(struct server *s, struct job *j)
{
    struct host_result res;
    memset(&res, 0, sizeof res);
    res.finish = "shutdown";
    res.full = !j->req.stream;
    res.queue_ms = res.total_ms = host_now_ms() - j->t_recv;
    s->rec.n = 0;
    host_rec_done(&s->rec, j->req.id, &res);
    conn_send(s, j->c);
}

static void job_finish(struct server *s, struct job *j, struct host_gen_out *out)
{
    struct conn *c = j->c;
    if (out->gone || c->dead)
        return;
    s->st.completed++;
    s->st.prompt_tokens += out->res.prompt_tokens;
    s->st.completion_tokens += out->res.completion_tokens;
    log_done(s, j, &out->res);
    if (j->req.stream && out->text.n) {
        s->rec.n = 0;
        host_rec_text(&s->rec, j->req.id, out->text.p, out->text.n);
        conn_send(s, c);
    }
    s->rec.n = 0;
    host_rec_done(&s->rec, j->req.id, &out->res);
    conn_send(s, c);
}

static void job_run(struct server *s, struct job *j)
{
    struct host_gen_io io = {s, server_token, server_hook};
    struct host_gen_out out;

    if (j->c->dead)
        return;
    if (s->stopping) {
        job_cancel(s, j);
        return;
    }
    s->running = j;
    host_notify_status(s->notify, "generating (request %s, %u waiting)", j->req.id, s->q_len);
    enum host_gen_status rc = host_gen_run(s->g, &j->req, j->t_recv, &io, &out);
    if (rc == HOST_GEN_DONE) {
        job_finish(s, j, &out);
    } else {
        send_error(s, j->c, j->req.id, out.err.code, out.err.msg);
        if (rc == HOST_GEN_FATAL) {
            host_log("engine failed: %s", out.err.msg);
            s->exit_code =
                out.fatal == HOST_ENGINE_ERR_CONFIG ? HOST_EXIT_CONFIG : HOST_EXIT_RUNTIME;
            s->stopping = 1;
        }
    }
    host_gen_out_free(&out);
    s->running = NULL;
    host_notify_status(s->notify, "ready");
}

/* Take the first waiting request off the queue and serve it. */
static void run_next(struct server *s)
{
    struct job j = s->queue[s->q_head];
    s->q_head = (s->q_head + 1) % s->q_cap;
    s->q_len--;
    job_run(s, &j);
    j.c->refs--;
    host_req_free(&j.req);
}

/* ---- the loop ------------------------------------------------------------------------------- */

/* Free connections that are finished: dead, or at the end of their input with everything
 * answered and written. Standard input/output stays until the loop ends. */
static void reap(struct server *s)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->n_conns; i++) {
        struct conn *c = s->conns[i];
        int done =
            !c->stdio && !c->refs && (c->dead || (c->eof && !c->in_n && c->out_off == c->out.n));
        if (done)
            conn_free(c);
        else
            s->conns[k++] = c;
    }
    s->n_conns = k;
}

/* Without a socket, rt_host ends when standard input has ended and every line is answered. */
static int input_over(const struct server *s)
{
    if (s->listen_fd >= 0)
        return 0;
    for (uint32_t i = 0; i < s->n_conns; i++) {
        const struct conn *c = s->conns[i];
        if (c->stdio && !c->dead && (!c->eof || c->in_n))
            return 0;
    }
    return s->q_len == 0;
}

static void loop(struct server *s)
{
    for (;;) {
        reap(s);
        if (host_signals_stop() && !s->stopping) {
            host_log("signal %d: stopping", host_signals_stop());
            s->stopping = 1;
        }
        if (s->stopping)
            return;
        if (s->q_len) {
            run_next(s);
            for (uint32_t i = 0; i < s->n_conns; i++)
                if (s->conns[i]->held)
                    conn_lines(s, s->conns[i]); /* lines that waited for room */
            continue;
        }
        if (input_over(s))
            return;
        service(s, -1);
    }
}

/* Everything still waiting gets its final record; output is offered to clients a while. */
static void drain(struct server *s)
{
    while (s->q_len) {
        struct job *j = &s->queue[s->q_head];
        if (!j->c->dead && s->exit_code == HOST_EXIT_OK)
            job_cancel(s, j);
        else if (!j->c->dead)
            send_error(s, j->c, j->req.id, HOST_E_INTERNAL, "the engine failed; rt_host exits");
        j->c->refs--;
        host_req_free(&j->req);
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
    }
    double end = host_now_ms() + FLUSH_MS;
    for (;;) {
        int pending = 0;
        for (uint32_t i = 0; i < s->n_conns; i++)
            pending |= !s->conns[i]->dead && s->conns[i]->out_off < s->conns[i]->out.n;
        double left = end - host_now_ms();
        if (!pending || left <= 0)
            break;
        service(s, (int)left + 1);
    }
}

/* 1 if nobody accepts connections at the socket address a. The probe uses a socket of its
 * own: a failed connect binds its socket to an automatic address, which could not bind again. */
static int listen_stale(const struct sockaddr_un *a, socklen_t alen)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int stale = fd >= 0 && connect(fd, (const struct sockaddr *)a, alen) && errno == ECONNREFUSED;
    if (fd >= 0)
        close(fd);
    return stale;
}

int host_server_listen(const char *path, char *err)
{
    struct sockaddr_un a;
    struct stat sb;
    size_t len = strlen(path);
    socklen_t alen;

    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (len < 2 || len > sizeof a.sun_path - 1) {
        snprintf(err, 256, "--listen %s: a socket path has 2 to %zu bytes", path,
                 sizeof a.sun_path - 1);
        return -1;
    }
    memcpy(a.sun_path, path, len);
    alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] != '@'));
    if (path[0] == '@')
        a.sun_path[0] = 0; /* abstract namespace: no file, gone with the process */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, 256, "socket: %s", strerror(errno));
        return -1;
    }
    if (path[0] != '@' && !lstat(path, &sb)) {
        /* a socket file left by a process that died is removed; a live one is not taken over */
        if (!S_ISSOCK(sb.st_mode) || !listen_stale(&a, alen)) {
            snprintf(err, 256, "--listen %s: %s", path,
                     S_ISSOCK(sb.st_mode) ? "another process is serving this socket"
                                          : "exists and is not a socket");
            close(fd);
            return -1;
        }
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&a, alen) || listen(fd, 16)) {
        snprintf(err, 256, "--listen %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int server_init(struct server *s, const struct host_server_opts *o, const struct host_gen *g,
                       struct host_notify *n, int listen_fd)
{
    memset(s, 0, sizeof *s);
    s->o = o;
    s->g = g;
    s->notify = n;
    s->listen_fd = listen_fd;
    s->t_start = host_now_ms();
    s->max_conns = o->max_clients + (o->use_stdin ? 1 : 0);
    s->q_cap = o->queue_max + 1;
    s->conns = calloc(s->max_conns, sizeof *s->conns);
    s->queue = calloc(s->q_cap, sizeof *s->queue);
    if (!s->conns || !s->queue)
        return -1;
    if (o->use_stdin && !conn_new(s, STDIN_FILENO, STDOUT_FILENO, 1))
        return -1;
    return 0;
}

static void server_free(struct server *s)
{
    for (uint32_t i = 0; i < s->n_conns; i++)
        conn_free(s->conns[i]);
    free(s->conns);
    free(s->queue);
    host_buf_free(&s->rec);
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        if (s->o->listen_path && s->o->listen_path[0] != '@')
            unlink(s->o->listen_path);
    }
}

int host_server_run(const struct host_server_opts *o, const struct host_gen *g,
                    struct host_notify *n, int listen_fd)
{
    struct server s;
    if (server_init(&s, o, g, n, listen_fd)) {
        host_log("out of memory setting up the request loop");
        server_free(&s);
        return HOST_EXIT_RUNTIME;
    }
    host_log("ready: backend %s, %s, context %u tokens, vocabulary %u%s%s", g->info.backend,
             g->info.device, g->info.max_seq, g->info.vocab,
             o->listen_path ? ", listening on " : "", o->listen_path ? o->listen_path : "");
    host_notify_send(n, "READY=1\nSTATUS=ready");
    host_notify_watchdog(n, host_now_ms());
    loop(&s);
    host_notify_send(n, "STOPPING=1\nSTATUS=stopping");
    drain(&s);
    host_log("stopped: %llu requests completed, %llu errors", (unsigned long long)s.st.completed,
             (unsigned long long)s.st.errors);
    int rc = s.exit_code;
    server_free(&s);
    return rc;
}
