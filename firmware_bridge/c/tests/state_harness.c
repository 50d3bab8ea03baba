/*
 * state_harness: power-cut sweep and flash image dump for stepwise_state.
 *
 *   state_harness cuts ERASE_SIZE WRITE_SIZE STATE_LEN SAVES
 *     For every save k, every write/erase call of it and many partial lengths of
 *     that call, cuts power there, reboots, restores, and checks the state is
 *     byte-exactly save k-1 or save k (never garbage, never none after a save),
 *     then that the next save and restore work.
 *   state_harness dump ERASE_SIZE WRITE_SIZE STATE_LEN HASH_HEX OUT_FILE
 *     Saves states 1, 2 and 3, writes the flash image to OUT_FILE and prints
 *     "base <b> slot <s> size <n>".
 *
 * State k is byte j = (31 k + 7 j) mod 256.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../stepwise_state.h"
#include "check.h"
#include "flash_emu.h"

#define MAX_LEN 4096u
#define MAX_SAVES 8

typedef struct {
    uint32_t erase, write, len;
    uint32_t base, slot, size;
} geometry;

static flash_emu base_emu, emu;
static uint8_t states[MAX_SAVES + 2][MAX_LEN];
static uint8_t hash[SW_STATE_HASH_SIZE];

static void make_state(uint8_t *dst, int k, uint32_t len)
{
    uint32_t j;
    for (j = 0; j < len; ++j) dst[j] = (uint8_t)((31u * (uint32_t)k + 7u * j) & 0xFFu);
}

static int plan(geometry *g, uint32_t erase, uint32_t write, uint32_t len)
{
    uint32_t need = SW_STATE_SLOT_BYTES(len, write);
    g->erase = erase;
    g->write = write;
    g->len = len;
    g->slot = (need + erase - 1u) / erase * erase;
    g->base = erase; /* slots do not start at 0; a guard block follows them */
    g->size = g->base + 2u * g->slot + erase;
    return len > 0u && len <= MAX_LEN && g->size <= EMU_MAX_SIZE;
}

static sw_flash attach(flash_emu *e, const geometry *g)
{
    emu_init(e, g->size, g->erase, g->write);
    return emu_flash(e, g->base, g->slot);
}

/* Reboot on emu and restore: 0 none, 1 state k-1, 2 state k; -1 anything else. */
static int restored_as(const geometry *g, sw_flash flash, int k)
{
    static uint8_t buf[MAX_LEN];
    sw_state_store store;
    int rc;
    flash.ctx = &emu;
    memset(buf, 0x5A, g->len);
    if (sw_state_init(&store, &flash, hash, g->len, 0u) != SW_STATE_OK) return -1;
    rc = sw_state_restore(&store, buf);
    if (rc == SW_STATE_EMPTY) return k == 1 ? 0 : -1;
    if (rc != SW_STATE_RESTORED) return -1;
    if (k > 1 && memcmp(buf, states[k - 1], g->len) == 0) return 1;
    if (memcmp(buf, states[k], g->len) == 0) return 2;
    return -1;
}

/* One cut scenario on a copy of base_emu; updates outcome counts. */
static void cut_scenario(const geometry *g, const sw_state_store *session, int k, long op,
                         size_t bytes, int fresh, long outcomes[3])
{
    sw_state_store store = *session;
    sw_flash flash = session->flash;
    int seen;
    emu = base_emu;
    flash.ctx = &emu;
    store.flash.ctx = &emu;
    emu.cut_at = emu.ops + op;
    emu.cut_bytes = bytes;
    if (fresh) CHECK_EQ(sw_state_init(&store, &flash, hash, g->len, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, states[k], 1000u, 0u), SW_STATE_ERR_IO);
    CHECK(emu.dead);
    emu_power_on(&emu);
    seen = restored_as(g, flash, k);
    CHECK(seen >= 0);
    if (seen < 0) {
        fprintf(stderr, "save %d, op %ld, %zu bytes, fresh %d: restored garbage\n", k, op, bytes, fresh);
        return;
    }
    outcomes[seen]++;
    /* the next save after the reboot works, and is what comes back */
    CHECK_EQ(sw_state_init(&store, &flash, hash, g->len, 0u), SW_STATE_OK);
    CHECK_EQ(sw_state_save(&store, states[MAX_SAVES + 1], 2000u, 0u), SW_STATE_SAVED);
    CHECK_EQ(restored_as(g, flash, MAX_SAVES + 1), 2);
    CHECK_EQ(emu.violations, 0);
}

static long sweep_save(const geometry *g, sw_state_store *session, int k)
{
    long outcomes[3] = {0, 0, 0}, scenarios = 0, ops, op;
    size_t partials[70], n_partials = 0, p;
    for (p = 0; p <= SW_STATE_MAX_WRITE_SIZE + 1u; ++p) partials[n_partials++] = p;
    partials[n_partials++] = g->erase / 2u;
    partials[n_partials++] = g->erase - 1u;
    emu = base_emu;
    {
        sw_state_store probe = *session;
        probe.flash.ctx = &emu;
        CHECK_EQ(sw_state_save(&probe, states[k], 1000u, 0u), SW_STATE_SAVED);
    }
    ops = emu.ops - base_emu.ops;
    for (op = 0; op < ops; ++op) {
        for (p = 0; p < n_partials; ++p) {
            cut_scenario(g, session, k, op, partials[p], 0, outcomes);
            cut_scenario(g, session, k, op, partials[p], 1, outcomes);
            scenarios += 2;
        }
    }
    /* the sweep must have crossed the commit point: both outcomes occurred */
    CHECK(outcomes[2] > 0);
    CHECK(outcomes[k == 1 ? 0 : 1] > 0);
    printf("save %d: %ld flash calls, restored old %ld, new %ld\n", k, ops,
           outcomes[0] + outcomes[1], outcomes[2]);
    return scenarios;
}

static int run_cuts(uint32_t erase, uint32_t write, uint32_t len, int saves)
{
    geometry g;
    sw_state_store session;
    sw_flash flash;
    long scenarios = 0;
    int k;
    if (!plan(&g, erase, write, len) || saves < 1 || saves > MAX_SAVES) return 2;
    for (k = 0; k < MAX_SAVES + 2; ++k) make_state(states[k], k, len);
    memset(hash, 0xA5, sizeof hash);
    flash = attach(&base_emu, &g);
    CHECK_EQ(sw_state_init(&session, &flash, hash, len, 0u), SW_STATE_OK);
    for (k = 1; k <= saves; ++k) {
        scenarios += sweep_save(&g, &session, k);
        CHECK_EQ(sw_state_save(&session, states[k], 1000u, 0u), SW_STATE_SAVED);
    }
    CHECK_EQ(base_emu.violations, 0);
    printf("cuts: %ld scenarios\n", scenarios);
    return check_report("state_harness cuts");
}

static int parse_hash(const char *hex)
{
    size_t i;
    if (strlen(hex) != 2u * SW_STATE_HASH_SIZE) return 0;
    for (i = 0; i < SW_STATE_HASH_SIZE; ++i) {
        char byte[3] = {hex[2 * i], hex[2 * i + 1], 0};
        hash[i] = (uint8_t)strtoul(byte, NULL, 16);
    }
    return 1;
}

static int run_dump(uint32_t erase, uint32_t write, uint32_t len, const char *hex, const char *out)
{
    geometry g;
    sw_state_store store;
    sw_flash flash;
    FILE *file;
    int k;
    if (!plan(&g, erase, write, len) || !parse_hash(hex)) return 2;
    flash = attach(&base_emu, &g);
    CHECK_EQ(sw_state_init(&store, &flash, hash, len, 0u), SW_STATE_OK);
    for (k = 1; k <= 3; ++k) {
        make_state(states[k], k, len);
        CHECK_EQ(sw_state_save(&store, states[k], (uint32_t)k, 0u), SW_STATE_SAVED);
    }
    file = fopen(out, "wb");
    if (file == NULL || fwrite(base_emu.mem, 1, g.size, file) != g.size) return 2;
    fclose(file);
    printf("base %u slot %u size %u\n", (unsigned)g.base, (unsigned)g.slot, (unsigned)g.size);
    return check_report("state_harness dump");
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "cuts") == 0) {
        return run_cuts((uint32_t)atol(argv[2]), (uint32_t)atol(argv[3]), (uint32_t)atol(argv[4]),
                        atoi(argv[5]));
    }
    if (argc == 7 && strcmp(argv[1], "dump") == 0) {
        return run_dump((uint32_t)atol(argv[2]), (uint32_t)atol(argv[3]), (uint32_t)atol(argv[4]),
                        argv[5], argv[6]);
    }
    fprintf(stderr, "usage: state_harness cuts ERASE WRITE LEN SAVES | dump ERASE WRITE LEN HASH OUT\n");
    return 2;
}
