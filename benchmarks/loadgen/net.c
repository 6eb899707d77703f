/* Connections: non-blocking connect, the optional TLS layer, reads and writes.
 *
 * Every socket is registered with the one epoll set, level-triggered. The event
 * carries the connection's registry slot and a generation number, so an event
 * queued for a socket that has since been closed (and whose number the next
 * socket reused) is recognised and dropped.
 */
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef LOADGEN_TLS
#include <openssl/err.h>
#include <openssl/x509v3.h>
static SSL_CTX *tls_ctx;
#endif

int epoll_fd = -1;
static conn_t **registry;
static uint32_t registry_len, registry_cap;
static char last_error[256];

const char *net_error(void) { return last_error; }

void net_init(void) {
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) fail("epoll_create1: %s", strerror(errno));
    if (!opt.cafile) return;
#ifdef LOADGEN_TLS
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx) fail("SSL_CTX_new failed");
    if (SSL_CTX_load_verify_locations(tls_ctx, opt.cafile, NULL) != 1)
        fail("cannot load the CA file %s", opt.cafile);
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
    /* The certificate is issued for the IP address the servers listen on. */
    X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(tls_ctx), "127.0.0.1");
    /* Every connection pays a full handshake: no session reuse of any kind. */
    SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(tls_ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#else
    fail("this loadgen was built without TLS (rebuild with -DLOADGEN_TLS -lssl -lcrypto)");
#endif
}

void net_register(conn_t *c, int id) {
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->id = id;
    if (registry_len == registry_cap) {
        registry_cap = registry_cap ? 2 * registry_cap : 64;
        registry = realloc(registry, registry_cap * sizeof *registry);
        if (!registry) fail("out of memory");
    }
    c->slot = registry_len;
    registry[registry_len++] = c;
}

static uint64_t tag(const conn_t *c) { return (uint64_t)c->gen << 32 | c->slot; }

void net_interest(conn_t *c, uint32_t events) {
    if (c->fd < 0 || events == c->events) return;
    struct epoll_event ev = {.events = events, .data.u64 = tag(c)};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
    c->events = events;
}

void net_close(conn_t *c) {
#ifdef LOADGEN_TLS
    if (c->ssl) {
        if (c->state == C_OPEN) SSL_shutdown(c->ssl); /* close_notify, not awaited */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
#endif
    if (c->fd >= 0) close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = C_IDLE;
    c->events = 0;
    c->pending_len = c->pending_sent = 0;
}

/* Close, then let the mode decide (a mode without the hook cannot live with failures). */
static void connect_failed(conn_t *c, const char *what, int err) {
    snprintf(last_error, sizeof last_error, "%s: %s", what, err ? strerror(err) : "failed");
    net_close(c);
    if (!wl->failed) fail("%s", last_error);
    wl->failed(c, last_error);
}

static void became_open(conn_t *c) {
    c->state = C_OPEN;
    net_interest(c, c->pending_len ? EPOLLIN | EPOLLOUT : EPOLLIN);
    if (wl->opened) wl->opened(c);
}

#ifdef LOADGEN_TLS
static void tls_error(const char *what) {
    unsigned long e = ERR_get_error();
    snprintf(last_error, sizeof last_error, "%s: %s", what,
             e ? ERR_reason_error_string(e) : strerror(errno));
    ERR_clear_error();
}

static void handshake_step(conn_t *c) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        became_open(c);
        return;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ: net_interest(c, EPOLLIN); return;
    case SSL_ERROR_WANT_WRITE: net_interest(c, EPOLLOUT); return;
    default:
        tls_error("TLS handshake");
        net_close(c);
        if (!wl->failed) fail("%s", last_error);
        wl->failed(c, last_error);
    }
}
#endif

static void connected(conn_t *c) {
#ifdef LOADGEN_TLS
    if (tls_ctx) {
        c->ssl = SSL_new(tls_ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) fail("SSL_new failed");
        SSL_set_connect_state(c->ssl);
        c->state = C_HANDSHAKE;
        handshake_step(c);
        return;
    }
#endif
    became_open(c);
}

void net_connect(conn_t *c, int rcvbuf) {
    int one = 1;
    c->gen++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        connect_failed(c, "socket", errno);
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Before connect(), so the window the peer sees is the small one from the start. */
    if (rcvbuf > 0) setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = tag(c)};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
    c->events = EPOLLOUT;
    c->state = C_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) == 0) connected(c);
    else if (errno != EINPROGRESS) connect_failed(c, "connect", errno);
}

ssize_t net_read(conn_t *c, void *buf, size_t len) {
#ifdef LOADGEN_TLS
    if (c->ssl) {
        int r = SSL_read(c->ssl, buf, (int)len);
        if (r > 0) return r;
        switch (SSL_get_error(c->ssl, r)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE: return -1;
        case SSL_ERROR_ZERO_RETURN: return 0;
        default: tls_error("TLS read"); return -2;
        }
    }
#endif
    ssize_t r = read(c->fd, buf, len);
    if (r >= 0) return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
    snprintf(last_error, sizeof last_error, "read: %s", strerror(errno));
    return -2;
}

ssize_t net_write(conn_t *c, const void *buf, size_t len) {
#ifdef LOADGEN_TLS
    if (c->ssl) {
        int r = SSL_write(c->ssl, buf, (int)len);
        if (r > 0) return r;
        switch (SSL_get_error(c->ssl, r)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE: return -1;
        default: tls_error("TLS write"); return -2;
        }
    }
#endif
    ssize_t r = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (r >= 0) return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
    snprintf(last_error, sizeof last_error, "write: %s", strerror(errno));
    return -2;
}

static void queue(conn_t *c, const char *buf, size_t len) {
    if (c->pending_sent == c->pending_len) c->pending_sent = c->pending_len = 0;
    if (c->pending_len + len > c->pending_cap) {
        size_t cap = c->pending_cap ? c->pending_cap : 4096;
        while (cap < c->pending_len + len) cap *= 2;
        c->pending = realloc(c->pending, cap);
        if (!c->pending) fail("out of memory");
        c->pending_cap = cap;
    }
    memcpy(c->pending + c->pending_len, buf, len);
    c->pending_len += len;
}

int net_send(conn_t *c, const void *buf, size_t len) {
    size_t done = 0;
    if (c->state == C_OPEN && c->pending_sent == c->pending_len) {
        ssize_t r = net_write(c, buf, len);
        if (r == -2) return -1;
        if (r > 0) done = (size_t)r;
    }
    if (done < len) {
        /* TLS must retry with the bytes it refused first: they lead the queue. */
        queue(c, (const char *)buf + done, len - done);
        if (c->state == C_OPEN) net_interest(c, c->events | EPOLLOUT);
    }
    return 0;
}

/* Write what is queued; 1 when the queue is empty, 0 when not yet, -1 when broken. */
static int flush(conn_t *c) {
    while (c->pending_sent < c->pending_len) {
        ssize_t r = net_write(c, c->pending + c->pending_sent, c->pending_len - c->pending_sent);
        if (r == -2) return -1;
        if (r <= 0) return 0;
        c->pending_sent += (size_t)r;
    }
    c->pending_sent = c->pending_len = 0;
    net_interest(c, c->events & ~(uint32_t)EPOLLOUT);
    return 1;
}

static conn_t *lookup(uint64_t t) {
    uint32_t slot = (uint32_t)t, gen = (uint32_t)(t >> 32);
    if (slot >= registry_len) return NULL;
    conn_t *c = registry[slot];
    return c->fd >= 0 && c->gen == gen ? c : NULL;
}

void net_dispatch_event(uint64_t t, uint32_t events) {
    conn_t *c = lookup(t);
    if (!c) return; /* closed since the event was queued */
    switch (c->state) {
    case C_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err) connect_failed(c, "connect", err);
        else connected(c);
        return;
    }
    case C_HANDSHAKE:
#ifdef LOADGEN_TLS
        handshake_step(c);
#endif
        return;
    case C_OPEN:
        break;
    default:
        return;
    }
    if (events & EPOLLOUT) {
        int r = flush(c);
        if (r < 0) {
            /* A broken write shows up as a failed read too: let the reader report it. */
            events |= EPOLLIN;
        } else if (r > 0 && wl->writable) {
            wl->writable(c);
            if (!lookup(t)) return;
        }
    }
    if (c->events & EPOLLIN) {
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) wl->readable(c);
    } else if (events & (EPOLLHUP | EPOLLERR)) {
        if (wl->hangup) wl->hangup(c);
        else net_close(c);
    }
}
