/*
 * The board: which devices a machine gets, created from the command line.
 */
#ifndef SNAPVM_HW_HW_H
#define SNAPVM_HW_HW_H

#include "util/error.h"

struct machine;
struct vm_config;

/* COM1 (with the -serial back end), the PCI host bridge, -device's. */
int hw_create_devices(struct machine *m, const struct vm_config *cfg, struct error **errp);
/* Free every device (flushing disks), in creation order. */
void hw_free_devices(struct machine *m);

#endif
