/* The pipeline workload: line-framed requests with several in flight.
 *
 * Each connection starts by writing --depth "PING\n" lines in one write. Every
 * chunk read back is checked byte for byte against "PONG\n" replies; for each
 * reply it completes, one new request is sent, all of them in one write after
 * the chunk, so --depth requests stay in flight. A request's latency runs from
 * the write that carried it to the read that completed its reply.
 */
#include "loadgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUEST "PING\n"
#define REPLY "PONG\n"
#define LINE (sizeof REQUEST - 1)
#define READ_SIZE (64 * 1024)

typedef struct {
    uint64_t *sent_at; /* ring of --depth send times, oldest first */
    int head, count;
    size_t offset;     /* position within the reply being read */
} pipe_t;

static conn_t *conns;
static pipe_t *pipes;
static char *requests;
static char rbuf[READ_SIZE];
static int n_open;
static uint64_t replies;
static samples_t latency;

static void send_requests(conn_t *c, int n) {
    pipe_t *p = c->extra;
    uint64_t t = now_ns();
    for (int i = 0; i < n; i++) p->sent_at[(p->head + p->count++) % opt.depth] = t;
    if (net_send(c, requests, (size_t)n * LINE) < 0) fail("%s", net_error());
}

static void pipeline_start(void) {
    if (opt.depth == 0) opt.depth = 16;
    conns = calloc((size_t)opt.conns, sizeof *conns);
    pipes = calloc((size_t)opt.conns, sizeof *pipes);
    requests = malloc((size_t)opt.depth * LINE);
    if (!conns || !pipes || !requests) fail("out of memory");
    for (int i = 0; i < opt.depth; i++) memcpy(requests + (size_t)i * LINE, REQUEST, LINE);
    for (int i = 0; i < opt.conns; i++) {
        net_register(&conns[i], i);
        conns[i].extra = &pipes[i];
        pipes[i].sent_at = calloc((size_t)opt.depth, sizeof(uint64_t));
        if (!pipes[i].sent_at) fail("out of memory");
        net_connect(&conns[i], 0);
    }
}

static int pipeline_ready(void) { return n_open == opt.conns; }

static const char *pipeline_waiting(void) {
    static char text[96];
    snprintf(text, sizeof text, "%d of %d connections open; %s", n_open, opt.conns, net_error());
    return text;
}

static void pipeline_opened(conn_t *c) {
    n_open++;
    send_requests(c, opt.depth);
}

static void pipeline_readable(conn_t *c) {
    pipe_t *p = c->extra;
    for (;;) {
        ssize_t r = net_read(c, rbuf, sizeof rbuf);
        if (r == -1) return;
        if (r == 0) fail("the server closed connection %d", c->id);
        if (r < 0) fail("%s", net_error());
        uint64_t t = now_ns();
        int done = 0;
        for (ssize_t i = 0; i < r; i++) {
            if (rbuf[i] != REPLY[p->offset])
                fail("connection %d: unexpected reply byte 0x%02x", c->id, (unsigned char)rbuf[i]);
            if (++p->offset < LINE) continue;
            p->offset = 0;
            if (p->count == 0) fail("connection %d: a reply to no request", c->id);
            if (phase == MEASURE) {
                replies++;
                samples_add(&latency, t - p->sent_at[p->head]);
            }
            p->head = (p->head + 1) % opt.depth;
            p->count--;
            done++;
        }
        if (done) send_requests(c, done);
    }
}

static void pipeline_measuring(void) {
    replies = 0;
    samples_clear(&latency);
}

static void pipeline_report(void) {
    json_int("depth", opt.depth);
    json_int("replies", (long long)replies);
    json_num("per_s", (double)replies / measured_s);
    print_latency(&latency);
}

const workload_t wl_pipeline = {
    .name = "pipeline",
    .start = pipeline_start,
    .ready = pipeline_ready,
    .waiting = pipeline_waiting,
    .opened = pipeline_opened,
    .readable = pipeline_readable,
    .measuring = pipeline_measuring,
    .report = pipeline_report,
};
