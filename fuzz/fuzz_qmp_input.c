/*
 * libFuzzer target for the QMP input path: the framer and the dispatcher
 * (JSON parsing, envelope checks, negotiation, schema validation, handlers
 * that need no machine).  The input is fed in chunks whose sizes come from
 * the input itself, so message boundaries land everywhere.  Every framed
 * message must get exactly one well-formed reply.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/commands.h"
#include "monitor/qapi-commands.h"
#include "monitor/framer.h"
#include "monitor/monitor-int.h"

static struct monitor *mon;

/*
 * There is no machine here: every QMP handler copes with that (it answers
 * "This monitor has no machine"), so the whole generated table is fuzzed.
 * Of HMP, only the commands that do not assume a machine.
 */
static const struct qmp_command *const tables[] = {
        qapi_commands,
        NULL,
};
static const struct hmp_command *const hmp_tables[] = {
        hmp_core_commands,
        hmp_machine_commands,
        NULL,
};

static void check_reply(json_t *reply)
{
    if (!json_is_object(reply)) {
        abort();
    }
    json_t *err = json_object_get(reply, "error");
    if (!json_object_get(reply, "return") && !(json_is_string(json_object_get(err, "class")) &&
                                               json_is_string(json_object_get(err, "desc")))) {
        abort();
    }
    json_decref(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!mon) {
        /* Never started: no thread, no sockets. */
        mon = monitor_new_custom(NULL, qapi_schema_json, tables, hmp_tables, NULL);
    }
    struct framer f;
    framer_init(&f);
    bool negotiated = size > 0 && (data[0] & 1);
    size_t pos = 1;
    while (pos < size) {
        size_t n = 1 + data[pos - 1] % 64;
        n = n > size - pos ? size - pos : n;
        framer_append(&f, data + pos, n);
        pos += n;
        const char *frame;
        size_t len;
        struct error *err = NULL;
        enum framer_result r;
        while ((r = framer_next(&f, &frame, &len, &err)) != FRAMER_NEED_MORE) {
            if (r == FRAMER_ERROR) {
                check_reply(qmp_error_reply(NULL, err));
                err = NULL;
                continue;
            }
            json_t *reply = qmp_dispatch(mon, 1, &negotiated, frame, len);
            if (reply) {
                check_reply(reply);
            }
        }
    }
    framer_destroy(&f);
    return 0;
}
