/*
 * The HMP command tables of each area of src/monitor, gathered by commands.c
 * (the QMP table is generated from the schema).
 * Each table ends with an entry whose name is NULL.
 */
#ifndef SNAPVM_MONITOR_COMMANDS_H
#define SNAPVM_MONITOR_COMMANDS_H

#include "monitor/qmp.h"

/* QMP: generated from the schema (qapi-commands.h: qapi_commands[]). */

extern const struct hmp_command hmp_snapshot_commands[]; /* qmp-snapshot.c: savevm, loadvm, ... */

extern const struct hmp_command hmp_core_commands[];    /* hmp.c: help */
extern const struct hmp_command hmp_machine_commands[]; /* qmp-machine.c: info status */

#endif
