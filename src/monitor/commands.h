/*
 * The command tables of each area of src/monitor, gathered by commands.c.
 * Each table ends with an entry whose name is NULL.
 */
#ifndef SNAPVM_MONITOR_COMMANDS_H
#define SNAPVM_MONITOR_COMMANDS_H

#include "monitor/qmp.h"

extern const struct qmp_command qmp_core_commands[];     /* qmp-core.c */
extern const struct qmp_command qmp_machine_commands[];  /* qmp-machine.c */
extern const struct qmp_command qmp_block_commands[];    /* qmp-block.c */
extern const struct qmp_command qmp_job_commands[];      /* qmp-jobs.c */
extern const struct qmp_command qmp_snapshot_commands[]; /* qmp-snapshot.c */
extern const struct hmp_command hmp_snapshot_commands[]; /* qmp-snapshot.c: savevm, loadvm, ... */
extern const struct qmp_command qmp_hmp_commands[];      /* hmp.c: human-monitor-command */

extern const struct hmp_command hmp_core_commands[];    /* hmp.c: help */
extern const struct hmp_command hmp_machine_commands[]; /* qmp-machine.c: info status */

#endif
