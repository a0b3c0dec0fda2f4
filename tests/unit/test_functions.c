/* test_functions.c -- tally's Redis function library: each script file wrapped unchanged, the
 * names and flags tallyd calls, and the version in the library's name. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tally/functions.h"
#include "unit.h"

static const struct {
    enum tally_script script;
    const char *name, *file, *flags;
    bool read_only;
} scripts[] = {
    {TALLY_SCRIPT_APPLY, "apply", "apply.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_TOP, "top", "top.lua", "{'no-writes', 'allow-cross-slot-keys'}", true},
    {TALLY_SCRIPT_FORGET, "forget", "forget.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_IMPORT, "import", "import.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_DRAIN, "drain", "drain.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_KEPT, "kept", "kept.lua", "{'allow-oom', 'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_CPLAN, "cplan", "cplan.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_CPART, "cpart", "cpart.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_CHEARTBEAT, "cheartbeat", "cheartbeat.lua", "{'allow-cross-slot-keys'}",
     false},
    {TALLY_SCRIPT_CSTALE, "cstale", "cstale.lua", "{'no-writes', 'allow-cross-slot-keys'}", true},
    {TALLY_SCRIPT_CGONE, "cgone", "cgone.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_CDROP, "cdrop", "cdrop.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_KEPT_RO, "kept_ro", "kept.lua", "{'no-writes', 'allow-cross-slot-keys'}",
     true},
    {TALLY_SCRIPT_MARK, "mark", "mark.lua", "{'allow-cross-slot-keys'}", false},
    {TALLY_SCRIPT_UNMARK, "unmark", "unmark.lua", "{'allow-cross-slot-keys'}", false},
};

/* The text of src/scripts/NAME, in a static buffer. */
static const char *script_text(const char *name)
{
    static char text[1 << 16];
    char path[512];
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/src/scripts/%s", TALLY_SOURCE_DIR, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    n = fread(text, 1, sizeof(text) - 1, f);
    assert_true(n > 0 && n < sizeof(text) - 1);
    fclose(f);
    text[n] = '\0';
    return text;
}

static void test_functions_library_name_carries_a_version(void **state)
{
    size_t len;
    const char *code = tally_functions_code(&len);
    const char *lib = tally_functions_library();

    (void)state;
    assert_int_equal(strlen(lib), strlen("tally_") + 12);
    assert_memory_equal(lib, "tally_", 6);
    assert_int_equal(strspn(lib + 6, "0123456789abcdef"), 12);
    assert_true(len > 1000 && strlen(code) == len);
    assert_memory_equal(code, "#!lua name=", 11);
    assert_memory_equal(code + 11, lib, strlen(lib));
    assert_int_equal(code[11 + strlen(lib)], '\n');
}

static void test_functions_names_and_flags(void **state)
{
    const char *v = tally_functions_library() + 6;
    char want[64];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(scripts); i++) {
        snprintf(want, sizeof(want), "tally_%s_%s", scripts[i].name, v);
        assert_string_equal(tally_functions_name(scripts[i].script), want);
        assert_int_equal(tally_functions_read_only(scripts[i].script), scripts[i].read_only);
    }
    snprintf(want, sizeof(want), "tally_version_%s", v);
    assert_string_equal(tally_functions_name(TALLY_SCRIPTS), want);
    assert_true(tally_functions_read_only(TALLY_SCRIPTS));
}

/* Each file is the body of one function, byte for byte, so that the files stay plain scripts
 * (KEYS, ARGV) others can edit; each function is registered under its name with its flags. */
static void test_functions_wrap_each_script_unchanged(void **state)
{
    size_t len;
    const char *code = tally_functions_code(&len);
    const char *v = tally_functions_library() + 6;
    char head[96], reg[256];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(scripts); i++) {
        const char *text = script_text(scripts[i].file), *at;

        /* READ_ONLY tells a body registered both ways (kept.lua) which one runs. */
        snprintf(head, sizeof(head), "local function tally_%s(KEYS, ARGV)\nlocal READ_ONLY = %s\n",
                 scripts[i].name, scripts[i].read_only ? "true" : "false");
        at = strstr(code, head);
        assert_non_null(at);
        at += strlen(head);
        assert_memory_equal(at, text, strlen(text));
        assert_memory_equal(at + strlen(text), "\nend\n", 5);
        snprintf(reg, sizeof(reg),
                 "redis.register_function{function_name = 'tally_%s_%s', callback = tally_%s, "
                 "flags = %s}\n", scripts[i].name, v, scripts[i].name, scripts[i].flags);
        assert_non_null(strstr(code, reg));
    }
}

/* dates.lua once, before every function: shared by the bodies that file counts by day. */
static void test_functions_shared_code_comes_first_once(void **state)
{
    size_t len;
    const char *code = tally_functions_code(&len);
    const char *dates = script_text("dates.lua");
    const char *at = strstr(code, dates);

    (void)state;
    assert_non_null(at);
    assert_null(strstr(at + 1, dates));
    assert_true(at < strstr(code, "local function tally_"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_functions_library_name_carries_a_version),
        cmocka_unit_test(test_functions_names_and_flags),
        cmocka_unit_test(test_functions_wrap_each_script_unchanged),
        cmocka_unit_test(test_functions_shared_code_comes_first_once),
    };

    return cmocka_run_group_tests_name("functions", tests, NULL, NULL);
}
