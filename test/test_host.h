/* test_host.h — what the rt_host tests share: start the real binary with pipes on its
 * standard input and output (its log goes to a file the test can read), exchange JSON lines
 * with a time limit, read fields of a record, and connect to its Unix socket.
 *
 * The binary is $RT_HOST when set, else build/san/rt_host (built with the sanitizers, so that
 * hostile input that upsets memory fails the test) when it exists, else build/rt_host. Every
 * wait has a limit, so a hung rt_host fails a check instead of hanging the test run. */
#ifndef TEST_HOST_H
#define TEST_HOST_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "plan/json.h"
#include "test/test.h"

#define TH_TOK     "test/data/tok/qwen3_tokenizer.json"
#define TH_WAIT_MS 20000 /* generous: the sanitized binary loads the tokenizer slowly */

/* A line reader over one descriptor (its standard output, or a socket). */
struct th_rd {
    int fd;
    char buf[1 << 16];
    size_t n; /* bytes of buf not yet returned */
};

struct th_proc {
    pid_t pid;
    int in;           /* our end of its standard input */
    struct th_rd out; /* its standard output */
    char log[96];     /* its standard error */
};

static inline const char *th_bin(void)
{
    const char *b = getenv("RT_HOST");
    if (b && *b)
        return b;
    return access("build/san/rt_host", X_OK) == 0 ? "build/san/rt_host" : "build/rt_host";
}

static inline double th_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Start rt_host with args (NULL-terminated, argv[0] excluded) and extra environment
 * assignments env ("K=V", NULL-terminated, may be NULL). Exits the test if it cannot. */
static inline void th_spawn(struct th_proc *p, const char *const *args, const char *const *env)
{
    static int seq;
    int pin[2], pout[2];
    const char *argv[64];
    size_t k = 0;
    memset(p, 0, sizeof *p);
    snprintf(p->log, sizeof p->log, "/tmp/test_host_%d_%d.log", (int)getpid(), seq++);
    argv[k++] = th_bin();
    for (; args && *args && k < 63; args++)
        argv[k++] = *args;
    argv[k] = NULL;
    if (pipe(pin) || pipe(pout)) {
        printf("FAIL pipe: %s\n", strerror(errno));
        exit(1);
    }
    p->pid = fork();
    if (p->pid == 0) {
        int lf = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        dup2(lf, 2);
        close(pin[0]), close(pin[1]), close(pout[0]), close(pout[1]), close(lf);
        for (; env && *env; env++)
            putenv((char *)*env);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    p->in = pin[1];
    p->out.fd = pout[0];
    /* a child that has exited makes th_send fail (EPIPE) and the check say so, instead of the
     * signal ending the test without a word */
    signal(SIGPIPE, SIG_IGN);
}

/* Write s and a newline to its standard input. Returns 0, or -1 if it is gone. */
static inline int th_send(struct th_proc *p, const char *s)
{
    size_t n = strlen(s);
    char *b = malloc(n + 1);
    memcpy(b, s, n);
    b[n] = '\n';
    size_t off = 0;
    while (off < n + 1) {
        ssize_t w = write(p->in, b + off, n + 1 - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(b);
    return off == n + 1 ? 0 : -1;
}

/* The next line from r, without its newline (malloc'd), or NULL at the end of the output or
 * after ms milliseconds. */
static inline char *th_rline(struct th_rd *p, int ms)
{
    int fd = p->fd;
    double end = th_now() + ms;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->n);
        if (nl) {
            size_t len = (size_t)(nl - p->buf);
            char *line = malloc(len + 1);
            memcpy(line, p->buf, len);
            line[len] = 0;
            memmove(p->buf, nl + 1, p->n - len - 1);
            p->n -= len + 1;
            return line;
        }
        int left = (int)(end - th_now());
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || p->n == sizeof p->buf || poll(&pf, 1, left) <= 0)
            return NULL;
        ssize_t r = read(fd, p->buf + p->n, sizeof p->buf - p->n);
        if (r <= 0)
            return NULL;
        p->n += (size_t)r;
    }
}

static inline char *th_line(struct th_proc *p, int ms)
{
    return th_rline(&p->out, ms);
}

/* Wait for it to exit; returns its exit status, 128 + signal, or -1 (then it is killed) when
 * it is still running after ms. */
static inline int th_wait(struct th_proc *p, int ms)
{
    int st;
    double end = th_now() + ms;
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid)
            break;
        if (th_now() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            return -1;
        }
        usleep(2000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Close our ends, wait for the exit, remove the log; returns the exit status. */
static inline int th_end(struct th_proc *p, int ms)
{
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
    int rc = th_wait(p, ms);
    close(p->out.fd);
    unlink(p->log);
    return rc;
}

/* 1 if its log contains s. */
static inline int th_log_has(const struct th_proc *p, const char *s)
{
    FILE *f = fopen(p->log, "rb");
    char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return strstr(buf, s) != NULL;
}

/* ---- fields of a record --------------------------------------------------------------------- */

/* Tape index of the value at a dotted path ("error.code") in a parsed record, or -1. */
static inline int64_t th_at(const struct json_doc *d, const char *path)
{
    char key[64];
    int64_t v = 0;
    while (*path && v >= 0) {
        size_t k = strcspn(path, ".");
        snprintf(key, sizeof key, "%.*s", (int)k, path);
        v = json_get(d, (uint32_t)v, key);
        path += k + (path[k] == '.');
    }
    return v;
}

/* The string at path in line, decoded (malloc'd; "" when absent or not a string; "<bad>" when
 * the line is not JSON). */
static inline char *th_str(const char *line, const char *path)
{
    struct json_doc d;
    char *out = NULL;
    memset(&d, 0, sizeof d);
    if (!line || json_parse(&d, line, strlen(line), 0)) {
        json_free(&d);
        return strdup("<bad>");
    }
    int64_t v = th_at(&d, path);
    if (v >= 0 && d.v[v].type == JSON_STRING) {
        size_t n = json_string_len(&d, (uint32_t)v);
        out = malloc(n + 1);
        json_string(&d, (uint32_t)v, out, n + 1, NULL);
    }
    json_free(&d);
    return out ? out : strdup("");
}

/* 1 if the string at path equals want. */
static inline int th_is(const char *line, const char *path, const char *want)
{
    char *s = th_str(line, path);
    int eq = !strcmp(s, want);
    free(s);
    return eq;
}

/* The number at path, or -1e300 when absent. */
static inline double th_num(const char *line, const char *path)
{
    struct json_doc d;
    double x = -1e300;
    memset(&d, 0, sizeof d);
    if (line && !json_parse(&d, line, strlen(line), 0)) {
        int64_t v = th_at(&d, path);
        if (v >= 0)
            json_f64(&d, (uint32_t)v, &x);
    }
    json_free(&d);
    return x;
}

/* 1 if path is present (any type). */
static inline int th_has(const char *line, const char *path)
{
    struct json_doc d;
    memset(&d, 0, sizeof d);
    int has = line && !json_parse(&d, line, strlen(line), 0) && th_at(&d, path) >= 0;
    json_free(&d);
    return has;
}

/* 1 if line is one valid JSON object. */
static inline int th_json(const char *line)
{
    struct json_doc d;
    memset(&d, 0, sizeof d);
    int ok = line && !json_parse(&d, line, strlen(line), 0) && d.v[0].type == JSON_OBJECT;
    json_free(&d);
    return ok;
}

/* Read records of one request until its final one (done or error); concatenates the text of
 * streamed records into text (cap bytes) and counts them. Returns the final line (malloc'd)
 * or NULL on a timeout. Records of other ids are skipped. */
static inline char *th_rcollect(struct th_rd *r, const char *id_json, char *text, size_t cap,
                                int *n_tokens, int *all_valid)
{
    size_t tn = 0;
    if (text)
        text[0] = 0;
    if (n_tokens)
        *n_tokens = 0;
    for (;;) {
        char *l = th_rline(r, TH_WAIT_MS);
        if (!l)
            return NULL;
        if (all_valid && !th_json(l))
            *all_valid = 0;
        char idbuf[300];
        snprintf(idbuf, sizeof idbuf, "{\"id\":%s,", id_json);
        if (strncmp(l, idbuf, strlen(idbuf))) {
            free(l);
            continue;
        }
        if (th_has(l, "done") || th_has(l, "error"))
            return l;
        if (th_has(l, "token") && n_tokens)
            (*n_tokens)++;
        char *t = th_str(l, "text");
        size_t k = strlen(t);
        if (text && tn + k < cap) {
            memcpy(text + tn, t, k + 1);
            tn += k;
        }
        free(t);
        free(l);
    }
}

static inline char *th_collect(struct th_proc *p, const char *id_json, char *text, size_t cap,
                               int *n_tokens)
{
    return th_rcollect(&p->out, id_json, text, cap, n_tokens, NULL);
}

/* ---- sockets -------------------------------------------------------------------------------- */

/* Connect to a Unix stream socket (path or @abstract), retrying until ms pass. -1 on failure. */
static inline int th_connect(const char *path, int ms)
{
    struct sockaddr_un a;
    size_t len = strlen(path);
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, path, len);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] != '@'));
    if (path[0] == '@')
        a.sun_path[0] = 0;
    double end = th_now() + ms;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && !connect(fd, (struct sockaddr *)&a, alen))
            return fd;
        if (fd >= 0)
            close(fd);
        if (th_now() > end)
            return -1;
        usleep(10000);
    }
}

static inline int th_sock_send(int fd, const char *s)
{
    size_t n = strlen(s);
    if (send(fd, s, n, MSG_NOSIGNAL) != (ssize_t)n || send(fd, "\n", 1, MSG_NOSIGNAL) != 1)
        return -1;
    return 0;
}

#endif
