/* TLS through OpenSSL memory BIOs on the libuv stream: ciphertext read from the socket goes into
 * rbio, SSL_read drains plaintext until SSL_ERROR_WANT_READ (data can sit in the BIO,
 * openssl#6234); the writer encrypts one plaintext buffer at a time into wbio and hands the
 * ciphertext to uv_write, so what waits inside TLS is bounded like everything else. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_internal.h"

struct link_tls {
  SSL_CTX *ctx;
  int server;
};

static const unsigned char alpn_wire[] = "\x06" LINK_ALPN;

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl, (void)arg;
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, alpn_wire, sizeof(alpn_wire) - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static int load_files(SSL_CTX *ctx, const link_tls_opts *o) {
  if (o->cert_file && SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) return -EINVAL;
  if (o->key_file && SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1)
    return -EINVAL;
  if (o->cert_file && SSL_CTX_check_private_key(ctx) != 1) return -EINVAL;
  if (o->ca_file) {
    if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1) return -EINVAL;
    int mode = SSL_VERIFY_PEER;
    if (o->server && o->require_peer_cert) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
  }
  return 0;
}

int link_tls_new(const link_tls_opts *o, link_tls **out) {
  if (!o || (o->server && (!o->cert_file || !o->key_file))) return -EINVAL;
  if (o->require_peer_cert && !o->ca_file) return -EINVAL;
  link_tls *t = calloc(1, sizeof(*t));
  if (!t) return -ENOMEM;
  t->server = o->server;
  t->ctx = SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
  if (!t->ctx) {
    free(t);
    return -ENOMEM;
  }
  SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
  SSL_CTX_set_num_tickets(t->ctx, 0);
  int rc = load_files(t->ctx, o);
  if (rc == 0 && o->server) SSL_CTX_set_alpn_select_cb(t->ctx, alpn_select, NULL);
  if (rc == 0 && !o->server &&
      SSL_CTX_set_alpn_protos(t->ctx, alpn_wire, sizeof(alpn_wire) - 1) != 0)
    rc = -ENOMEM;
  if (rc < 0) {
    ERR_clear_error();
    SSL_CTX_free(t->ctx);
    free(t);
    return rc;
  }
  *out = t;
  return 0;
}

void link_tls_free(link_tls *t) {
  if (!t) return;
  SSL_CTX_free(t->ctx);
  free(t);
}

static int set_peer_name(SSL *ssl, const char *name) {
  unsigned char tmp[16];
  if (inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1)
    return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -EINVAL;
  if (SSL_set_tlsext_host_name(ssl, name) != 1) return -EINVAL;
  return SSL_set1_host(ssl, name) == 1 ? 0 : -EINVAL;
}

int link_tls_attach(tern_link *l) {
  link_tls *t = l->cfg.tls;
  if (t->server == l->dialer) return -EINVAL; /* a server context on a dialer or the reverse */
  l->cipher_in = malloc(LINK_TLS_READ_BYTES);
  l->plain_out = malloc(LINK_WBUF_BYTES);
  l->ssl = SSL_new(t->ctx);
  l->rbio = BIO_new(BIO_s_mem());
  l->wbio = BIO_new(BIO_s_mem());
  if (!l->cipher_in || !l->plain_out || !l->ssl || !l->rbio || !l->wbio) {
    BIO_free(l->rbio);
    BIO_free(l->wbio);
    l->rbio = l->wbio = NULL;
    return -ENOMEM;
  }
  SSL_set_bio(l->ssl, l->rbio, l->wbio);
  if (l->dialer) {
    SSL_set_connect_state(l->ssl);
    if (l->cfg.server_name && set_peer_name(l->ssl, l->cfg.server_name) < 0) return -EINVAL;
  } else {
    SSL_set_accept_state(l->ssl);
  }
  return 0;
}

void link_tls_detach(tern_link *l) {
  if (l->ssl) SSL_free(l->ssl); /* frees both BIOs */
  else {
    BIO_free(l->rbio);
    BIO_free(l->wbio);
  }
  l->ssl = NULL;
  l->rbio = l->wbio = NULL;
  free(l->cipher_in);
  free(l->plain_out);
  l->cipher_in = l->plain_out = NULL;
}

static void tls_error(tern_link *l, const char *what) {
  char msg[LINK_STATUS_MSG_MAX];
  unsigned long e = ERR_get_error();
  snprintf(msg, sizeof(msg), "tls %s: %s", what, e ? ERR_reason_error_string(e) : "failed");
  ERR_clear_error();
  link_close_code(l, LINK_UNAUTHENTICATED, msg, true);
}

int link_tls_handshake(tern_link *l) {
  int r = SSL_do_handshake(l->ssl);
  if (r == 1) {
    const unsigned char *proto;
    unsigned len;
    SSL_get0_alpn_selected(l->ssl, &proto, &len);
    if (len != sizeof(alpn_wire) - 2 || memcmp(proto, LINK_ALPN, len) != 0) {
      link_close_code(l, LINK_UNAUTHENTICATED, "tls: peer does not speak " LINK_ALPN, true);
      return -EPROTO;
    }
    l->tls_done = true;
    link_check_ready(l);
    return 0;
  }
  int err = SSL_get_error(l->ssl, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return 0;
  /* send the alert, if any, before cutting */
  uint8_t alert[1024];
  size_t n = link_tls_pending(l);
  if (n && n <= sizeof(alert) && l->connected) {
    uv_buf_t b = uv_buf_init((char *)alert, (unsigned)link_tls_take(l, alert, n));
    uv_try_write((uv_stream_t *)&l->tcp, &b, 1);
  }
  tls_error(l, "handshake");
  return -EPROTO;
}

int link_tls_on_read(tern_link *l, const uint8_t *data, size_t len) {
  if (len && BIO_write(l->rbio, data, (int)len) != (int)len) {
    tls_error(l, "bio");
    return -EIO;
  }
  if (!l->tls_done) {
    if (link_tls_handshake(l) < 0) return -EPROTO;
    if (!l->tls_done) return 0;
  }
  while (!l->closing && !l->lingering) {
    size_t space = LINK_RBUF_BYTES - l->rlen;
    int r = SSL_read(l->ssl, l->rbuf + l->rlen, (int)space);
    if (r > 0) {
      l->rlen += (size_t)r;
      if (link_process(l) < 0) return -EPROTO;
      continue;
    }
    int err = SSL_get_error(l->ssl, r);
    if (err == SSL_ERROR_WANT_READ) return 0;
    if (err == SSL_ERROR_ZERO_RETURN) {
      link_close_code(l, LINK_UNAVAILABLE, "peer closed the link (tls)", true);
      return -EPIPE;
    }
    tls_error(l, "read");
    return -EPROTO;
  }
  return 0;
}

int link_tls_encrypt(tern_link *l, const uint8_t *plain, size_t n) {
  int r = SSL_write(l->ssl, plain, (int)n);
  if (r != (int)n) {
    tls_error(l, "write");
    return -EIO;
  }
  return 0;
}

size_t link_tls_pending(tern_link *l) { return l->wbio ? BIO_ctrl_pending(l->wbio) : 0; }

size_t link_tls_take(tern_link *l, uint8_t *out, size_t cap) {
  int r = BIO_read(l->wbio, out, (int)cap);
  return r > 0 ? (size_t)r : 0;
}

int link_peer_subject(const tern_link *l, char *buf, size_t len) {
  if (!len) return -EINVAL;
  buf[0] = 0;
  if (!l->ssl || !l->tls_done) return 0;
  X509 *x = SSL_get1_peer_certificate(l->ssl);
  if (!x) return 0;
  X509_NAME_oneline(X509_get_subject_name(x), buf, (int)len);
  X509_free(x);
  return 0;
}
