/* test_bots.c -- bots, crawlers and link-preview fetchers match; real browsers do not. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/bots.h"
#include "unit.h"

/* The build gives the directory of the unit tests' data (tests/unit/data in the source tree),
 * wherever the build directory is. */
#ifndef TALLY_UNIT_DATA_DIR
#error "TALLY_UNIT_DATA_DIR (the directory of tests/unit/data) must be defined by the build"
#endif
#define FIXTURE TALLY_UNIT_DATA_DIR "/bot-user-agents.txt"

/* Match LEN bytes of S from a heap copy of exactly that size, no NUL: AddressSanitizer catches
 * any read past the length. */
static bool match_bytes(const char *s, size_t len)
{
    char *copy = malloc(len > 0 ? len : 1);
    bool hit;

    assert_non_null(copy);
    memcpy(copy, s, len);
    hit = tally_bot_match(copy, len);
    free(copy);
    return hit;
}

static bool match_exact(const char *s)
{
    return match_bytes(s, strlen(s));
}

static void check_all(const char *const *uas, size_t n, bool want)
{
    size_t wrong = 0;

    for (size_t i = 0; i < n; i++) {
        if (match_exact(uas[i]) != want) {
            print_error("%s: %s\n", want ? "not matched" : "matched", uas[i]);
            wrong++;
        }
    }
    assert_int_equal(wrong, 0);
}

/* ---- (a) Every example User-Agent from the upstream list ---- */

static void test_bots_match_every_upstream_example(void **state)
{
    FILE *f = fopen(FIXTURE, "r");
    char *line = NULL;
    size_t cap = 0, n_lines = 0, missed = 0;
    ssize_t n;

    (void)state;
    if (f == NULL)
        fail_msg("cannot open %s", FIXTURE);
    while ((n = getline(&line, &cap, f)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            n--;
        n_lines++;
        if (!match_bytes(line, (size_t)n)) {
            print_error("not matched: %.*s\n", (int)n, line);
            missed++;
        }
    }
    free(line);
    fclose(f);
    assert_true(n_lines > 1000);
    assert_int_equal(missed, 0);
}

/* ---- (b) Real browsers, 2024-2026 ---- */

static const char *const browsers[] = {
    /* Chrome: Windows, macOS, Linux, ChromeOS, Android (reduced UA) */
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/142.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/133.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/138.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/134.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/137.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/140.0.0.0 Safari/537.36",
    /* Edge: Windows, macOS, Android, iOS */
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/136.0.0.0 Safari/537.36 Edg/136.0.0.0",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/132.0.0.0 Mobile Safari/537.36 EdgA/132.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.0 EdgiOS/131.2903.92 Mobile/15E148 Safari/605.1.15",
    /* Opera: Windows, macOS, Android; Opera Mini */
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/134.0.0.0 Safari/537.36 OPR/119.0.0.0",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36 OPR/86.0.0.0",
    "Opera/9.80 (Android; Opera Mini/74.0.2254/191.303; U; en) Presto/2.12.423 Version/12.16",
    /* Brave sends Chrome's UA; Vivaldi: Windows, Linux */
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/135.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/132.0.0.0 Safari/537.36 Vivaldi/7.1.3570.39",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/136.0.0.0 Safari/537.36 Vivaldi/7.4.3684.38",
    /* Firefox: desktop, ESR, Android, iOS, Focus */
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:134.0) Gecko/20100101 Firefox/134.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:140.0) Gecko/20100101 Firefox/140.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 6.1; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0",
    "Mozilla/5.0 (Android 14; Mobile; rv:134.0) Gecko/134.0 Firefox/134.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) FxiOS/134.0 Mobile/15E148 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Focus/133.0 Chrome/131.0.6778.135 Mobile Safari/537.36",
    /* Safari: macOS, iPhone, iPad (desktop mode sends the macOS UA) */
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.2 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/26.0 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.3 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/26.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.7 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.7 Mobile/15E148 Safari/604.1",
    /* Chrome on iOS */
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) CriOS/131.0.6778.103 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "CriOS/132.0.6834.78 Mobile/15E148 Safari/604.1",
    /* Samsung Internet, Android WebView (one on an Android 15 build), UC, Yandex, Silk */
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/28.0 Chrome/130.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240805.005; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/128.0.6613.127 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 15; CPH2557 Build/AP3A.240617.008; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/142.0.7444.142 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; U; Android 13; en-US; SM-A546E Build/TP1A.220624.014) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.80 "
    "UCBrowser/13.7.5.1321 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 YaBrowser/24.12.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; arm_64; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/128.0.0.0 YaBrowser/24.10.2.124.00 SA/3 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 9; KFMAWI) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Silk/124.3.1 like Chrome/124.0.6367.219 Safari/537.36",
    /* Other browsers: Coc Coc, Whale, DuckDuckGo, Huawei, Xiaomi, Meta Quest */
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "coc_coc_browser/136.0.230 Chrome/130.0.6723.230 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/128.0.0.0 Whale/3.28.266.14 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 DuckDuckGo/7 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 12; NOH-NX9; HMSCore 6.14.0.302) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/114.0.5735.196 HuaweiBrowser/15.0.4.312 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; U; Android 14; en-us; 23078RKD5C Build/UP1A.230905.011) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/122.0.6261.119 Mobile "
    "Safari/537.36 XiaoMi/MiuiBrowser/14.19.0-gn",
    "Mozilla/5.0 (X11; Linux x86_64; Quest 3) AppleWebKit/537.36 (KHTML, like Gecko) "
    "OculusBrowser/35.3.0.0.0 SamsungBrowser/4.0 Chrome/128.0.6613.137 VR Safari/537.36",
    /* In-app browsers: Facebook, Instagram, TikTok, LinkedIn, X, Snapchat, Pinterest, LINE,
     * WeChat, Google app */
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/493.0.0.36.107;FBBV/665839785;FBDV/iPhone15,2;"
    "FBMD/iPhone;FBSN/iOS;FBSV/18.1.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/668150383]",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.135 Mobile Safari/537.36 "
    "[FB_IAB/FB4A;FBAV/494.0.0.50.109;]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 Instagram 361.0.0.35.82 (iPhone14,5; iOS 18_2; en_US; en; "
    "scale=3.00; 1170x2532; 674117118; IABMV/1)",
    "Mozilla/5.0 (Linux; Android 15; CPH2557 Build/AP3A.240617.008; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/142.0.7444.142 Mobile Safari/537.36 Instagram "
    "406.0.0.58.159 Android (35/15; 480dpi; 1080x2400; OPPO; CPH2557; OP573DL1; mt6833; en_MY; "
    "822918295; IABMV/1) NV/1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 musical_ly_36.5.0 JsSdk/2.0 NetType/WIFI Channel/App Store "
    "ByteLocale/en Region/US isDarkMode/0 WKWebView/1 RevealType/Dialog "
    "BytedanceWebview/d8a21c6",
    "Mozilla/5.0 (Linux; Android 13; SM-G991U Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.134 Mobile Safari/537.36 trill_350403 "
    "JsSdk/1.0 NetType/WIFI Channel/googleplay AppName/musical_ly app_version/35.4.3 "
    "ByteLocale/en ByteFullLocale/en Region/US AppId/1233 Spark/1.5.9.1 AppVersion/35.4.3 "
    "BytedanceWebview/d8a21c6",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 [LinkedInApp]/9.30.1550",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 Twitter for iPhone/10.48",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 Snapchat/13.10.0.45 (like Safari/8619.1.26.10.1, panda)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 [Pinterest/iOS]",
    "Mozilla/5.0 (Linux; Android 14; Pixel 7 Build/AP2A.240905.003; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/129.0.6668.70 Mobile Safari/537.36 "
    "[Pinterest/Android]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 Safari Line/14.19.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 MicroMessenger/8.0.50(0x1800323a) NetType/WIFI Language/zh_CN",
    "Mozilla/5.0 (Linux; Android 13; V2227A Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160065 "
    "MMWEBSDK/20231202 MMWEBID/2308 MicroMessenger/8.0.47.2560(0x28002F30) WeChat/arm64 Weixin "
    "NetType/WIFI Language/zh_CN ABI/arm64",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) GSA/343.0.695551749 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.135 Mobile Safari/537.36 GSA/15.49.35.29.arm64",
    /* Smart TVs, consoles, KaiOS */
    "Mozilla/5.0 (SMART-TV; LINUX; Tizen 8.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "108.0.5359.1/8.0 TV Safari/537.36",
    "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/108.0.5359.211 Safari/537.36 WebAppManager",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox Series X) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/48.0.2564.82 Safari/537.36 Edge/20.02",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19041",
    "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/13.0 Safari/605.1.15",
    "Mozilla/5.0 (PlayStation 4 11.00) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Mobile; LYF/F300B/LYF-F300B-001-01-15-130718-i; Android; rv:48.0) Gecko/48.0 "
    "Firefox/48.0 KAIOS/2.5",
    "Mozilla/5.0 (Mobile; rv:84.0) Gecko/84.0 Firefox/84.0 KAIOS/3.0",
};

static void test_bots_spare_real_browsers(void **state)
{
    (void)state;
    assert_true(N_ELEMS(browsers) >= 60);
    check_all(browsers, N_ELEMS(browsers), false);
}

/* ---- (c) Crawlers, link-preview fetchers, tools ---- */

static const char *const bots[] = {
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/131.0.6778.204 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Slack-ImgProxy (+https://api.slack.com/robots)",
    "WhatsApp/2.23.20.0",
    "WhatsApp/2.2409.2 A",
    "TelegramBot (like TwitterBot)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "Mozilla/5.0 (compatible; Pinterestbot/1.0; +http://www.pinterest.com/bot.html)",
    "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 "
    "skype-url-preview@microsoft.com",
    "Iframely/1.3.1 (+https://iframely.com/docs/about)",
    "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
    "+https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
    "+claudebot@anthropic.com)",
    "CCBot/2.0 (https://commoncrawl.org/faq/)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; "
    "+https://perplexity.ai/perplexitybot)",
    "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
    "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.6099.109 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 PTST/240101.120000",
};

static void test_bots_match_crawlers_and_link_previews(void **state)
{
    (void)state;
    check_all(bots, N_ELEMS(bots), true);
}

/* The hand-written list in bots.c: clients upstream does not name. */
static void test_bots_match_generic_http_clients(void **state)
{
    static const char *const clients[] = {
        "Java/17.0.2",
        "Apache-HttpClient/4.5.14 (Java/17.0.9)",
        "PycURL/7.45.2 libcurl/8.5.0 OpenSSL/3.0.11",
        "GuzzleHttp/7",
        "node",
        "undici",
        "Deno/1.40.0",
        "Bun/1.1.0",
    };
    static const char *const not_clients[] = {
        "nodes", "node ", "xundici", "Mozilla/5.0 Deno/1.40.0", "Mozilla/5.0 Bun/1.1.0",
    };

    (void)state;
    check_all(clients, N_ELEMS(clients), true);
    check_all(not_clients, N_ELEMS(not_clients), false);
}

/* ---- (d) Missing, empty, oversized ---- */

static void test_bots_match_missing_empty_and_oversized(void **state)
{
    char big[TALLY_UA_MAX + 1];
    const char *firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    size_t n = strlen(firefox);

    (void)state;
    assert_true(tally_bot_match(NULL, 0));
    assert_true(tally_bot_match(NULL, 10));
    assert_true(tally_bot_match("", 0));
    assert_true(tally_bot_match(firefox, 0));

    /* A browser UA padded with spaces: fine at the limit, a bot one byte over it. */
    memset(big, ' ', sizeof(big));
    memcpy(big, firefox, n);
    assert_false(tally_bot_match(big, TALLY_UA_MAX));
    assert_true(tally_bot_match(big, TALLY_UA_MAX + 1));
}

/* ---- (e) Anchors, alternatives and gaps ---- */

static void test_bots_honour_anchors(void **state)
{
    static const struct {
        const char *ua;
        bool want;
    } cases[] = {
        /* ^Seekbot, ^curl, ^Silk\/: only at the start */
        {"Seekbot/1.0 (http://www.seekbot.net/bot.html)", true},
        {"Mozilla/5.0 (compatible; Seekbot/1.0)", false},
        {"curl/7.88.1", true},
        {"Mozilla/5.0 curl/7.88.1", false},
        {"Silk/1.0", true},
        /* GoogleAssociationService$, SSL Labs$: only at the end */
        {"Mozilla/5.0 GoogleAssociationService", true},
        {"Mozilla/5.0 GoogleAssociationService x", false},
        {"Mozilla/5.0 (compatible) SSL Labs", true},
        {"SSL Labs probe", false},
        /* (^| )sentry\/: at the start or after a space, nowhere else */
        {"sentry/8.22.0 (https://sentry.io)", true},
        {"Mozilla/5.0 sentry/24.1.0", true},
        {"Mozilla/5.0 xsentry/24.1.0", false},
        /* ContextualBot[\s\S]*outcomes\.net: both parts, in that order */
        {"Mozilla/5.0 (compatible; ContextualBot/1.0; +https://outcomes.net/bot)", true},
        {"Mozilla/5.0 (outcomes.net; ContextualBot/1.0)", false},
        {"Mozilla/5.0 (compatible; ContextualBot/1.0)", false},
        /* BlogTraffic\/\d\.\d+ Feed-Fetcher */
        {"BlogTraffic/2.1 Feed-Fetcher", true},
        {"BlogTraffic/2 Feed-Fetcher", false},
        {"BlogTraffic/2.", false},
        /* S[eE][mM]rushBot, (sistrix|SISTRIX) [cC]rawler: every combination */
        {"SEMrushBot", true},
        {"SeMrushBot", true},
        {"SEmrushBot", true},
        {"Mozilla/5.0 (compatible; sistrix crawler)", true},
        {"Mozilla/5.0 (compatible; SISTRIX Crawler)", true},
        {"Mozilla/5.0 (compatible; Sistrix crawler)", false},
    };
    size_t wrong = 0;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        if (match_exact(cases[i].ua) != cases[i].want) {
            print_error("%s: %s\n", cases[i].want ? "not matched" : "matched", cases[i].ua);
            wrong++;
        }
    }
    assert_int_equal(wrong, 0);
}

/* ---- (f) Only LEN bytes count ---- */

static void test_bots_read_only_len_bytes(void **state)
{
    static const char chrome[] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                                 "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    static const char *const tails[] = {
        "Googlebot/2.1",
        " SSL Labs",
        " GoogleAssociationService",
        " PTST/240101",
    };
    char buf[512];
    size_t n = sizeof(chrome) - 1;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(tails); i++) {
        size_t tail = strlen(tails[i]);

        memcpy(buf, chrome, n);
        memcpy(buf + n, tails[i], tail + 1);
        assert_true(tally_bot_match(buf, n + tail));
        assert_false(tally_bot_match(buf, n));
    }
    /* A bot token cut short by LEN does not match, nor does an end anchor inside the cut. */
    assert_false(tally_bot_match("Googlebot/2.1", 8));
    assert_false(tally_bot_match("SSL Labs", 7));
    assert_true(tally_bot_match("curl/8.5.0", 4));
}

static void test_bots_name_their_source(void **state)
{
    const char *src = tally_bots_source();
    const char *prefix = "crawler-user-agents ";

    (void)state;
    assert_memory_equal(src, prefix, strlen(prefix));
    assert_true(strlen(src) > strlen(prefix));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bots_match_every_upstream_example),
        cmocka_unit_test(test_bots_spare_real_browsers),
        cmocka_unit_test(test_bots_match_crawlers_and_link_previews),
        cmocka_unit_test(test_bots_match_generic_http_clients),
        cmocka_unit_test(test_bots_match_missing_empty_and_oversized),
        cmocka_unit_test(test_bots_honour_anchors),
        cmocka_unit_test(test_bots_read_only_len_bytes),
        cmocka_unit_test(test_bots_name_their_source),
    };

    return cmocka_run_group_tests_name("bots", tests, NULL, NULL);
}
