/* loadgen: the benchmark suite's load generator (see main.c for the overview).
 *
 * One process, one thread, one epoll set. Every connection is a conn_t; a mode
 * (echo.c, lines.c, fanout.c) decides what a connection does once it is open.
 * net.c owns connecting, the optional TLS layer and raw reads and writes;
 * stats.c owns latency samples and CPU clocks.
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef LOADGEN_TLS
#include <openssl/ssl.h>
#else
typedef struct ssl_placeholder SSL;
#endif

/* -- options ------------------------------------------------------------- */

typedef struct {
    const char *mode;
    int port;
    int conns;          /* connections; for connect, cycles in flight */
    int size;           /* message or write size */
    double duration;    /* measured seconds (hold: seconds held) */
    double warmup;      /* unmeasured seconds before measuring */
    double setup_timeout;
    int window;         /* stream: bytes in flight */
    int depth;          /* pipeline: requests in flight; fanout: messages in flight per sender */
    int open_inflight;  /* hold: connects in progress at once */
    int stuck;          /* fanout: members that never read */
    int rcvbuf;         /* fanout: SO_RCVBUF of the stuck members */
    const char *cafile; /* TLS: verify the server against this CA */
    pid_t server_pid;   /* measure this process's CPU time while measuring */
    long long count;    /* pingpong, connect: start exactly this many operations, then end */
} options_t;

extern options_t opt;

/* -- phases -------------------------------------------------------------- */

enum phase { SETUP, WARMUP, MEASURE, DONE };
extern enum phase phase;

uint64_t now_ns(void);
_Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* -- connections --------------------------------------------------------- */

enum conn_state { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN };

typedef struct conn {
    int fd;
    int id;          /* the mode's index */
    uint32_t slot;   /* the registry's index (net.c) */
    uint32_t gen;    /* bumped per socket, so stale events are recognised */
    enum conn_state state;
    uint32_t events; /* epoll interest currently registered */
    SSL *ssl;
    uint64_t t0;     /* start of the operation in progress */
    /* Output the socket has not taken yet (pending[sent..len)). */
    char *pending;
    size_t pending_len, pending_sent, pending_cap;
    /* Mode state. */
    size_t got;      /* bytes of the current reply received */
    uint64_t written, read;
    void *extra;
} conn_t;

/* What a mode does; every hook but `start` and `report` is optional. */
typedef struct {
    const char *name;
    void (*start)(void);                 /* open the first connections */
    int (*ready)(void);                  /* setup is over (then warm-up begins) */
    const char *(*waiting)(void);        /* what setup still waits for, if it times out */
    void (*opened)(conn_t *c);           /* connect (and TLS handshake) done */
    void (*failed)(conn_t *c, const char *why); /* connect or handshake failed */
    void (*readable)(conn_t *c);
    void (*writable)(conn_t *c);         /* pending output drained */
    void (*hangup)(conn_t *c);           /* EPOLLHUP/EPOLLERR on a connection not reading */
    void (*measuring)(void);             /* measurement starts: reset counters */
    void (*tick)(void);                  /* after each batch of events */
    void (*report)(void);                /* print the mode's JSON fields */
} workload_t;

extern const workload_t wl_pingpong, wl_stream, wl_connect, wl_hold, wl_pipeline, wl_fanout;
extern const workload_t *wl; /* the one this run drives */
extern int tick_soon;        /* a mode asks for its tick without waiting for events */

/* net.c */
void net_init(void);
void net_register(conn_t *c, int id);
void net_connect(conn_t *c, int rcvbuf);
ssize_t net_read(conn_t *c, void *buf, size_t len);   /* >0, 0 = EOF, -1 = later, -2 = broken */
ssize_t net_write(conn_t *c, const void *buf, size_t len); /* >=0 taken, -1 = later, -2 = broken */
int net_send(conn_t *c, const void *buf, size_t len); /* write or queue; 0 ok, -1 broken */
void net_interest(conn_t *c, uint32_t events);
void net_close(conn_t *c);
void net_dispatch_event(uint64_t tag, uint32_t events);
const char *net_error(void);
extern int epoll_fd;

/* main.c: the result line, one field at a time */
void json_int(const char *key, long long value);
void json_num(const char *key, double value);
extern double measured_s; /* length of the measurement, known when `report` runs */
extern uint64_t finished_ops; /* with --count: operations done (or failed) so far */

/* stats.c */
typedef struct { uint64_t *v; size_t n, cap; int sorted; } samples_t;
void samples_add(samples_t *s, uint64_t ns);
void samples_clear(samples_t *s);
double samples_pct_us(samples_t *s, double p);
void print_latency(samples_t *s);
double self_cpu_s(void);
double process_cpu_s(pid_t pid);   /* -1 when unknown */

#endif
