/*
 * snapvm-ctl's human output: column tables sized to their content, and the
 * formats of sizes, dates, guest clocks and durations (those of qemu-img
 * snapshot -l where there is one, so the two tools read alike).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

struct table {
    int ncols;
    json_t *rows; /* arrays of strings; row 0 is the heading */
    bool *right;
};

struct table *table_new(int ncols, const char *const *heads)
{
    struct table *t = calloc(1, sizeof(*t));
    if (!t) {
        abort();
    }
    t->ncols = ncols;
    t->rows = json_array();
    t->right = calloc((size_t)ncols, sizeof(bool));
    table_add(t, heads);
    return t;
}

void table_add(struct table *t, const char *const *cells)
{
    json_t *row = json_array();
    for (int i = 0; i < t->ncols; i++) {
        json_array_append_new(row, json_string(cells[i] ? cells[i] : "-"));
    }
    json_array_append_new(t->rows, row);
}

void table_align_right(struct table *t, int col)
{
    t->right[col] = true;
}

/* Display width of UTF-8 text (tree lines use box-drawing characters). */
static int width(const char *s)
{
    int w = 0;
    for (; *s; s++) {
        w += ((unsigned char)*s & 0xC0) != 0x80;
    }
    return w;
}

void table_print(struct table *t, FILE *out)
{
    int *w = calloc((size_t)t->ncols, sizeof(int));
    size_t r;
    json_t *row;
    json_array_foreach(t->rows, r, row)
    {
        for (int i = 0; i < t->ncols; i++) {
            int cw = width(json_string_value(json_array_get(row, (size_t)i)));
            w[i] = cw > w[i] ? cw : w[i];
        }
    }
    json_array_foreach(t->rows, r, row)
    {
        char *line = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&line, &len);
        for (int i = 0; i < t->ncols; i++) {
            const char *cell = json_string_value(json_array_get(row, (size_t)i));
            int pad = w[i] - width(cell);
            if (t->right[i]) {
                fprintf(f, "%*s%s", pad, "", cell);
            } else {
                fprintf(f, "%s%*s", cell, pad, "");
            }
            fputs(i == t->ncols - 1 ? "" : "  ", f);
        }
        fclose(f);
        while (len && line[len - 1] == ' ') { /* an empty last cell leaves no blanks */
            line[--len] = '\0';
        }
        fprintf(out, "%s\n", line);
        free(line);
    }
    free(w);
}

void table_free(struct table *t)
{
    if (t) {
        json_decref(t->rows);
        free(t->right);
        free(t);
    }
}

void fmt_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
        return;
    }
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 6) {
        v /= 1024;
        u++;
    }
    /* three significant digits (four from 1000 to 1023), never an exponent;
     * no trailing zeros: 1.5 KiB, 258 MiB, 1010 MiB */
    char num[32];
    snprintf(num, sizeof(num), v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : "%.2f", v);
    if (strchr(num, '.')) {
        char *end = num + strlen(num) - 1;
        while (*end == '0') {
            *end-- = '\0';
        }
        if (*end == '.') {
            *end = '\0';
        }
    }
    snprintf(buf, len, "%s %s", num, units[u]);
}

void fmt_date(int64_t sec, char *buf, size_t len)
{
    time_t t = (time_t)sec;
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

void fmt_clock(uint64_t ns, char *buf, size_t len)
{
    snprintf(buf, len, "%02llu:%02llu:%02llu.%03llu", (unsigned long long)(ns / 3600000000000ULL),
             (unsigned long long)(ns / 60000000000ULL % 60),
             (unsigned long long)(ns / 1000000000ULL % 60),
             (unsigned long long)(ns / 1000000ULL % 1000));
}

void fmt_duration(double secs, char *buf, size_t len)
{
    long s = (long)(secs + 0.5);
    if (s >= 3600) {
        snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    } else if (s >= 60) {
        snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
    } else {
        snprintf(buf, len, "%lds", s);
    }
}

char *fmt_list(json_t *names)
{
    size_t total = 2, i;
    json_t *n;
    json_array_foreach(names, i, n)
    {
        total += strlen(json_string_value(n) ? json_string_value(n) : "") + 2;
    }
    char *out = calloc(1, total);
    if (!out) {
        abort();
    }
    json_array_foreach(names, i, n)
    {
        if (i) {
            strcat(out, ", ");
        }
        strcat(out, json_string_value(n) ? json_string_value(n) : "");
    }
    if (!*out) {
        strcpy(out, "-");
    }
    return out;
}
