/* Unit tests for stepwise_state on the emulated flash: slots, wear rules, errors. */
#include <string.h>

#include "../stepwise_state.h"
#include "check.h"
#include "flash_emu.h"

#define LEN 100u
#define ERASE 256u
#define WRITE 8u
#define SLOT 512u /* two erase blocks: SW_STATE_SLOT_BYTES(100, 8) = 152 needs one */

static flash_emu emu;
static uint8_t hash_a[SW_STATE_HASH_SIZE], hash_b[SW_STATE_HASH_SIZE];

static void make_state(uint8_t *dst, int k)
{
    uint32_t j;
    for (j = 0; j < LEN; ++j) dst[j] = (uint8_t)(k * 13 + (int)j);
}

static sw_flash fresh_flash(void)
{
    emu_init(&emu, ERASE + 2u * SLOT, ERASE, WRITE);
    return emu_flash(&emu, ERASE, SLOT);
}

static int boot_restore(const sw_flash *flash, const uint8_t *hash, uint8_t *out)
{
    sw_state_store store;
    int rc = sw_state_init(&store, flash, hash, LEN, 0u);
    return rc == SW_STATE_OK ? sw_state_restore(&store, out) : rc;
}

static uint32_t slot_seq(int slot)
{
    const uint8_t *p = &emu.mem[ERASE + (uint32_t)slot * SLOT + WRITE];
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void test_crc32_matches_zlib(void)
{
    CHECK(sw_crc32_update(0u, (const uint8_t *)"123456789", 9) == 0xCBF43926ul);
    CHECK(sw_crc32_update(sw_crc32_update(0u, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5) ==
          0xCBF43926ul);
}

static void test_save_restore_alternates_slots(void)
{
    sw_flash flash = fresh_flash();
    sw_state_store store;
    uint8_t s1[LEN], s2[LEN], s3[LEN], out[LEN];
    make_state(s1, 1);
    make_state(s2, 2);
    make_state(s3, 3);
    memset(out, 0x77, LEN);
    CHECK_EQ(boot_restore(&flash, hash_a, out), SW_STATE_EMPTY);
    CHECK(out[0] == 0x77 && out[LEN - 1] == 0x77); /* untouched */
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, s1, 0u, 0u), SW_STATE_SAVED);
    CHECK_EQ(sw_state_save(&store, s2, 0u, 0u), SW_STATE_SAVED);
    CHECK(slot_seq(0) == 1u && slot_seq(1) == 2u);
    CHECK_EQ(boot_restore(&flash, hash_a, out), SW_STATE_RESTORED);
    CHECK(memcmp(out, s2, LEN) == 0);
    CHECK_EQ(sw_state_save(&store, s3, 0u, 0u), SW_STATE_SAVED);
    CHECK(slot_seq(0) == 3u && slot_seq(1) == 2u);
    CHECK_EQ(boot_restore(&flash, hash_a, out), SW_STATE_RESTORED);
    CHECK(memcmp(out, s3, LEN) == 0);
    CHECK_EQ(emu.erases, 3); /* one block per save: only the bytes in use are erased */
    CHECK_EQ(emu.violations, 0);
}

static void test_unchanged_state_is_not_written(void)
{
    sw_flash flash = fresh_flash();
    sw_state_store store;
    uint8_t s1[LEN];
    long ops;
    make_state(s1, 1);
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, s1, 0u, 0u), SW_STATE_SAVED);
    ops = emu.ops;
    CHECK_EQ(sw_state_save(&store, s1, 99999u, SW_STATE_FORCE), SW_STATE_UNCHANGED);
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN, 0u), SW_STATE_OK); /* after a reboot too */
    CHECK_EQ(sw_state_save(&store, s1, 0u, 0u), SW_STATE_UNCHANGED);
    CHECK_EQ(emu.ops, ops);
    s1[LEN - 1] ^= 1u;
    CHECK_EQ(sw_state_save(&store, s1, 0u, 0u), SW_STATE_SAVED);
}

static void test_min_interval_and_force(void)
{
    sw_flash flash = fresh_flash();
    sw_state_store store;
    uint8_t s[LEN];
    long ops;
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN, 1000u), SW_STATE_OK);
    make_state(s, 1);
    CHECK_EQ(sw_state_save(&store, s, 0xFFFFFF00ul, 0u), SW_STATE_SAVED); /* first save: allowed */
    make_state(s, 2);
    ops = emu.ops;
    CHECK_EQ(sw_state_save(&store, s, 0x00000100ul, 0u), SW_STATE_TOO_SOON); /* 512 ms, across wrap */
    CHECK_EQ(emu.ops, ops);
    CHECK_EQ(sw_state_save(&store, s, 0x00000100ul, SW_STATE_FORCE), SW_STATE_SAVED);
    make_state(s, 3);
    CHECK_EQ(sw_state_save(&store, s, 0x00000100ul + 999u, 0u), SW_STATE_TOO_SOON);
    CHECK_EQ(sw_state_save(&store, s, 0x00000100ul + 1000u, 0u), SW_STATE_SAVED);
}

static void test_other_model_and_length_are_not_restored(void)
{
    sw_flash flash = fresh_flash();
    sw_state_store store;
    uint8_t sa[LEN], sb[LEN], out[LEN];
    make_state(sa, 1);
    make_state(sb, 2);
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, sa, 0u, 0u), SW_STATE_SAVED);
    CHECK_EQ(boot_restore(&flash, hash_b, out), SW_STATE_EMPTY);
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN - 4u, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_restore(&store, out), SW_STATE_EMPTY); /* wrong shape */
    /* model B takes the empty slot first: model A's state survives */
    CHECK_EQ(sw_state_init(&store, &flash, hash_b, LEN, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, sb, 0u, 0u), SW_STATE_SAVED);
    CHECK_EQ(boot_restore(&flash, hash_a, out), SW_STATE_RESTORED);
    CHECK(memcmp(out, sa, LEN) == 0);
    CHECK_EQ(boot_restore(&flash, hash_b, out), SW_STATE_RESTORED);
    CHECK(memcmp(out, sb, LEN) == 0);
}

static void test_corrupt_newest_falls_back_to_older(void)
{
    sw_flash flash = fresh_flash();
    sw_state_store store;
    uint8_t s1[LEN], s2[LEN], out[LEN];
    make_state(s1, 1);
    make_state(s2, 2);
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, s1, 0u, 0u), SW_STATE_SAVED);
    CHECK_EQ(sw_state_save(&store, s2, 0u, 0u), SW_STATE_SAVED);
    emu.mem[ERASE + SLOT + WRITE + SW_STATE_META_SIZE + 10u] ^= 0x04u; /* bit rot in slot B */
    CHECK_EQ(boot_restore(&flash, hash_a, out), SW_STATE_RESTORED);
    CHECK(memcmp(out, s1, LEN) == 0);
    CHECK_EQ(sw_state_clear(&store), SW_STATE_OK);
    CHECK_EQ(boot_restore(&flash, hash_a, out), SW_STATE_EMPTY);
}

static void test_flash_errors_keep_the_old_state(void)
{
    sw_flash flash = fresh_flash();
    sw_state_store store;
    uint8_t s1[LEN], s2[LEN], out[LEN];
    make_state(s1, 1);
    make_state(s2, 2);
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, s1, 0u, 0u), SW_STATE_SAVED);
    emu.fail_next = 1;
    CHECK_EQ(sw_state_save(&store, s2, 0u, 0u), SW_STATE_ERR_IO);
    CHECK_EQ(boot_restore(&flash, hash_a, out), SW_STATE_RESTORED);
    CHECK(memcmp(out, s1, LEN) == 0);
    CHECK_EQ(sw_state_save(&store, s2, 0u, 0u), SW_STATE_SAVED); /* retried into the same slot */
    CHECK(slot_seq(1) == 2u);
}

static void test_bad_arguments_and_geometry(void)
{
    sw_flash flash = fresh_flash(), bad;
    sw_state_store store;
    uint8_t s[LEN];
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, SLOT, 0u), SW_STATE_ERR_SIZE);
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, 0u, 0u), SW_STATE_ERR_SIZE);
    bad = flash;
    bad.write_size = 3u;
    CHECK_EQ(sw_state_init(&store, &bad, hash_a, LEN, 0u), SW_STATE_ERR_ARG);
    bad = flash;
    bad.slot_size = SLOT + 1u;
    CHECK_EQ(sw_state_init(&store, &bad, hash_a, LEN, 0u), SW_STATE_ERR_ARG);
    bad = flash;
    bad.erase = NULL;
    CHECK_EQ(sw_state_init(&store, &bad, hash_a, LEN, 0u), SW_STATE_ERR_ARG);
    CHECK_EQ(sw_state_init(&store, &flash, hash_a, LEN, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, NULL, 0u, 0u), SW_STATE_ERR_ARG);
    CHECK_EQ(sw_state_restore(NULL, s), SW_STATE_ERR_ARG);
}

int main(void)
{
    memset(hash_a, 0x11, sizeof hash_a);
    memset(hash_b, 0x22, sizeof hash_b);
    test_crc32_matches_zlib();
    test_save_restore_alternates_slots();
    test_unchanged_state_is_not_written();
    test_min_interval_and_force();
    test_other_model_and_length_are_not_restored();
    test_corrupt_newest_falls_back_to_older();
    test_flash_errors_keep_the_old_state();
    test_bad_arguments_and_geometry();
    return check_report("test_state");
}
