/* Unit tests for command-line parsing (src/machine/cmdline.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "machine/cmdline.h"

#define ARGV(...)             ((char *[]){"snapvm", __VA_ARGS__, NULL})
#define ARGC(...)             ((int)(sizeof((char *[]){"snapvm", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(cfg, errp, ...) vm_config_parse(cfg, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), errp)

static void test_defaults(void **state)
{
    (void)state;
    struct vm_config cfg;
    vm_config_init(&cfg);
    char *argv[] = {"snapvm", NULL};
    assert_int_equal(vm_config_parse(&cfg, 1, argv, NULL), 0);
    assert_int_equal(cfg.ram_size, 128ULL << 20);
    assert_int_equal(cfg.smp, 1);
    assert_string_equal(cfg.serial, "stdio");
    assert_null(cfg.kernel);
    assert_false(cfg.start_paused);
    vm_config_free(&cfg);
}

static void test_sizes(void **state)
{
    (void)state;
    struct vm_config cfg;
    vm_config_init(&cfg);
    assert_int_equal(PARSE(&cfg, NULL, "-m", "512"), 0);
    assert_int_equal(cfg.ram_size, 512ULL << 20); /* bare number: MiB */
    assert_int_equal(PARSE(&cfg, NULL, "-m", "2G"), 0);
    assert_int_equal(cfg.ram_size, 2ULL << 30);
    assert_int_equal(PARSE(&cfg, NULL, "--m", "size=64M"), 0);
    assert_int_equal(cfg.ram_size, 64ULL << 20);
    assert_int_equal(PARSE(&cfg, NULL, "-smp", "4"), 0);
    assert_int_equal(cfg.smp, 4);
    assert_int_equal(PARSE(&cfg, NULL, "-smp", "cpus=2,cores=2"), 0);
    assert_int_equal(cfg.smp, 2);
    vm_config_free(&cfg);
}

static void test_repeatable_and_flags(void **state)
{
    (void)state;
    struct vm_config cfg;
    vm_config_init(&cfg);
    assert_int_equal(PARSE(&cfg, NULL, "-qmp", "unix:/a,server=on,wait=off", "-qmp",
                           "tcp:127.0.0.1:4444,server=on,wait=off", "-S", "-name", "vm1",
                           "-blockdev", "driver=file,node-name=f0,filename=/x", "-blockdev",
                           "{\"driver\": \"raw\", \"node-name\": \"d0\", \"file\": \"f0\"}",
                           "-device", "virtio-blk-pci,drive=d0,id=blk0", "-loadvm", "t1", "-append",
                           "tick_ms=5", "-serial", "null", "-nographic"),
                     0);
    assert_int_equal(json_array_size(cfg.qmp), 2);
    assert_string_equal(json_string_value(json_array_get(cfg.qmp, 1)),
                        "tcp:127.0.0.1:4444,server=on,wait=off");
    assert_true(cfg.start_paused);
    assert_string_equal(cfg.name, "vm1");
    assert_int_equal(json_array_size(cfg.blockdevs), 2);
    json_t *raw = json_array_get(cfg.blockdevs, 1);
    assert_string_equal(json_string_value(json_object_get(raw, "file")), "f0");
    json_t *dev = json_array_get(cfg.devices, 0);
    assert_string_equal(json_string_value(json_object_get(dev, "drive")), "d0");
    assert_string_equal(json_string_value(json_object_get(dev, "id")), "blk0");
    assert_string_equal(cfg.loadvm, "t1");
    assert_string_equal(cfg.append, "tick_ms=5");
    assert_string_equal(cfg.serial, "null");
    vm_config_free(&cfg);
}

static void expect_error(int argc, char **argv, const char *needle)
{
    struct vm_config cfg;
    struct error *err = NULL;
    vm_config_init(&cfg);
    assert_int_equal(vm_config_parse(&cfg, argc, argv, &err), -1);
    assert_non_null(err);
    if (!strstr(err->message, needle)) {
        fail_msg("message '%s' lacks '%s'", err->message, needle);
    }
    error_free(err);
    vm_config_free(&cfg);
}

#define EXPECT_ERROR(needle, ...) expect_error(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), needle)

static void test_errors(void **state)
{
    (void)state;
    EXPECT_ERROR("unknown option '-bogus'", "-bogus");
    EXPECT_ERROR("unexpected argument 'disk.img'", "disk.img");
    EXPECT_ERROR("option '-m' needs an argument", "-m");
    EXPECT_ERROR("-m: invalid size 'lots'", "-m", "lots");
    EXPECT_ERROR("out of range", "-m", "2");
    EXPECT_ERROR("out of range", "-m", "65G");
    EXPECT_ERROR("-smp", "-smp", "0");
    EXPECT_ERROR("unknown parameter 'dies'", "-smp", "2,dies=2");
    EXPECT_ERROR("-kernel: '/no/such/kernel'", "-kernel", "/no/such/kernel");
    EXPECT_ERROR("needs -kernel", "-initrd", "/dev/null");
    EXPECT_ERROR("unsupported device 'virtio-net-pci'", "-device", "virtio-net-pci");
    EXPECT_ERROR("missing drive=NODE", "-device", "virtio-blk-pci,id=x");
    EXPECT_ERROR("invalid JSON", "-blockdev", "{");
    EXPECT_ERROR("expected key=value", "-blockdev", "[1]");
    EXPECT_ERROR("unsupported back end 'tcp::4444'", "-serial", "tcp::4444");
    EXPECT_ERROR("only 'none'", "-display", "sdl");
    EXPECT_ERROR("-daemonize", "-daemonize", "-serial", "stdio");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_defaults),
            cmocka_unit_test(test_sizes),
            cmocka_unit_test(test_repeatable_and_flags),
            cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
