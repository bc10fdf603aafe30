/*
 * The registry and the schema agree: every QMP handler has a schema entry,
 * every schema command has a handler, and no name is registered twice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "monitor/monitor-int.h"

static void test_handlers_match_schema(void **state)
{
    (void)state;
    struct error *err = NULL;
    struct qapi_schema *s = qapi_schema_load(qapi_schema_json, &err);
    assert_non_null(s);
    size_t handlers = 0;
    for (size_t t = 0; qmp_default_tables[t]; t++) {
        for (const struct qmp_command *c = qmp_default_tables[t]; c->name; c++) {
            if (!qapi_schema_has_command(s, c->name)) {
                fail_msg("handler '%s' has no schema entry", c->name);
            }
            if (qmp_find_command(qmp_default_tables, c->name) != c) {
                fail_msg("command '%s' is registered twice", c->name);
            }
            handlers++;
        }
    }
    size_t i;
    json_t *name;
    json_array_foreach(qapi_schema_command_names(s), i, name)
    {
        if (!qmp_find_command(qmp_default_tables, json_string_value(name))) {
            fail_msg("schema command '%s' has no handler", json_string_value(name));
        }
    }
    assert_int_equal(handlers, json_array_size(qapi_schema_command_names(s)));
    qapi_schema_free(s);
}

static void test_hmp_names_unique(void **state)
{
    (void)state;
    for (size_t t = 0; hmp_default_tables[t]; t++) {
        for (const struct hmp_command *c = hmp_default_tables[t]; c->name; c++) {
            assert_non_null(c->handler);
            assert_non_null(c->help);
            for (size_t u = 0; hmp_default_tables[u]; u++) {
                for (const struct hmp_command *d = hmp_default_tables[u]; d->name; d++) {
                    if (d != c && !strcmp(d->name, c->name)) {
                        fail_msg("HMP command '%s' is registered twice", c->name);
                    }
                }
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_handlers_match_schema),
            cmocka_unit_test(test_hmp_names_unique),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
