/* Unit tests for the 8250/16550A register logic (src/hw/serial.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "hw/serial.h"

enum { RBR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

static void test_reset_state(void **state)
{
    (void)state;
    struct serial_regs s;
    serial_regs_reset(&s);
    assert_int_equal(serial_regs_read(&s, LSR), 0x60); /* THRE | TEMT */
    assert_int_equal(serial_regs_read(&s, IIR), 0x01); /* nothing pending, FIFOs off */
    assert_false(serial_regs_irq(&s));
}

static void test_divisor_latch_and_scratch(void **state)
{
    (void)state;
    struct serial_regs s;
    uint8_t tx = 0;
    serial_regs_reset(&s);
    serial_regs_write(&s, LCR, 0x83, &tx);
    assert_false(serial_regs_write(&s, RBR, 0x0c, &tx)); /* DLL, not a transmit */
    serial_regs_write(&s, IER, 0x01, &tx);               /* DLM */
    assert_int_equal(serial_regs_read(&s, RBR), 0x0c);
    assert_int_equal(serial_regs_read(&s, IER), 0x01);
    serial_regs_write(&s, LCR, 0x03, &tx);
    assert_int_equal(serial_regs_read(&s, IER), 0x00); /* the real IER is untouched */
    serial_regs_write(&s, SCR, 0x5a, &tx);
    assert_int_equal(serial_regs_read(&s, SCR), 0x5a);
}

static void test_transmit_and_thre_interrupt(void **state)
{
    (void)state;
    struct serial_regs s;
    uint8_t tx = 0;
    serial_regs_reset(&s);
    serial_regs_write(&s, MCR, 0x08, &tx); /* OUT2 routes the IRQ */
    assert_true(serial_regs_write(&s, RBR, 'A', &tx));
    assert_int_equal(tx, 'A');
    assert_false(serial_regs_irq(&s)); /* THRE interrupt not enabled */
    serial_regs_write(&s, IER, 0x02, &tx);
    assert_true(serial_regs_irq(&s));
    assert_int_equal(serial_regs_read(&s, IIR), 0x02);
    /* Reading IIR while it reports THRE clears that interrupt. */
    assert_int_equal(serial_regs_read(&s, IIR), 0x01);
    assert_false(serial_regs_irq(&s));
    serial_regs_write(&s, RBR, 'B', &tx);
    assert_true(serial_regs_irq(&s));
}

static void test_receive_fifo_and_interrupts(void **state)
{
    (void)state;
    struct serial_regs s;
    uint8_t tx = 0;
    serial_regs_reset(&s);
    assert_int_equal(serial_regs_rx_room(&s), 1); /* 8250 mode: one byte */
    serial_regs_write(&s, FCR, 0x81, &tx);        /* FIFOs on, trigger at 8 */
    assert_int_equal(serial_regs_rx_room(&s), SERIAL_FIFO_SIZE);
    serial_regs_write(&s, IER, 0x01, &tx);
    serial_regs_write(&s, MCR, 0x08, &tx);
    serial_regs_rx_push(&s, 'x');
    serial_regs_rx_push(&s, 'y');
    assert_true(serial_regs_irq(&s));
    assert_int_equal(serial_regs_read(&s, IIR), 0xcc); /* below trigger: timeout */
    for (int i = 0; i < 6; i++) {
        serial_regs_rx_push(&s, (uint8_t)('0' + i));
    }
    assert_int_equal(serial_regs_read(&s, IIR), 0xc4); /* at trigger: data available */
    assert_int_equal(serial_regs_read(&s, LSR) & 1, 1);
    assert_int_equal(serial_regs_read(&s, RBR), 'x');
    assert_int_equal(serial_regs_read(&s, RBR), 'y');
    for (int i = 0; i < 6; i++) {
        assert_int_equal(serial_regs_read(&s, RBR), '0' + i);
    }
    assert_int_equal(serial_regs_read(&s, LSR) & 1, 0);
    assert_false(serial_regs_irq(&s));
    /* OUT2 gates the line even with data pending. */
    serial_regs_rx_push(&s, 'z');
    serial_regs_write(&s, MCR, 0x00, &tx);
    assert_false(serial_regs_irq(&s));
    /* FIFO clear. */
    serial_regs_write(&s, FCR, 0x83, &tx);
    assert_int_equal(serial_regs_read(&s, LSR) & 1, 0);
}

static void test_overrun_and_loopback(void **state)
{
    (void)state;
    struct serial_regs s;
    uint8_t tx = 0;
    serial_regs_reset(&s);
    serial_regs_rx_push(&s, 1);
    serial_regs_rx_push(&s, 2); /* no room in 8250 mode */
    assert_int_equal(serial_regs_read(&s, LSR) & 0x03, 0x03);
    assert_int_equal(serial_regs_read(&s, LSR) & 0x02, 0); /* OE clears on read */
    assert_int_equal(serial_regs_read(&s, RBR), 1);
    serial_regs_write(&s, MCR, 0x10 | 0x03, &tx); /* loopback, DTR, RTS */
    assert_false(serial_regs_write(&s, RBR, 'L', &tx));
    assert_int_equal(serial_regs_read(&s, RBR), 'L');
    assert_int_equal(serial_regs_read(&s, MSR) & 0x30, 0x30); /* CTS, DSR */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_reset_state),
            cmocka_unit_test(test_divisor_latch_and_scratch),
            cmocka_unit_test(test_transmit_and_thre_interrupt),
            cmocka_unit_test(test_receive_fifo_and_interrupts),
            cmocka_unit_test(test_overrun_and_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
