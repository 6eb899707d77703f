/* The fanout workload: a chat room with one member that never reads.
 *
 * --stuck members connect first, with a small SO_RCVBUF, and never read: the
 * server's sends to them stop being taken once a few kilobytes are queued.
 * Then CONNS healthy members connect, and each sends fixed-size lines
 *
 *     M <sender: 2 hex> <sequence: 8 hex> <send time, ns: 16 hex> <padding> \n
 *
 * which the server must relay to every other member. Every healthy member
 * reads everything, checks that each sender's lines arrive in order, and
 * records each line's delivery latency from the time stamped in it.
 *
 * The load is a closed loop: a sender keeps at most --depth lines that some
 * live healthy member has not received yet, and sends more as they arrive
 * (all it may send in one write, after each batch of events). A server that
 * lets the stuck member hold up the others therefore shows up as a fall in
 * delivered lines per second, not as an ever-growing queue in the client.
 *
 * Joining: the server learns of a member when it accepts it, and the client
 * cannot see when that is. So, before any message, every healthy member sends
 * a probe line (type P) carrying the round number; when every healthy member
 * has received every other's probe of the same round, all are in the room.
 * A round that does not complete within PROBE_RETRY is repeated.
 */
#include "loadgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MEMBERS 255
#define MIN_LINE 28
#define MAX_LINE 256
#define READ_SIZE (64 * 1024)
#define PROBE_RETRY 50000000u /* ns */

typedef struct {
    char partial[MAX_LINE];
    size_t have;
    int64_t *last;     /* last sequence number received from each sender, -1 for none */
    uint32_t next_seq; /* of this member's next line */
    int alive, dirty;
} member_t;

static conn_t *conns; /* the stuck members, then the healthy ones */
static member_t *members;
static int n_healthy, n_stuck, n_open_stuck, n_open_healthy, joined;
static uint32_t round_no;
static long long probe_pairs;
static uint64_t round_started, joined_at;
static uint64_t delivered, sent, gaps, dropped_healthy, dropped_stuck;
static double stuck_dropped_after_s = -1;
static samples_t latency;
static char rbuf[READ_SIZE];
static char *wbuf;
static const char hex[] = "0123456789abcdef";

static void put_hex(char *to, uint64_t value, int digits) {
    for (int i = digits - 1; i >= 0; i--, value >>= 4) to[i] = hex[value & 15];
}

static int get_hex(const char *from, int digits, uint64_t *value) {
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) {
        char ch = from[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint64_t)d;
    }
    *value = v;
    return 0;
}

static void format_line(char *to, char type, int sender, uint32_t seq, uint64_t t) {
    memset(to, '.', (size_t)opt.size);
    to[0] = type;
    put_hex(to + 1, (uint64_t)sender, 2);
    put_hex(to + 3, seq, 8);
    put_hex(to + 11, t, 16);
    to[opt.size - 1] = '\n';
}

static member_t *member(conn_t *c) { return &members[c->id - n_stuck]; }
static void drop_healthy(conn_t *c);

static void send_lines(int h, char type, int count) {
    conn_t *c = &conns[n_stuck + h];
    member_t *m = &members[h];
    uint64_t t = now_ns();
    for (int i = 0; i < count; i++) {
        uint32_t seq = type == 'M' ? m->next_seq++ : round_no;
        format_line(wbuf + (size_t)i * (size_t)opt.size, type, h, seq, t);
    }
    if (type == 'M' && phase == MEASURE) sent += (uint64_t)count;
    /* A server may drop a healthy member too: that is counted, not fatal. */
    if (net_send(c, wbuf, (size_t)count * (size_t)opt.size) < 0) drop_healthy(c);
}

/* Lines of sender h that some live healthy member has not received yet. */
static uint32_t in_flight(int h) {
    uint32_t oldest = members[h].next_seq;
    for (int i = 0; i < n_healthy; i++) {
        if (i == h || !members[i].alive) continue;
        uint32_t next = (uint32_t)(members[i].last[h] + 1);
        if (next < oldest) oldest = next;
    }
    return members[h].next_seq - oldest;
}

static void start_round(void) {
    round_no++;
    probe_pairs = 0;
    round_started = now_ns();
    for (int h = 0; h < n_healthy; h++)
        if (members[h].alive) send_lines(h, 'P', 1);
}

static void fanout_start(void) {
    if (opt.depth == 0) opt.depth = 8;
    n_healthy = opt.conns;
    n_stuck = opt.stuck;
    if (n_healthy < 2 || n_healthy > MAX_MEMBERS) fail("fanout needs 2 to %d members", MAX_MEMBERS);
    if (opt.size < MIN_LINE || opt.size > MAX_LINE)
        fail("fanout lines are %d to %d bytes", MIN_LINE, MAX_LINE);
    conns = calloc((size_t)(n_stuck + n_healthy), sizeof *conns);
    members = calloc((size_t)n_healthy, sizeof *members);
    wbuf = malloc((size_t)opt.depth * (size_t)opt.size);
    if (!conns || !members || !wbuf) fail("out of memory");
    for (int i = 0; i < n_stuck + n_healthy; i++) net_register(&conns[i], i);
    for (int h = 0; h < n_healthy; h++) {
        members[h].last = malloc((size_t)n_healthy * sizeof(int64_t));
        if (!members[h].last) fail("out of memory");
        for (int j = 0; j < n_healthy; j++) members[h].last[j] = -1;
        members[h].alive = 1;
    }
    /* The stuck members first, so that they are in the room before anyone speaks. */
    for (int i = 0; i < n_stuck; i++) net_connect(&conns[i], opt.rcvbuf);
    if (n_stuck == 0)
        for (int h = 0; h < n_healthy; h++) net_connect(&conns[h], 0);
}

static void fanout_opened(conn_t *c) {
    if (c->id < n_stuck) {
        net_interest(c, 0); /* never read; hang-ups are still reported */
        if (++n_open_stuck == n_stuck)
            for (int h = 0; h < n_healthy; h++) net_connect(&conns[n_stuck + h], 0);
        return;
    }
    if (++n_open_healthy == n_healthy) start_round();
}

static void drop_healthy(conn_t *c) {
    member(c)->alive = 0;
    dropped_healthy++;
    net_close(c);
    for (int h = 0; h < n_healthy; h++) members[h].dirty = 1; /* their oldest line may be gone */
    tick_soon = 1;
}

static void take_line(int receiver, const char *line) {
    uint64_t sender, seq, stamp;
    if (line[opt.size - 1] != '\n' || get_hex(line + 1, 2, &sender) || get_hex(line + 3, 8, &seq) ||
        get_hex(line + 11, 16, &stamp) || sender >= (uint64_t)n_healthy)
        fail("member %d received a malformed line", receiver);
    if ((int)sender == receiver) fail("member %d received its own line back", receiver);
    if (line[0] == 'P') {
        if (seq == round_no && !joined && ++probe_pairs == (long long)n_healthy * (n_healthy - 1)) {
            joined = 1;
            joined_at = now_ns();
            for (int h = 0; h < n_healthy; h++) members[h].dirty = 1;
            tick_soon = 1;
        }
        return;
    }
    if (line[0] != 'M') fail("member %d received a line of unknown type", receiver);
    int64_t *last = &members[receiver].last[sender];
    if ((int64_t)seq != *last + 1) gaps++; /* a line lost, or out of order */
    *last = (int64_t)seq;
    members[sender].dirty = 1;
    if (phase == MEASURE) {
        delivered++;
        samples_add(&latency, now_ns() - stamp);
    }
}

static void fanout_readable(conn_t *c) {
    member_t *m = member(c);
    int receiver = c->id - n_stuck;
    for (;;) {
        ssize_t r = net_read(c, rbuf, sizeof rbuf);
        if (r == -1) return;
        if (r <= 0) {
            drop_healthy(c);
            return;
        }
        const char *p = rbuf, *end = rbuf + r;
        if (m->have) { /* finish the line the last read cut */
            size_t need = (size_t)opt.size - m->have, take = (size_t)(end - p) < need ? (size_t)(end - p) : need;
            memcpy(m->partial + m->have, p, take);
            m->have += take;
            p += take;
            if (m->have < (size_t)opt.size) continue;
            take_line(receiver, m->partial);
            m->have = 0;
        }
        for (; end - p >= opt.size; p += opt.size) take_line(receiver, p);
        m->have = (size_t)(end - p);
        memcpy(m->partial, p, m->have);
    }
}

static void fanout_hangup(conn_t *c) {
    dropped_stuck++;
    if (stuck_dropped_after_s < 0 && joined) stuck_dropped_after_s = (double)(now_ns() - joined_at) / 1e9;
    net_close(c);
}

static void fanout_tick(void) {
    if (!joined) {
        if (n_open_healthy == n_healthy && now_ns() - round_started > PROBE_RETRY) start_round();
        return;
    }
    for (int h = 0; h < n_healthy; h++) {
        member_t *m = &members[h];
        if (!m->dirty || !m->alive) continue;
        m->dirty = 0;
        uint32_t busy = in_flight(h);
        if (busy < (uint32_t)opt.depth) send_lines(h, 'M', opt.depth - (int)busy);
    }
}

static int fanout_ready(void) { return joined; }

static const char *fanout_waiting(void) {
    static char text[160];
    if (n_open_stuck < n_stuck || n_open_healthy < n_healthy)
        snprintf(text, sizeof text, "%d of %d stuck and %d of %d healthy members connected",
                 n_open_stuck, n_stuck, n_open_healthy, n_healthy);
    else
        snprintf(text, sizeof text, "join probes of round %u: %lld of %lld deliveries seen; "
                 "does the server relay every line to every other member?",
                 round_no, probe_pairs, (long long)n_healthy * (n_healthy - 1));
    return text;
}

static void fanout_measuring(void) {
    delivered = sent = gaps = 0;
    samples_clear(&latency);
}

static void fanout_report(void) {
    json_int("members", n_healthy);
    json_int("stuck", n_stuck);
    json_int("depth", opt.depth);
    json_int("delivered", (long long)delivered);
    json_num("per_s", (double)delivered / measured_s);
    json_num("sent_per_s", (double)sent / measured_s);
    json_int("gaps", (long long)gaps);
    json_int("healthy_dropped", (long long)dropped_healthy);
    json_int("stuck_dropped", (long long)dropped_stuck);
    if (stuck_dropped_after_s >= 0) json_num("stuck_dropped_after_s", stuck_dropped_after_s);
    print_latency(&latency);
}

const workload_t wl_fanout = {
    .name = "fanout",
    .start = fanout_start,
    .ready = fanout_ready,
    .waiting = fanout_waiting,
    .opened = fanout_opened,
    .readable = fanout_readable,
    .hangup = fanout_hangup,
    .measuring = fanout_measuring,
    .tick = fanout_tick,
    .report = fanout_report,
};
