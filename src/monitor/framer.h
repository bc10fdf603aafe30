/*
 * QMP input framing: splits a client's byte stream into complete top-level
 * JSON values, so that several messages in one read and one message split
 * over many reads both work.  It only tracks nesting, strings and escapes;
 * parsing proper is jansson's job once a frame is complete.
 *
 * Errors leave the framer ready for the next message, as QEMU's lexer
 * does: an over-long message is skipped to its end; a byte that JSON
 * cannot hold there (a control character, 0xFE/0xFF, a raw newline in a
 * string: also QMP's way for a client to reset the server's parser)
 * drops the partial message, and reading resumes at the next structural
 * character or line end.
 */
#ifndef SNAPVM_MONITOR_FRAMER_H
#define SNAPVM_MONITOR_FRAMER_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"
#include "util/error.h"

#define QMP_MAX_MESSAGE (1u << 20) /* bytes of one message */
#define QMP_MAX_DEPTH   1024       /* nesting of one message */

struct framer {
    struct byte_buf buf; /* unconsumed input; a frame in progress starts at 0 */
    size_t pos;          /* next byte to scan */
    size_t depth;
    bool in_frame;
    bool in_string;
    char quote; /* the quote that opened the string: QMP also takes '...' */
    bool escape;
    bool scalar;     /* a top-level number/literal, ended by a delimiter */
    bool discarding; /* skipping the rest of an oversized message */
    bool recovering; /* after a lexical error: skipping to a resync point */
    size_t total;    /* bytes of the current message (also while discarding) */
    size_t drop;     /* bytes of the frame returned last, consumed by the next call */
};

enum framer_result {
    FRAMER_NEED_MORE, /* no complete message buffered */
    FRAMER_FRAME,     /* frame, len: one message, valid until the next call */
    FRAMER_ERROR,     /* *errp set; carry on calling */
};

void framer_init(struct framer *f);
void framer_destroy(struct framer *f);
void framer_append(struct framer *f, const void *data, size_t len);
/* Bytes buffered but not yet returned (for flow control). */
size_t framer_buffered(const struct framer *f);
enum framer_result framer_next(struct framer *f, const char **frame, size_t *len,
                               struct error **errp);

/*
 * A frame in standard JSON: QMP also accepts 'single-quoted' strings and
 * the escape \' in strings.  Returns a new NUL-terminated string, or NULL
 * when the frame has no single quote at all (use it as it is).
 */
char *framer_requote(const char *frame, size_t len, size_t *out_len);

#endif
