/* A constant-throughput HTTP/1.1 load generator (open loop, like wrk2), for bench_serve.py.
 *
 *   fixed_rate HOST PORT PATH BODY_FILE RATE SECONDS [CONNECTIONS]
 *
 * Request i is due at start + i / RATE. It is sent on the first idle keep-alive connection at
 * or after that moment, and its latency counts from when it was due, so a server that stalls
 * pays for every request that queued behind the stall (no coordinated omission). One thread,
 * epoll, and an absolute-time timerfd: the send lag (sent - due) is reported, so the
 * generator's own jitter is measured beside the server's latency, not mixed into it unseen.
 * The Python client it replaces (asyncio, millisecond timers) added ~1 ms to every request.
 *
 * Prints one JSON object: latencies from due (p50/p90/p99/p999/max), the same from the actual
 * send ("service"), the send lag, statuses, errors, and what had not been answered when the
 * run ended (a server that falls behind gets as long again as the run to catch up).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    long req;          /* index of the request in flight, -1 when idle */
    size_t sent_bytes; /* bytes of the request written so far */
    char buf[65536];
    size_t have;
} Conn;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pick(double *sorted, long n, double q) {
    if (n == 0) return -1;
    long i = (long)(q * n);
    if (i >= n) i = n - 1;
    return sorted[i] * 1000.0;
}

static int connect_to(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("connect");
        exit(2);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Bytes of a complete response at the start of buf, 0 if incomplete; status in *status. */
static size_t complete(const char *buf, size_t have, int *status) {
    const char *end = memmem(buf, have, "\r\n\r\n", 4);
    if (end == NULL) return 0;
    size_t head = end - buf + 4, length = 0;
    *status = atoi(buf + 9);
    for (const char *p = buf; p < end; p++) {
        if ((p == buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) length = strtoul(p + 15, NULL, 10);
    }
    return have >= head + length ? head + length : 0;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: fixed_rate HOST PORT PATH BODY_FILE RATE SECONDS [CONNECTIONS]\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]), nconn = argc > 7 ? atoi(argv[7]) : 32;
    double rate = atof(argv[5]), seconds = atof(argv[6]);
    FILE *f = fopen(argv[4], "rb");
    if (!f) { perror(argv[4]); return 2; }
    static char body[1 << 22];
    size_t blen = fread(body, 1, sizeof body, f);
    fclose(f);
    static char request[(1 << 22) + 1024];
    int hl = snprintf(request, 1024, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      path, host, port, blen);
    memcpy(request + hl, body, blen);
    size_t rlen = hl + blen;

    long total = (long)(rate * seconds);
    double *due = calloc(total, sizeof(double)), *sent = calloc(total, sizeof(double)), *done = calloc(total, sizeof(double));
    long n2xx = 0, nother = 0, errors = 0, answered = 0, next = 0;
    Conn *conns = calloc(nconn, sizeof(Conn));
    int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    for (int i = 0; i < nconn; i++) {
        conns[i].fd = connect_to(host, port);
        conns[i].req = -1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = (unsigned)-1};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
    usleep(200000); /* let the server accept every connection before the clock starts */

    double start = now_s();
    for (long i = 0; i < total; i++) due[i] = start + i / rate;
    double stop = start + seconds + (seconds > 5 ? seconds : 5);
    struct epoll_event events[256];
    while (answered + errors < total) {
        double t = now_s();
        if (t > stop) break;
        /* Send every request that is due, each on an idle connection (the rest wait, still timed from due). */
        for (int i = 0; i < nconn && next < total && due[next] <= t; i++) {
            Conn *c = &conns[i];
            if (c->req >= 0 || c->fd < 0) continue;
            c->req = next++;
            sent[c->req] = now_s();
            ssize_t w = write(c->fd, request, rlen);
            c->sent_bytes = w > 0 ? (size_t)w : 0;
            if (c->sent_bytes < rlen) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
        if (next < total) {
            struct itimerspec its = {0};
            double abs_at = due[next] > t ? due[next] : t + 50e-6; /* all busy: look again shortly */
            its.it_value.tv_sec = (time_t)abs_at;
            its.it_value.tv_nsec = (long)((abs_at - (double)(time_t)abs_at) * 1e9);
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int n = epoll_wait(ep, events, 256, 100);
        for (int k = 0; k < n; k++) {
            unsigned id = events[k].data.u32;
            if (id == (unsigned)-1) {
                unsigned long long expirations;
                while (read(tfd, &expirations, sizeof expirations) > 0) {}
                continue;
            }
            Conn *c = &conns[id];
            if ((events[k].events & EPOLLOUT) && c->req >= 0 && c->sent_bytes < rlen) {
                ssize_t w = write(c->fd, request + c->sent_bytes, rlen - c->sent_bytes);
                if (w > 0) c->sent_bytes += w;
                if (c->sent_bytes == rlen) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = id};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                if (c->req >= 0) errors++;
                close(c->fd); /* the server closed it: reconnect */
                c->fd = connect_to(host, port);
                c->req = -1;
                c->have = 0;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = id};
                epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                continue;
            }
            c->have += r;
            int status;
            size_t used = complete(c->buf, c->have, &status);
            if (used && c->req >= 0) {
                done[c->req] = now_s();
                answered++;
                if (status >= 200 && status < 300) n2xx++; else nother++;
                memmove(c->buf, c->buf + used, c->have - used);
                c->have -= used;
                c->req = -1;
            }
        }
    }
    double elapsed = now_s() - start;
    double *lat = malloc(sizeof(double) * (answered + 1)), *svc = malloc(sizeof(double) * (answered + 1)),
           *lag = malloc(sizeof(double) * (next + 1));
    long m = 0;
    for (long i = 0; i < next; i++) {
        lag[i] = sent[i] - due[i];
        if (done[i] > 0) { lat[m] = done[i] - due[i]; svc[m] = done[i] - sent[i]; m++; }
    }
    qsort(lat, m, sizeof(double), cmp_double);
    qsort(svc, m, sizeof(double), cmp_double);
    qsort(lag, next, sizeof(double), cmp_double);
    printf("{\"target_rate\": %g, \"achieved_rate\": %.1f, \"requests\": %ld, \"unfinished\": %ld, \"errors\": %ld, "
           "\"statuses\": {\"2xx\": %ld, \"other\": %ld}, "
           "\"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f, "
           "\"service_p50_ms\": %.3f, \"service_p99_ms\": %.3f, \"send_lag_p50_ms\": %.3f, \"send_lag_p99_ms\": %.3f, "
           "\"send_lag_max_ms\": %.3f}\n",
           rate, m / elapsed, m, total - m - errors, errors, n2xx, nother,
           pick(lat, m, 0.5), pick(lat, m, 0.9), pick(lat, m, 0.99), pick(lat, m, 0.999), pick(lat, m, 1.0),
           pick(svc, m, 0.5), pick(svc, m, 0.99), pick(lag, next, 0.5), pick(lag, next, 0.99), pick(lag, next, 1.0));
    return 0;
}
