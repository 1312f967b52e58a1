/*
 * LD_PRELOAD shim for `cargo xtask bench edge`: wrk and h2load have no option for a client
 * certificate, and OpenSSL 3.0's system-wide config cannot set one (its `Certificate` and
 * `PrivateKey` commands are ignored outside an application's own SSL_CTX_config call). Every
 * SSL_CTX the program creates with SSL_CTX_new gets the chain and key named by
 * SLUICE_SHIM_CERT and SLUICE_SHIM_KEY (PEM files). A file that does not load aborts the
 * program: a run that silently presented no certificate would measure the wrong thing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static void fail(const char *what, const char *path)
{
    fprintf(stderr, "client_cert_shim: %s %s failed\n", what, path ? path : "(unset)");
    ERR_print_errors_fp(stderr);
    abort();
}

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
{
    static SSL_CTX *(*real)(const SSL_METHOD *);
    if (!real) {
        real = (SSL_CTX * (*)(const SSL_METHOD *)) dlsym(RTLD_NEXT, "SSL_CTX_new");
        if (!real)
            fail("dlsym", "SSL_CTX_new");
    }
    SSL_CTX *ctx = real(method);
    if (!ctx)
        return ctx;
    const char *cert = getenv("SLUICE_SHIM_CERT");
    const char *key = getenv("SLUICE_SHIM_KEY");
    if (!cert || !key)
        fail("SLUICE_SHIM_CERT/SLUICE_SHIM_KEY", NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        fail("loading the chain", cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        fail("loading the key", key);
    if (SSL_CTX_check_private_key(ctx) != 1)
        fail("matching the key to the chain", key);
    return ctx;
}
