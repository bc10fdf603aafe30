/*
 * The machine's side of the board interface (board.h) that is not part of
 * the device list or the I/O bus: block node lookup for devices, the PCI
 * interrupt wiring the devices declare (read back by mptable.c), and the
 * teardown of the device list.
 */
#include "machine/internal.h"

#include "block/block.h"

struct block_node *board_block_node(struct machine *m, const char *node_name)
{
    return m->blocks && node_name ? block_graph_find(m->blocks, node_name) : NULL;
}

int board_add_pci_irq(struct machine *m, unsigned slot, unsigned pin, unsigned gsi,
                      struct error **errp)
{
    if (slot > 31 || pin < 1 || pin > 4 || gsi > 23) {
        error_setg(errp, "PCI slot %u INT%c: cannot be wired to GSI %u", slot,
                   pin >= 1 && pin <= 4 ? 'A' + pin - 1 : '?', gsi);
        return -1;
    }
    if (m->nr_pci_irqs == BOARD_MAX_PCI_IRQS) {
        error_setg(errp, "PCI slot %u: more than %d interrupt routes", slot, BOARD_MAX_PCI_IRQS);
        return -1;
    }
    m->pci_irqs[m->nr_pci_irqs++] =
            (struct board_pci_irq){(uint8_t)slot, (uint8_t)pin, (uint8_t)gsi};
    return 0;
}

void board_free_devices(struct machine *m)
{
    struct device *d = m->devices;
    m->devices = m->devices_tail = NULL;
    m->nr_pci_irqs = 0;
    while (d) {
        struct device *next = d->next;
        d->ops->free(d);
        d = next;
    }
}
