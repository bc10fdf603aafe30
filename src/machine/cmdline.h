/*
 * The command line: a QEMU-compatible subset parsed into a struct
 * vm_config.  Parsing checks syntax, sizes and that named files exist, so
 * that every mistake is reported as one line naming the option; checks that
 * need the machine (a drive= naming no node) happen in machine_new().
 */
#ifndef SNAPVM_MACHINE_CMDLINE_H
#define SNAPVM_MACHINE_CMDLINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

#define VM_DEFAULT_RAM (128ULL << 20)
#define VM_MIN_RAM     (4ULL << 20)
#define VM_MAX_RAM     (64ULL << 30)
#define VM_MAX_VCPUS   64

struct vm_config {
    uint64_t ram_size;
    int smp;
    char *kernel;
    char *initrd;
    char *append;
    char *mem_path;
    char *name;
    char *pidfile;
    char *logfile; /* -D: messages go to this file */
    char *loadvm;
    char *serial; /* -serial spec, "stdio" by default */
    bool start_paused;
    bool daemonize;
    bool help;
    bool version;
    json_t *blockdevs; /* array of -blockdev objects, in order */
    json_t *devices;   /* array of {"driver", "drive", "id"} objects */
    json_t *qmp;       /* array of -qmp spec strings */
};

void vm_config_init(struct vm_config *cfg);
void vm_config_free(struct vm_config *cfg);
/* Parse argv[1..argc-1] into cfg (initialised by vm_config_init). */
int vm_config_parse(struct vm_config *cfg, int argc, char **argv, struct error **errp);
/* The usage text printed by -help. */
const char *vm_config_usage(void);

#endif
