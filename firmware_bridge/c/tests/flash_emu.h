/* An emulated NOR flash for the state tests: erase sets 0xFF, programming can only
 * clear bits, and power can be cut at any write/erase call, part-way through it. */
#ifndef STEPWISE_FLASH_EMU_H
#define STEPWISE_FLASH_EMU_H

#include <stddef.h>
#include <stdint.h>

#include "../stepwise_state.h"

#define EMU_MAX_SIZE 65536u

typedef struct {
    uint8_t mem[EMU_MAX_SIZE];
    uint32_t size;
    uint32_t erase_size;
    uint32_t write_size;
    uint32_t lo, hi;      /* writes and erases must stay inside [lo, hi) */
    long ops;             /* write + erase calls so far */
    long writes, erases;
    long cut_at;          /* op index where power fails (-1: never) */
    size_t cut_bytes;     /* bytes of that op that take effect */
    int dead;             /* power is off: every call fails until emu_power_on */
    int fail_next;        /* make the next write/erase report failure (no power cut) */
    long violations;      /* misaligned, out of range, or a unit programmed twice */
} flash_emu;

void emu_init(flash_emu *emu, uint32_t size, uint32_t erase_size, uint32_t write_size);
void emu_power_on(flash_emu *emu); /* after a cut: a reboot */
sw_flash emu_flash(flash_emu *emu, uint32_t base, uint32_t slot_size);

int emu_read(void *ctx, uint32_t offset, uint8_t *dst, size_t len);
int emu_write(void *ctx, uint32_t offset, const uint8_t *src, size_t len);
int emu_erase(void *ctx, uint32_t offset);

#endif
