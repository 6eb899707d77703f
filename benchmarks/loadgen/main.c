/* loadgen: drive one server on 127.0.0.1 with one workload, print one JSON line.
 *
 *     loadgen MODE -p PORT [-c CONNS] [-s SIZE] [-d SECONDS] [-w SECONDS] [options]
 *
 * Modes (the workloads of the benchmark suite):
 *   pingpong  CONNS connections, each sends SIZE bytes and waits for the whole echo
 *   stream    continuous SIZE-byte writes, the echo read back (--window bytes in flight)
 *   connect   connect, send SIZE bytes, read the echo, close; CONNS cycles in flight
 *   hold      open CONNS connections, echo one byte on each, keep them idle
 *   pipeline  "PING\n" lines answered by "PONG\n", --depth requests in flight per connection
 *   fanout    a chat room: CONNS members send SIZE-byte lines that the server relays to
 *             every other member; --stuck members never read (SO_RCVBUF --rcvbuf)
 *
 * One thread, one level-triggered epoll set, non-blocking sockets, so that the
 * client side costs little and the server is what gets measured. Each run opens
 * its connections (setup), runs unmeasured for the warm-up, then measures; the
 * result reports the load generator's own CPU use (client_cpu, in cores) so a
 * saturated client can be told apart from a slow server, and with
 * --server-pid the server's CPU seconds over the measured interval.
 *
 * Exit status 0 with the result line; 1 with {"error": ...} on a failure.
 */
#include "loadgen.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_EVENTS 512

options_t opt = {
    .conns = 1,
    .size = 64,
    .duration = 3.0,
    .warmup = 0.5,
    .setup_timeout = 20.0,
    .window = 256 * 1024,
    .open_inflight = 32,
    .stuck = 1,
    .rcvbuf = 4096,
};
enum phase phase = SETUP;
const workload_t *wl;
int tick_soon;
double measured_s;
uint64_t finished_ops;

static const workload_t *const workloads[] = {&wl_pingpong, &wl_stream,   &wl_connect,
                                              &wl_hold,     &wl_pipeline, &wl_fanout};

uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void fail(const char *fmt, ...) {
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    for (char *p = message; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = '\'';
    printf("{\"mode\": \"%s\", \"error\": \"%s\", \"generator\": \"loadgen\"}\n",
           opt.mode ? opt.mode : "?", message);
    fflush(stdout);
    exit(1);
}

void json_int(const char *key, long long value) { printf(", \"%s\": %lld", key, value); }

void json_num(const char *key, double value) {
    if (!isfinite(value)) value = 0.0;
    /* Six significant digits, without an exponent for large counts. */
    printf(fabs(value) >= 1e5 ? ", \"%s\": %.1f" : ", \"%s\": %.6g", key, value);
}

static void usage(FILE *to) {
    fputs("usage: loadgen {pingpong|stream|connect|hold|pipeline|fanout} -p PORT\n"
          "  -c, --conns N          connections (connect: cycles in flight) [1]\n"
          "  -s, --size BYTES       message or write size [64]\n"
          "  -d, --duration S       measured seconds (hold: seconds held) [3]\n"
          "  -w, --warmup S         unmeasured seconds first [0.5]\n"
          "  -t, --setup-timeout S  limit for opening the connections [20]\n"
          "      --window BYTES     stream: bytes in flight [262144]\n"
          "      --depth N          pipeline: requests in flight per connection [16];\n"
          "                         fanout: messages in flight per sender [8]\n"
          "      --open-inflight N  hold: connects in progress at once [32]\n"
          "      --stuck N          fanout: members that never read [1]\n"
          "      --rcvbuf BYTES     fanout: SO_RCVBUF of those members [4096]\n"
          "      --tls CAFILE       speak TLS, verifying the server against CAFILE\n"
          "      --server-pid PID   report that process's CPU time while measuring\n"
          "  -n, --count N          pingpong, connect: measure exactly N operations (no\n"
          "                         warm-up; -d bounds the time), e.g. under a profiler\n",
          to);
}

static double number(const char *text, const char *name, double low) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || *end || !isfinite(value) || value < low) fail("bad %s: %s", name, text);
    return value;
}

static void parse(int argc, char **argv) {
    enum { WINDOW = 256, DEPTH, OPEN_INFLIGHT, STUCK, RCVBUF, TLS, SERVER_PID, HELP };
    static const struct option longs[] = {
        {"port", required_argument, 0, 'p'},
        {"conns", required_argument, 0, 'c'},
        {"size", required_argument, 0, 's'},
        {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'},
        {"setup-timeout", required_argument, 0, 't'},
        {"window", required_argument, 0, WINDOW},
        {"depth", required_argument, 0, DEPTH},
        {"open-inflight", required_argument, 0, OPEN_INFLIGHT},
        {"stuck", required_argument, 0, STUCK},
        {"rcvbuf", required_argument, 0, RCVBUF},
        {"tls", required_argument, 0, TLS},
        {"server-pid", required_argument, 0, SERVER_PID},
        {"count", required_argument, 0, 'n'},
        {"help", no_argument, 0, HELP},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "p:c:s:d:w:t:n:h", longs, NULL)) != -1) {
        switch (c) {
        case 'p': opt.port = (int)number(optarg, "port", 1); break;
        case 'c': opt.conns = (int)number(optarg, "conns", 1); break;
        case 's': opt.size = (int)number(optarg, "size", 1); break;
        case 'd': opt.duration = number(optarg, "duration", 0); break;
        case 'w': opt.warmup = number(optarg, "warmup", 0); break;
        case 't': opt.setup_timeout = number(optarg, "setup timeout", 0); break;
        case WINDOW: opt.window = (int)number(optarg, "window", 1); break;
        case DEPTH: opt.depth = (int)number(optarg, "depth", 1); break;
        case OPEN_INFLIGHT: opt.open_inflight = (int)number(optarg, "open-inflight", 1); break;
        case STUCK: opt.stuck = (int)number(optarg, "stuck", 0); break;
        case RCVBUF: opt.rcvbuf = (int)number(optarg, "rcvbuf", 0); break;
        case TLS: opt.cafile = optarg; break;
        case SERVER_PID: opt.server_pid = (pid_t)number(optarg, "server pid", 1); break;
        case 'n': opt.count = (long long)number(optarg, "count", 1); break;
        case 'h':
        case HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        exit(2);
    }
    opt.mode = argv[optind];
    for (size_t i = 0; i < sizeof workloads / sizeof *workloads; i++)
        if (strcmp(workloads[i]->name, opt.mode) == 0) wl = workloads[i];
    if (!wl) fail("unknown mode %s", opt.mode);
    if (opt.port <= 0 || opt.port > 65535) fail("-p PORT (1-65535) is required");
    if (opt.size > 16 * 1024 * 1024) fail("size above 16 MiB");
    if (opt.count && strcmp(opt.mode, "pingpong") != 0 && strcmp(opt.mode, "connect") != 0)
        fail("--count is for pingpong and connect");
    if (opt.count) opt.warmup = 0; /* every operation started is measured */
}

/* Room for every connection, with some to spare for the epoll set and stdio. */
static void raise_fd_limit(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
    rlim_t want = (rlim_t)opt.conns + (rlim_t)opt.stuck + 64;
    if (r.rlim_cur >= want) return;
    r.rlim_cur = want <= r.rlim_max ? want : r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
}

static int timeout_ms(uint64_t deadline, uint64_t now) {
    if (tick_soon) return 0;
    if (deadline <= now) return 0;
    uint64_t ms = (deadline - now + 999999) / 1000000;
    /* Wake up now and then even when idle: modes retry things from their tick. */
    return ms > 50 ? 50 : (int)ms;
}

int main(int argc, char **argv) {
    parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    net_init();
    if (strcmp(opt.mode, "hold") == 0) opt.warmup = 0; /* hold measures memory, not a rate */

    uint64_t t_begin = now_ns(), t_open = 0, t_measure = 0, t_end = 0;
    uint64_t deadline = t_begin + (uint64_t)(opt.setup_timeout * 1e9);
    double cpu0 = 0, server_cpu0 = -1, server_cpu1 = -1, cpu = 0;
    struct epoll_event events[MAX_EVENTS];

    wl->start();
    for (;;) {
        uint64_t t = now_ns();
        if (phase == SETUP) {
            if (wl->ready()) {
                phase = WARMUP;
                t_open = t;
                deadline = t + (uint64_t)(opt.warmup * 1e9);
            } else if (t >= deadline) {
                const char *why = wl->waiting ? wl->waiting() : net_error();
                fail("setup took longer than %gs (%s)", opt.setup_timeout, why);
            }
        }
        if (phase == WARMUP && t >= deadline) {
            phase = MEASURE;
            if (wl->measuring) wl->measuring();
            cpu0 = self_cpu_s();
            server_cpu0 = process_cpu_s(opt.server_pid);
            t_measure = now_ns();
            deadline = t_measure + (uint64_t)(opt.duration * 1e9);
        }
        int counted = opt.count && finished_ops >= (uint64_t)opt.count;
        if (phase == MEASURE && (t >= deadline || counted)) {
            t_end = now_ns();
            server_cpu1 = process_cpu_s(opt.server_pid);
            cpu = self_cpu_s() - cpu0;
            phase = DONE;
            break;
        }
        int timeout = timeout_ms(deadline, now_ns());
        tick_soon = 0;
        int n = epoll_wait(epoll_fd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) net_dispatch_event(events[i].data.u64, events[i].events);
        if (wl->tick) wl->tick();
    }

    measured_s = (double)(t_end - t_measure) / 1e9;
    printf("{\"mode\": \"%s\", \"tls\": %s, \"generator\": \"loadgen\"", opt.mode,
           opt.cafile ? "true" : "false");
    json_int("conns", opt.conns);
    json_int("size", opt.size);
    json_num("warmup_s", opt.warmup);
    json_num("open_s", (double)(t_open - t_begin) / 1e9);
    json_num("measured_s", measured_s);
    json_num("client_cpu", measured_s > 0 ? cpu / measured_s : 0.0);
    if (server_cpu0 >= 0 && server_cpu1 >= 0) json_num("server_cpu_s", server_cpu1 - server_cpu0);
    wl->report();
    printf("}\n");
    return 0;
}
