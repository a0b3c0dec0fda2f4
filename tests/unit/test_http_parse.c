/* test_http_parse.c -- request framing by RFC 9112: heads, lengths, chunked bodies, and the
 * same verdict however the bytes are split. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>

#include "http_parse.h"
#include "unit.h"

#define BODY_MAX 65536

/* Frame REQ fed whole; returns the result, with F filled. BUF must hold LEN bytes. */
static enum tally_http_frame_result frame_whole(struct tally_http_framer *f, char *buf, size_t len,
                                                struct tally_http_refusal *why)
{
    tally_http_framer_reset(f);
    return tally_http_frame(f, buf, len, BODY_MAX, why);
}

static void test_heads_tally_accepts(void **state)
{
    static const struct {
        const char *req;
        unsigned method, minor;
        bool keep_alive;
        const char *target, *origin;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", TALLY_HTTP_GET, 1, true, "/", NULL},
        {"HEAD /x?y=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", TALLY_HTTP_HEAD, 1, false,
         "/x?y=1", NULL},
        {"GET / HTTP/1.0\r\n\r\n", TALLY_HTTP_GET, 0, false, "/", NULL},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", TALLY_HTTP_GET, 0, true, "/", NULL},
        {"GET / HTTP/1.1\r\nhOsT: a\r\nOrigin:   https://e.org \t\r\n\r\n", TALLY_HTTP_GET, 1, true,
         "/", "https://e.org"},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", TALLY_HTTP_GET, 1, false,
         "/", NULL},
        {"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", 0, 1, true, "/pot", NULL},
        {"GET / HTTP/1.9\r\nHost: a\r\nX-Empty:\r\n\r\n", TALLY_HTTP_GET, 1, true, "/", NULL},
    };
    struct tally_http_framer f;
    struct tally_http_refusal why;
    char buf[512];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t len = strlen(cases[i].req);

        memcpy(buf, cases[i].req, len);
        assert_int_equal(frame_whole(&f, buf, len, &why), TALLY_HTTP_FRAMED);
        assert_int_equal(f.head.method, cases[i].method);
        assert_int_equal(f.head.minor, cases[i].minor);
        assert_int_equal(f.head.keep_alive, cases[i].keep_alive);
        assert_int_equal(f.total, len);
        assert_int_equal(f.head.target.len, strlen(cases[i].target));
        assert_memory_equal(f.head.target.p, cases[i].target, f.head.target.len);
        if (cases[i].origin == NULL) {
            assert_null(f.head.field[TALLY_HF_ORIGIN].p);
        } else {
            assert_int_equal(f.head.field[TALLY_HF_ORIGIN].len, strlen(cases[i].origin));
            assert_memory_equal(f.head.field[TALLY_HF_ORIGIN].p, cases[i].origin,
                                strlen(cases[i].origin));
        }
    }
}

static void test_heads_refused_by_the_rfc(void **state)
{
    static const struct {
        const char *req;
        size_t len; /* 0: strlen */
        int status;
        const char *code;
    } cases[] = {
        /* RFC 9112 6.3: framing two parsers could read two ways. */
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 0, 400,
         "ambiguous_framing"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 0, 400,
         "ambiguous_framing"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 0, 400, "ambiguous_framing"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\nx", 0, 400, "ambiguous_framing"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 0, 400, "ambiguous_framing"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 400,
         "ambiguous_framing"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 400,
         "ambiguous_framing"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "chunked\r\n\r\n",
         0, 400, "ambiguous_framing"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 0,
         400, "ambiguous_framing"},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 400, "ambiguous_framing"},
        /* 3.2: exactly one Host in HTTP/1.1. */
        {"GET / HTTP/1.1\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 0, 400, "bad_request"},
        /* 5.1, 5.2, 5.5: names, folding, controls. */
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35, 400, "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", 0, 400, "bad_request"},
        {"GET / HTTP/1.1\nHost: a\n\n", 0, 400, "bad_request"},
        /* 3: the request line. */
        {"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", 30, 400, "invalid_uri"},
        {"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "bad_request"},
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid_uri"},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0, 400, "bad_request"},
        {"GET / http/1.1\r\nHost: a\r\n\r\n", 0, 400, "bad_request"},
        {"GET /\r\n\r\n", 0, 400, "invalid_uri"},
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "bad_request"},
        /* Expectations other than 100-continue; a body over the limit. */
        {"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 0, 417, "expectation_failed"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n", 0, 413,
         "payload_too_large"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0, 413,
         "payload_too_large"},
    };
    struct tally_http_framer f;
    struct tally_http_refusal why;
    char buf[512];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t len = cases[i].len > 0 ? cases[i].len : strlen(cases[i].req);

        memcpy(buf, cases[i].req, len);
        if (frame_whole(&f, buf, len, &why) != TALLY_HTTP_REFUSED) {
            print_error("case %zu accepted: %s\n", i, cases[i].req);
            fail();
        }
        if (why.status != cases[i].status || strcmp(why.code, cases[i].code) != 0) {
            print_error("case %zu: %d %s, want %d %s\n", i, why.status, why.code, cases[i].status,
                        cases[i].code);
            fail();
        }
    }
}

static void test_head_limits_are_431(void **state)
{
    struct tally_http_framer f;
    struct tally_http_refusal why;
    size_t len = TALLY_HTTP_HEAD_MAX + 10;
    char *buf = malloc(len);
    char many[4096];
    size_t n = 0;

    (void)state;
    assert_non_null(buf);
    memset(buf, 'a', len);
    memcpy(buf, "GET /", 5);
    assert_int_equal(frame_whole(&f, buf, TALLY_HTTP_HEAD_MAX, &why), TALLY_HTTP_MORE);
    assert_int_equal(frame_whole(&f, buf, len, &why), TALLY_HTTP_REFUSED);
    assert_int_equal(why.status, 431);
    free(buf);
    n += (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "X-%d: v\r\n", i);
    n += (size_t)snprintf(many + n, sizeof(many) - n, "\r\n");
    assert_int_equal(frame_whole(&f, many, n, &why), TALLY_HTTP_REFUSED);
    assert_int_equal(why.status, 431);
    assert_string_equal(why.code, "too_many_headers");
}

static void test_chunked_bodies(void **state)
{
    static const struct {
        const char *chunks, *body;
        int status; /* 0: framed */
    } cases[] = {
        {"5\r\nhello\r\n0\r\n\r\n", "hello", 0},
        {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0},
        {"A;ext=1;b=\"q\"\r\n0123456789\r\n0\r\n\r\n", "0123456789", 0},
        {"a \t;e\r\n0123456789\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n", "0123456789", 0},
        {"000\r\n\r\n", "", 0},
        {"0x5\r\nhello\r\n0\r\n\r\n", NULL, 400},
        {"+5\r\nhello\r\n0\r\n\r\n", NULL, 400},
        {" 5\r\nhello\r\n0\r\n\r\n", NULL, 400},
        {"-5\r\nhello\r\n0\r\n\r\n", NULL, 400},
        {"\r\nhello\r\n0\r\n\r\n", NULL, 400},
        {"5\nhello\r\n0\r\n\r\n", NULL, 400},
        {"5\r\nhelloX\r\n0\r\n\r\n", NULL, 400},
        {"5\r\nhello\r\n0\r\n X: 1\r\n\r\n", NULL, 400},
        {"5\r\nhello\r\n0\r\nX: \x01\r\n\r\n", NULL, 400},
        {"10001\r\n", NULL, 413},
        {"ffffffffffffffffffffffff\r\n", NULL, 413},
    };
    static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    struct tally_http_framer f;
    struct tally_http_refusal why;
    char buf[512];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t hlen = strlen(head), len = hlen + strlen(cases[i].chunks);
        enum tally_http_frame_result res;

        memcpy(buf, head, hlen);
        memcpy(buf + hlen, cases[i].chunks, len - hlen);
        res = frame_whole(&f, buf, len, &why);
        if (cases[i].status != 0) {
            assert_int_equal(res, TALLY_HTTP_REFUSED);
            assert_int_equal(why.status, cases[i].status);
            continue;
        }
        assert_int_equal(res, TALLY_HTTP_FRAMED);
        assert_int_equal(f.total, len);
        assert_int_equal(f.body_len, strlen(cases[i].body));
        assert_memory_equal(buf + hlen, cases[i].body, f.body_len);
    }
}

/* The same bytes, given one more at a time: the same verdict, body and length. */
static void test_split_at_every_byte_frames_the_same(void **state)
{
    static const char *const reqs[] = {
        "POST /v1/events HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    };
    char whole[512], split[512];
    struct tally_http_framer fw, fs;
    struct tally_http_refusal ww, ws;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(reqs); i++) {
        size_t len = strlen(reqs[i]);
        enum tally_http_frame_result rw, rs = TALLY_HTTP_MORE;

        memcpy(whole, reqs[i], len);
        rw = frame_whole(&fw, whole, len, &ww);
        tally_http_framer_reset(&fs);
        for (size_t n = 1; n <= len; n++) {
            memcpy(split + n - 1, reqs[i] + n - 1, 1);
            rs = tally_http_frame(&fs, split, n, BODY_MAX, &ws);
            if (rs == TALLY_HTTP_FRAMED || rs == TALLY_HTTP_REFUSED)
                break;
        }
        assert_int_equal(rs, rw);
        if (rw == TALLY_HTTP_REFUSED) {
            assert_int_equal(ws.status, ww.status);
            continue;
        }
        assert_int_equal(fs.total, fw.total);
        assert_int_equal(fs.body_len, fw.body_len);
        assert_memory_equal(split + tally_http_framer_head_len(&fs),
                            whole + tally_http_framer_head_len(&fw), fw.body_len);
    }
}

static void test_token_lists(void **state)
{
    (void)state;
    assert_true(tally_http_list_has(S("close"), "close"));
    assert_true(tally_http_list_has(S(" a , Close ,b"), "close"));
    assert_false(tally_http_list_has(S("closed"), "close"));
    assert_false(tally_http_list_has(S(""), "close"));
    assert_int_equal(tally_http_method_of(S("DELETE")), TALLY_HTTP_DELETE);
    assert_int_equal(tally_http_method_of(S("get")), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heads_tally_accepts),
        cmocka_unit_test(test_heads_refused_by_the_rfc),
        cmocka_unit_test(test_head_limits_are_431),
        cmocka_unit_test(test_chunked_bodies),
        cmocka_unit_test(test_split_at_every_byte_frames_the_same),
        cmocka_unit_test(test_token_lists),
    };

    return cmocka_run_group_tests_name("http_parse", tests, NULL, NULL);
}
