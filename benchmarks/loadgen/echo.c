/* The echo workloads: pingpong, stream, connect and hold.
 *
 * Every byte sent is a known pattern (i mod 251, so that a shifted or repeated
 * chunk never lines up), and pingpong, connect and hold check the echo
 * byte for byte; stream only counts, so that checking does not become the
 * bottleneck at hundreds of MB/s.
 */
#include "loadgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#define READ_SIZE (256 * 1024)

static conn_t *conns;
static char *payload;
static char rbuf[READ_SIZE];
static int n_open, n_failed, n_inflight, next_to_open;
static uint64_t ops, bytes_in, errors, closed_by_server, started;
static samples_t latency;

static void make_conns(int n) {
    conns = calloc((size_t)n, sizeof *conns);
    if (!conns) fail("out of memory");
    for (int i = 0; i < n; i++) net_register(&conns[i], i);
    size_t len = opt.size > READ_SIZE ? (size_t)opt.size : READ_SIZE;
    payload = malloc(len);
    if (!payload) fail("out of memory");
    for (size_t i = 0; i < len; i++) payload[i] = (char)(i % 251);
}

static void measuring(void) {
    if (opt.count) return; /* counted from the first operation: there is no warm-up */
    ops = bytes_in = errors = 0;
    samples_clear(&latency);
}

/* With --count, whether another operation may start (the first COUNT may). */
static int may_start(void) {
    if (!opt.count) return 1;
    if (started >= (uint64_t)opt.count) return 0;
    started++;
    return 1;
}

static void count_op(conn_t *c) {
    if (phase != MEASURE && !opt.count) return;
    ops++;
    finished_ops++;
    samples_add(&latency, now_ns() - c->t0);
}

static int all_open(void) { return n_open == opt.conns; }

static const char *opening(void) {
    static char text[96];
    snprintf(text, sizeof text, "%d of %d connections open, %d failed; %s", n_open, opt.conns,
             n_failed, net_error());
    return text;
}
static int at_once(void) { return 1; }

/* Take what the server echoed of the current message; 1 when it is whole, -1 if wrong. */
static int take_echo(conn_t *c, const char *data, size_t len, size_t size) {
    if (c->got + len > size || memcmp(data, payload + c->got, len) != 0) return -1;
    c->got += len;
    return c->got == size;
}

/* -- pingpong -------------------------------------------------------------------------- */

static void ping(conn_t *c) {
    if (!may_start()) return; /* --count reached: this connection falls idle */
    c->t0 = now_ns();
    c->got = 0;
    if (net_send(c, payload, (size_t)opt.size) < 0) fail("%s", net_error());
}

static void pingpong_start(void) {
    make_conns(opt.conns);
    for (int i = 0; i < opt.conns; i++) net_connect(&conns[i], 0);
}

static void pingpong_opened(conn_t *c) {
    n_open++;
    ping(c);
}

static void pingpong_readable(conn_t *c) {
    for (;;) {
        ssize_t r = net_read(c, rbuf, sizeof rbuf);
        if (r == -1) return;
        if (r == 0) fail("the server closed connection %d", c->id);
        if (r < 0) fail("%s", net_error());
        int whole = take_echo(c, rbuf, (size_t)r, (size_t)opt.size);
        if (whole < 0) fail("the echo differs from what was sent (connection %d)", c->id);
        if (whole) {
            count_op(c);
            ping(c);
            /* Nothing more can come before the next ping's echo; a TLS record
             * may still be buffered though, so only plain sockets stop here. */
            if (!c->ssl) return;
        }
    }
}

static void pingpong_report(void) {
    json_int("round_trips", (long long)ops);
    json_num("per_s", (double)ops / measured_s);
    print_latency(&latency);
}

const workload_t wl_pingpong = {
    .name = "pingpong",
    .start = pingpong_start,
    .ready = all_open,
    .waiting = opening,
    .opened = pingpong_opened,
    .readable = pingpong_readable,
    .measuring = measuring,
    .report = pingpong_report,
};

/* -- stream ---------------------------------------------------------------------------- */

/* Write whole chunks while the window allows and the socket takes them. */
static void pump(conn_t *c) {
    while (c->pending_len == 0 && c->written - c->read < (uint64_t)opt.window) {
        if (net_send(c, payload, (size_t)opt.size) < 0) fail("%s", net_error());
        c->written += (uint64_t)opt.size;
    }
}

static void stream_opened(conn_t *c) {
    n_open++;
    pump(c);
}

static void stream_readable(conn_t *c) {
    for (;;) {
        ssize_t r = net_read(c, rbuf, sizeof rbuf);
        if (r == -1) break;
        if (r == 0) fail("the server closed connection %d", c->id);
        if (r < 0) fail("%s", net_error());
        c->read += (uint64_t)r;
        if (phase == MEASURE) bytes_in += (uint64_t)r;
    }
    pump(c);
}

static void stream_report(void) {
    json_int("bytes_read", (long long)bytes_in);
    json_num("mb_per_s", (double)bytes_in / measured_s / 1e6);
}

const workload_t wl_stream = {
    .name = "stream",
    .start = pingpong_start,
    .ready = all_open,
    .waiting = opening,
    .opened = stream_opened,
    .readable = stream_readable,
    .writable = pump,
    .measuring = measuring,
    .report = stream_report,
};

/* -- connect --------------------------------------------------------------------------- */

/* A failed cycle restarts from `tick`, not from inside the failure: a refused
 * connect can fail at once, and restarting there could recurse without end. */
static char *restart;

static void cycle(conn_t *c) {
    if (!may_start()) return;
    c->t0 = now_ns();
    c->got = 0;
    net_connect(c, 0);
}

static void connect_start(void) {
    make_conns(opt.conns);
    restart = calloc((size_t)opt.conns, 1);
    if (!restart) fail("out of memory");
    for (int i = 0; i < opt.conns; i++) cycle(&conns[i]);
}

static void connect_failed(conn_t *c, const char *why) {
    (void)why;
    errors++;
    finished_ops++;
    restart[c->id] = 1;
    tick_soon = 1;
}

static void connect_opened(conn_t *c) {
    if (net_send(c, payload, (size_t)opt.size) < 0) {
        net_close(c);
        connect_failed(c, net_error());
    }
}

static void connect_readable(conn_t *c) {
    for (;;) {
        ssize_t r = net_read(c, rbuf, sizeof rbuf);
        if (r == -1) return;
        int whole = r > 0 ? take_echo(c, rbuf, (size_t)r, (size_t)opt.size) : -1;
        if (whole < 0) {
            net_close(c);
            connect_failed(c, "closed or wrong echo");
            return;
        }
        if (whole) {
            count_op(c);
            net_close(c);
            cycle(c);
            return;
        }
    }
}

static void connect_tick(void) {
    for (int i = 0; i < opt.conns; i++) {
        if (restart[i]) {
            restart[i] = 0;
            cycle(&conns[i]);
        }
    }
}

static void connect_report(void) {
    json_int("cycles", (long long)ops);
    json_num("per_s", (double)ops / measured_s);
    json_int("connect_errors", (long long)errors);
    print_latency(&latency);
}

const workload_t wl_connect = {
    .name = "connect",
    .start = connect_start,
    .ready = at_once,
    .opened = connect_opened,
    .failed = connect_failed,
    .readable = connect_readable,
    .measuring = measuring,
    .tick = connect_tick,
    .report = connect_report,
};

/* -- hold ------------------------------------------------------------------------------ */

static void open_more(void) {
    while (n_inflight < opt.open_inflight && next_to_open < opt.conns) {
        n_inflight++;
        net_connect(&conns[next_to_open++], 0);
    }
}

static void hold_start(void) {
    make_conns(opt.conns);
    open_more();
}

static void hold_failed(conn_t *c, const char *why) {
    (void)c, (void)why;
    n_failed++;
    n_inflight--;
    tick_soon = 1; /* open the next one from tick, as connect does */
}

static void hold_opened(conn_t *c) {
    c->got = 0;
    if (net_send(c, payload, 1) < 0) {
        net_close(c);
        hold_failed(c, net_error());
    }
}

static void hold_readable(conn_t *c) {
    ssize_t r = net_read(c, rbuf, sizeof rbuf);
    if (r == -1) return;
    if (c->got == 0) { /* still opening: this is the echo */
        if (r == 1 && rbuf[0] == payload[0]) {
            c->got = 1;
            n_open++;
            n_inflight--;
            open_more();
        } else {
            net_close(c);
            hold_failed(c, "wrong or no echo");
        }
        return;
    }
    if (r > 0) return; /* nothing is expected on an idle connection but its end */
    closed_by_server++;
    net_close(c);
}

static int hold_ready(void) { return n_open + n_failed == opt.conns; }

static void hold_report(void) {
    json_int("opened", n_open);
    json_int("failed", n_failed);
    json_int("closed_by_server", (long long)closed_by_server);
}

const workload_t wl_hold = {
    .name = "hold",
    .start = hold_start,
    .ready = hold_ready,
    .waiting = opening,
    .opened = hold_opened,
    .failed = hold_failed,
    .readable = hold_readable,
    .tick = open_more,
    .report = hold_report,
};
