/* test_host_sock.c — the real rt_host binary (--backend fake) on a Unix socket, under a fake
 * supervisor: readiness, watchdog and stopping datagrams on a test NOTIFY_SOCKET (path and
 * abstract), several clients at once (health answered mid-generation, a request queued, one
 * refused busy, one connection too many), a client that disconnects mid-stream (generation
 * stops, the next request is served at once), a half-closed client still answered, SIGTERM
 * with a client mid-stream, and the socket path rules (stale file replaced, live socket and
 * other files refused with exit 3). */
#include "test/test_host.h"

static char sock_path[80], notify_path[80];

struct client {
    struct th_rd rd;
};

static int client_open(struct client *c, const char *path)
{
    memset(c, 0, sizeof *c);
    c->rd.fd = th_connect(path, TH_WAIT_MS);
    return c->rd.fd;
}

static void client_close(struct client *c)
{
    if (c->rd.fd >= 0)
        close(c->rd.fd);
    c->rd.fd = -1;
}

static int dgram_bind(const char *name)
{
    struct sockaddr_un a;
    int abstract = name[0] == '@';
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", name);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name) + !abstract);
    if (abstract)
        a.sun_path[0] = 0;
    else
        unlink(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    return bind(fd, (struct sockaddr *)&a, len) ? -1 : fd;
}

/* Wait up to ms for a datagram containing want; counts WATCHDOG=1 pings seen on the way. */
static int dgram_wait(int fd, const char *want, int ms, int *pings)
{
    char buf[512];
    double end = th_now() + ms;
    for (;;) {
        int left = (int)(end - th_now());
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, left) <= 0)
            return 0;
        ssize_t r = recv(fd, buf, sizeof buf - 1, 0);
        if (r <= 0)
            return 0;
        buf[r] = 0;
        if (pings && strstr(buf, "WATCHDOG=1"))
            (*pings)++;
        if (strstr(buf, want))
            return 1;
    }
}

/* ---- many clients --------------------------------------------------------------------------- */

static void test_clients(void)
{
    struct th_proc p;
    struct client a, b, c, d;
    char text[4096], env1[120], env2[] = "WATCHDOG_USEC=200000";
    int n, pings = 0;
    snprintf(env1, sizeof env1, "NOTIFY_SOCKET=%s", notify_path);
    const char *env[] = {env1, env2, NULL};
    const char *args[] = {"--backend",   "fake",          "--tokenizer", TH_TOK,       "--fake",
                          "delay_ms=30", "--listen",      sock_path,     "--no-stdin", "--queue",
                          "1",           "--max-clients", "3",           NULL};
    int nfd = dgram_bind(notify_path);
    th_spawn(&p, args, env);
    CHECK(dgram_wait(nfd, "READY=1", TH_WAIT_MS, NULL) && th_log_has(&p, "ready"),
          "NOTIFY_SOCKET: READY=1 once loaded, and a \"ready\" log line");
    dgram_wait(nfd, "never", 700, &pings);
    CHECK(pings >= 3,
          "NOTIFY_SOCKET: WATCHDOG=1 every 100 ms for WATCHDOG_USEC=200000 (%d in "
          "0.7 s)",
          pings);

    client_open(&a, sock_path);
    th_sock_send(a.rd.fd, "{\"id\":1,\"prompt\":\"over the socket\",\"max_tokens\":3}");
    char *l = th_rcollect(&a.rd, "1", text, sizeof text, &n, NULL);
    CHECK(th_is(l, "text", "over the socket"), "a request over the socket is answered on it");
    free(l);

    th_sock_send(a.rd.fd,
                 "{\"id\":2,\"prompt\":\"a b c d\",\"max_tokens\":100000,\"stream\":true}");
    l = th_rline(&a.rd, TH_WAIT_MS);
    client_open(&b, sock_path);
    double t0 = th_now();
    th_sock_send(b.rd.fd, "{\"id\":\"h\",\"cmd\":\"health\"}");
    char *h = th_rline(&b.rd, TH_WAIT_MS);
    CHECK(th_is(l, "text", "a") && th_is(h, "cmd", "health") && strstr(h, "\"busy\":true") &&
              th_now() - t0 < 2000,
          "health from a second client is answered mid-generation (busy: true)");
    free(l);
    free(h);

    th_sock_send(b.rd.fd, "{\"id\":3,\"prompt\":\"queued request\",\"max_tokens\":2}");
    client_open(&c, sock_path);
    th_sock_send(c.rd.fd, "{\"id\":4,\"prompt\":\"one too many\"}");
    l = th_rline(&c.rd, TH_WAIT_MS);
    CHECK(th_is(l, "error.code", "busy") && th_num(l, "id") == 4,
          "a request beyond --queue gets busy");
    free(l);
    client_open(&d, sock_path);
    l = th_rline(&d.rd, TH_WAIT_MS);
    char *eof = th_rline(&d.rd, TH_WAIT_MS);
    CHECK(th_is(l, "error.code", "busy") && !eof,
          "a connection beyond --max-clients: busy, closed");
    free(l);
    client_close(&d);

    client_close(&a); /* gone mid-stream */
    t0 = th_now();
    l = th_rcollect(&b.rd, "3", text, sizeof text, &n, NULL);
    CHECK(th_is(l, "text", "queued request") && th_now() - t0 < 5000,
          "a client that disconnects mid-stream stops its generation; the queued request runs "
          "(%.0f ms)",
          th_now() - t0);
    free(l);
    th_sock_send(c.rd.fd, "{\"id\":5,\"cmd\":\"stats\"}");
    l = th_rline(&c.rd, TH_WAIT_MS);
    CHECK(th_num(l, "stats.disconnects") >= 1 && th_num(l, "stats.busy") == 2 &&
              th_num(l, "stats.completed") == 2 && th_num(l, "stats.completion_tokens") < 1000,
          "stats count the disconnect and the two busy refusals");
    free(l);

    th_sock_send(b.rd.fd,
                 "{\"id\":6,\"prompt\":\"a b c d\",\"max_tokens\":100000,\"stream\":true}");
    l = th_rline(&b.rd, TH_WAIT_MS);
    kill(p.pid, SIGTERM);
    char *fin = th_rcollect(&b.rd, "6", text, sizeof text, &n, NULL);
    int stopping = dgram_wait(nfd, "STOPPING=1", TH_WAIT_MS, NULL);
    int rc = th_wait(&p, TH_WAIT_MS);
    CHECK(l && th_is(fin, "finish_reason", "shutdown") && rc == 0,
          "SIGTERM with a client mid-stream: finish_reason shutdown on the socket, exit 0");
    CHECK(stopping && access(sock_path, F_OK) != 0,
          "NOTIFY_SOCKET: STOPPING=1; the socket file is removed");
    free(l);
    free(fin);
    client_close(&b);
    client_close(&c);
    close(nfd);
    unlink(notify_path);
    th_end(&p, 100);
}

/* ---- abstract names, stdin beside the socket, half-close ------------------------------------ */

static void test_abstract(void)
{
    struct th_proc p;
    struct client a;
    char name[64], nname[64], env1[120], text[4096];
    int n;
    snprintf(name, sizeof name, "@test_host_sock_%d", (int)getpid());
    snprintf(nname, sizeof nname, "@test_host_notify_%d", (int)getpid());
    snprintf(env1, sizeof env1, "NOTIFY_SOCKET=%s", nname);
    const char *env[] = {env1, NULL};
    const char *args[] = {"--backend", "fake",   "--tokenizer",     TH_TOK, "--listen",
                          name,        "--fake", "max_seq=4000000", NULL};
    int nfd = dgram_bind(nname);
    th_spawn(&p, args, env);
    CHECK(dgram_wait(nfd, "READY=1", TH_WAIT_MS, NULL), "NOTIFY_SOCKET=@name: READY=1");

    client_open(&a, name);
    th_sock_send(a.rd.fd, "{\"id\":1,\"prompt\":\"half closed\",\"max_tokens\":2,\"stream\":true}");
    shutdown(a.rd.fd, SHUT_WR);
    char *l = th_rcollect(&a.rd, "1", text, sizeof text, &n, NULL);
    char *eof = th_rline(&a.rd, TH_WAIT_MS);
    CHECK(a.rd.fd >= 0 && th_is(l, "finish_reason", "length") && !strcmp(text, "half closed") &&
              !eof,
          "@abstract socket; a half-closed client gets its answer, then the end");
    free(l);
    client_close(&a);

    /* a client that asks for a flood and never reads is dropped, not waited for */
    struct client slow;
    client_open(&slow, name);
    th_sock_send(slow.rd.fd, "{\"id\":\"flood\",\"prompt\":\"a b c d e f g h\","
                             "\"max_tokens\":3000000,\"stream\":true}");
    client_open(&a, name);
    th_sock_send(a.rd.fd, "{\"id\":\"after\",\"prompt\":\"next one\",\"max_tokens\":2}");
    l = th_rcollect(&a.rd, "\"after\"", text, sizeof text, &n, NULL);
    CHECK(th_is(l, "text", "next one") && th_log_has(&p, "too slow reading its output"),
          "a client that stops reading is dropped after 8 MiB; the next request is served");
    free(l);
    client_close(&a);
    client_close(&slow);

    th_send(&p, "{\"id\":\"in\",\"prompt\":\"from stdin\",\"max_tokens\":2}");
    l = th_collect(&p, "\"in\"", text, sizeof text, &n);
    CHECK(th_is(l, "text", "from stdin"), "standard input is served beside the socket");
    free(l);

    client_open(&a, name);
    th_sock_send(a.rd.fd, "{\"id\":9,\"cmd\":\"shutdown\"}");
    l = th_rline(&a.rd, TH_WAIT_MS);
    CHECK(th_is(l, "cmd", "shutdown") && th_wait(&p, TH_WAIT_MS) == 0 &&
              dgram_wait(nfd, "STOPPING=1", 1000, NULL),
          "shutdown over the socket: exit 0, STOPPING=1");
    free(l);
    client_close(&a);
    close(nfd);
    th_end(&p, 100);
}

/* ---- socket paths --------------------------------------------------------------------------- */

static void test_paths(void)
{
    struct th_proc p, q;
    struct client a;
    char text[4096];
    int n;
    const char *args[] = {"--backend", "fake",    "--tokenizer", TH_TOK,
                          "--listen",  sock_path, "--no-stdin",  NULL};

    /* a socket file whose server died: bound, never listened, closed */
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    unlink(sock_path);
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    close(fd);
    th_spawn(&p, args, NULL);
    client_open(&a, sock_path);
    th_sock_send(a.rd.fd, "{\"id\":1,\"prompt\":\"stale\",\"max_tokens\":2}");
    char *l = th_rcollect(&a.rd, "1", text, sizeof text, &n, NULL);
    CHECK(th_is(l, "text", "stale"), "a stale socket file is replaced");
    free(l);

    th_spawn(&q, args, NULL);
    CHECK(th_end(&q, TH_WAIT_MS) == 3 && th_log_has(&p, "ready"),
          "a second rt_host on a live socket: exit 3, the first keeps serving");
    th_sock_send(a.rd.fd, "{\"id\":2,\"prompt\":\"still mine\",\"max_tokens\":2}");
    l = th_rcollect(&a.rd, "2", text, sizeof text, &n, NULL);
    CHECK(th_is(l, "text", "still mine"), "the first one still answers");
    free(l);
    client_close(&a);
    kill(p.pid, SIGTERM);
    CHECK(th_end(&p, TH_WAIT_MS) == 0, "SIGTERM while idle: exit 0");

    FILE *f = fopen(sock_path, "w");
    fputs("not a socket", f);
    fclose(f);
    th_spawn(&q, args, NULL);
    CHECK(th_end(&q, TH_WAIT_MS) == 3 && access(sock_path, F_OK) == 0,
          "a path that is not a socket: exit 3, the file left alone");
    unlink(sock_path);
}

int main(void)
{
    snprintf(sock_path, sizeof sock_path, "/tmp/test_host_sock_%d.sock", (int)getpid());
    snprintf(notify_path, sizeof notify_path, "/tmp/test_host_notify_%d", (int)getpid());
    CHECK(access(th_bin(), X_OK) == 0, "the binary under test: %s", th_bin());
    signal(SIGPIPE, SIG_IGN);
    test_clients();
    test_abstract();
    test_paths();
    return test_done();
}
