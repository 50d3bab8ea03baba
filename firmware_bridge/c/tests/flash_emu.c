/* Emulated NOR flash with power cuts (see flash_emu.h). */
#include "flash_emu.h"

#include <string.h>

void emu_init(flash_emu *emu, uint32_t size, uint32_t erase_size, uint32_t write_size)
{
    memset(emu, 0, sizeof *emu);
    emu->size = size > EMU_MAX_SIZE ? EMU_MAX_SIZE : size;
    emu->erase_size = erase_size;
    emu->write_size = write_size;
    emu->hi = emu->size;
    emu->cut_at = -1;
    memset(emu->mem, 0xFF, emu->size);
}

void emu_power_on(flash_emu *emu)
{
    emu->dead = 0;
    emu->cut_at = -1;
}

sw_flash emu_flash(flash_emu *emu, uint32_t base, uint32_t slot_size)
{
    sw_flash f;
    f.read = emu_read;
    f.write = emu_write;
    f.erase = emu_erase;
    f.ctx = emu;
    f.base = base;
    f.slot_size = slot_size;
    f.erase_size = emu->erase_size;
    f.write_size = emu->write_size;
    emu->lo = base;
    emu->hi = base + 2u * slot_size;
    return f;
}

int emu_read(void *ctx, uint32_t offset, uint8_t *dst, size_t len)
{
    flash_emu *emu = (flash_emu *)ctx;
    if (emu->dead || offset > emu->size || len > emu->size - offset) return -1;
    memcpy(dst, &emu->mem[offset], len);
    return 0;
}

/* 1 when this op is the one that loses power. */
static int cut_now(flash_emu *emu)
{
    int cut = emu->ops == emu->cut_at;
    emu->ops++;
    if (cut) emu->dead = 1;
    return cut;
}

static int unit_programmed(const flash_emu *emu, uint32_t offset)
{
    uint32_t i;
    for (i = 0; i < emu->write_size; ++i) {
        if (emu->mem[offset + i] != 0xFFu) return 1;
    }
    return 0;
}

int emu_write(void *ctx, uint32_t offset, const uint8_t *src, size_t len)
{
    flash_emu *emu = (flash_emu *)ctx;
    size_t i, n = len;
    uint32_t unit;
    if (emu->dead) return -1;
    if (offset < emu->lo || offset > emu->hi || len > emu->hi - offset ||
        offset % emu->write_size != 0u || len % emu->write_size != 0u) {
        emu->violations++;
        return -1;
    }
    if (emu->fail_next) {
        emu->fail_next = 0;
        return -1;
    }
    for (unit = offset; unit < offset + len; unit += emu->write_size) {
        if (unit_programmed(emu, unit)) emu->violations++;
    }
    emu->writes++;
    if (cut_now(emu)) n = emu->cut_bytes < len ? emu->cut_bytes : len;
    for (i = 0; i < n; ++i) emu->mem[offset + i] &= src[i];
    if (emu->dead && n < len) {
        emu->mem[offset + n] &= (uint8_t)(src[n] | 0xAAu); /* a byte half programmed */
        return -1;
    }
    return emu->dead ? -1 : 0;
}

int emu_erase(void *ctx, uint32_t offset)
{
    flash_emu *emu = (flash_emu *)ctx;
    size_t n = emu->erase_size;
    if (emu->dead) return -1;
    if (offset < emu->lo || offset >= emu->hi || offset % emu->erase_size != 0u) {
        emu->violations++;
        return -1;
    }
    if (emu->fail_next) {
        emu->fail_next = 0;
        return -1;
    }
    emu->erases++;
    if (cut_now(emu)) n = emu->cut_bytes < n ? emu->cut_bytes : n;
    memset(&emu->mem[offset], 0xFF, n);
    return emu->dead ? -1 : 0;
}
