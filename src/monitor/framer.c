/*
 * The QMP input framer (see framer.h).  A message ends when its outermost
 * brace, bracket or string closes, or, for a bare number or literal, at the
 * first delimiter after it; jansson then parses exactly those bytes.
 */
#include "monitor/framer.h"

#include <stdlib.h>
#include <string.h>

void framer_init(struct framer *f)
{
    memset(f, 0, sizeof(*f));
    buf_init(&f->buf);
}

void framer_destroy(struct framer *f)
{
    buf_free(&f->buf);
}

void framer_append(struct framer *f, const void *data, size_t len)
{
    buf_append(&f->buf, data, len);
}

size_t framer_buffered(const struct framer *f)
{
    return f->buf.len;
}

static void consume(struct framer *f, size_t n)
{
    if (n == 0) {
        return; /* also: an empty buffer may have no storage yet */
    }
    memmove(f->buf.data, f->buf.data + n, f->buf.len - n);
    f->buf.len -= n;
    f->pos -= n;
}

static void reset_message(struct framer *f)
{
    f->depth = 0;
    f->in_frame = f->in_string = f->escape = f->scalar = f->discarding = false;
    f->total = 0;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * The byte classes of QEMU's JSON lexer (qobject/json-lexer.c), which
 * decide where a message is broken and where reading resumes:
 *  - inside a string only 0x20..0xFD are allowed (a raw tab, newline or
 *    other control character, 0xFE and 0xFF are lexical errors);
 *  - outside strings, whitespace, the structural characters, quotes and
 *    the characters of numbers and keywords; anything else is an error;
 *  - after an error, input is skipped up to a structural character, a
 *    control character other than tab, or 0xFE/0xFF, and read again from
 *    there: so the rest of a broken line cannot swallow the next command.
 */
static bool is_lexical_error(const struct framer *f, unsigned char c)
{
    if (c >= 0xFE) {
        return true;
    }
    if (f->in_string) {
        return c < 0x20;
    }
    if (c < 0x20) {
        return !is_space(c);
    }
    return !(is_space(c) || strchr("{}[],:\"'", c) || (c >= '0' && c <= '9') ||
             (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' || c == 'E');
}

static bool is_resync_point(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c >= 0xFE || strchr("[]{}:,", c);
}

/*
 * Scan one byte of a message.  Returns true when the message ends with the
 * bytes before f->pos (after this call), i.e. the frame is [0, f->pos).
 */
static bool scan_byte(struct framer *f, unsigned char c)
{
    if (f->scalar) {
        if (is_space(c) || strchr("{}[]\"',:", c)) {
            return true; /* the delimiter belongs to the next message */
        }
        f->pos++;
        return false;
    }
    f->pos++;
    if (f->in_string) {
        if (f->escape) {
            f->escape = false;
        } else if (c == '\\') {
            f->escape = true;
        } else if (c == f->quote) {
            f->in_string = false;
            return f->depth == 0;
        }
        return false;
    }
    switch (c) {
    case '"':
    case '\'':
        f->in_string = true;
        f->quote = (char)c;
        return false;
    case '{':
    case '[':
        f->depth++;
        return false;
    case '}':
    case ']':
        /* A stray closer is a one-byte message that jansson rejects. */
        return f->depth == 0 || --f->depth == 0;
    default:
        f->scalar = f->depth == 0;
        return false;
    }
}

static enum framer_result lexical_error(struct framer *f, unsigned char c, struct error **errp)
{
    bool in_string = f->in_string;
    f->pos++; /* drop everything up to and including the bad byte */
    consume(f, f->pos);
    reset_message(f);
    f->recovering = true;
    error_setg(errp, "JSON parse error, stray byte 0x%02x%s", c, in_string ? " in a string" : "");
    return FRAMER_ERROR;
}

enum framer_result framer_next(struct framer *f, const char **frame, size_t *len,
                               struct error **errp)
{
    consume(f, f->drop);
    f->drop = 0;
    while (f->pos < f->buf.len) {
        unsigned char c = f->buf.data[f->pos];
        if (f->recovering) {
            if (!is_resync_point(c)) {
                f->pos++; /* consumed below: not in a frame */
                continue;
            }
            f->recovering = false;
        }
        if (is_lexical_error(f, c)) {
            return lexical_error(f, c, errp);
        }
        if (!f->in_frame) {
            if (is_space(c)) {
                f->pos++;
                continue;
            }
            consume(f, f->pos); /* the message starts at offset 0 */
            f->in_frame = true;
        }
        size_t before = f->pos;
        bool end = scan_byte(f, c);
        f->total += f->pos - before;
        if (end) {
            bool skipped = f->discarding;
            size_t n = f->pos;
            reset_message(f);
            if (skipped) {
                consume(f, n);
                continue;
            }
            *frame = (const char *)f->buf.data;
            *len = n;
            f->drop = n;
            return FRAMER_FRAME;
        }
        if (!f->discarding && (f->total > QMP_MAX_MESSAGE || f->depth > QMP_MAX_DEPTH)) {
            f->discarding = true;
            error_setg(errp, "JSON parse error, message exceeds %s",
                       f->depth > QMP_MAX_DEPTH ? "the nesting limit of 1024"
                                                : "the size limit of 1048576 bytes");
            consume(f, f->pos);
            return FRAMER_ERROR;
        }
    }
    if (!f->in_frame || f->discarding) {
        consume(f, f->pos);
    }
    return FRAMER_NEED_MORE;
}

/*
 * QMP's extension: 'single-quoted' strings, and the \' escape in both kinds
 * of string.  Rewrite them as standard JSON for jansson.
 */
char *framer_requote(const char *frame, size_t len, size_t *out_len)
{
    if (!memchr(frame, '\'', len)) {
        return NULL;
    }
    char *out = malloc(len * 2 + 1); /* at worst every byte gains a backslash */
    if (!out) {
        abort();
    }
    size_t o = 0;
    char quote = 0;
    for (size_t i = 0; i < len; i++) {
        char c = frame[i];
        if (!quote) {
            if (c == '"' || c == '\'') {
                quote = c;
                c = '"';
            }
        } else if (c == '\\' && i + 1 < len) {
            char next = frame[++i];
            if (next != '\'') {
                out[o++] = '\\';
            }
            c = next;
        } else if (c == quote) {
            quote = 0;
            c = '"';
        } else if (c == '"') {
            out[o++] = '\\'; /* a double quote inside a single-quoted string */
        }
        out[o++] = c;
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}
