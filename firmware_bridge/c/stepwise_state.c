/* stepwise_state: A/B slot persistence of the model state (layout in the header). */
#include "stepwise_state.h"

#include <string.h>

#define COMMIT_SIZE 8u
#define CHUNK SW_STATE_MAX_WRITE_SIZE
#define NO_SLOT (-1)

uint32_t sw_crc32_update(uint32_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int bit;
    crc = ~crc;
    for (i = 0; i < len; ++i) {
        crc ^= data[i];
        for (bit = 0; bit < 8; ++bit) {
            crc = (crc >> 1) ^ (0xEDB88320ul & (0ul - (crc & 1ul)));
        }
    }
    return ~crc;
}

static void put_u32(uint8_t *dst, uint32_t v)
{
    dst[0] = (uint8_t)(v & 0xFFu);
    dst[1] = (uint8_t)((v >> 8) & 0xFFu);
    dst[2] = (uint8_t)((v >> 16) & 0xFFu);
    dst[3] = (uint8_t)((v >> 24) & 0xFFu);
}

static uint32_t get_u32(const uint8_t *src)
{
    return (uint32_t)src[0] | ((uint32_t)src[1] << 8) | ((uint32_t)src[2] << 16) |
           ((uint32_t)src[3] << 24);
}

static uint32_t data_offset(const sw_flash *f)
{
    return f->write_size > COMMIT_SIZE ? f->write_size : COMMIT_SIZE;
}

static uint32_t slot_offset(const sw_state_store *s, int slot)
{
    return s->flash.base + (uint32_t)slot * s->flash.slot_size;
}

static uint32_t payload_offset(const sw_state_store *s, int slot)
{
    return slot_offset(s, slot) + data_offset(&s->flash) + SW_STATE_META_SIZE;
}

static void commit_record(uint8_t *rec)
{
    put_u32(rec, SW_STATE_MAGIC);
    rec[4] = (uint8_t)SW_STATE_FORMAT_VERSION;
    rec[5] = 0u;
    rec[6] = 0u;
    rec[7] = 0u;
}

/* ------------------------------------------------------------------ scanning */

/* Continues two CRC-32s over len flash bytes at offset. */
static int crc_flash(const sw_state_store *s, uint32_t offset, uint32_t len, uint32_t *crc_a,
                     uint32_t *crc_b)
{
    uint8_t buf[CHUNK];
    while (len > 0u) {
        size_t n = len < CHUNK ? (size_t)len : CHUNK;
        if (s->flash.read(s->flash.ctx, offset, buf, n) != 0) return SW_STATE_ERR_IO;
        *crc_a = sw_crc32_update(*crc_a, buf, n);
        *crc_b = sw_crc32_update(*crc_b, buf, n);
        offset += (uint32_t)n;
        len -= (uint32_t)n;
    }
    return SW_STATE_OK;
}

static int scan_slot(sw_state_store *s, int slot)
{
    uint8_t rec[COMMIT_SIZE], expected[COMMIT_SIZE], meta[SW_STATE_META_SIZE];
    sw_state_slot *info = &s->slots[slot];
    uint32_t base = slot_offset(s, slot), room, len, crc, payload_crc = 0u;
    memset(info, 0, sizeof *info);
    commit_record(expected);
    if (s->flash.read(s->flash.ctx, base, rec, sizeof rec) != 0) return SW_STATE_ERR_IO;
    if (memcmp(rec, expected, sizeof rec) != 0) return SW_STATE_OK;
    if (s->flash.read(s->flash.ctx, base + data_offset(&s->flash), meta, sizeof meta) != 0) {
        return SW_STATE_ERR_IO;
    }
    len = get_u32(&meta[36]);
    room = s->flash.slot_size - data_offset(&s->flash) - SW_STATE_META_SIZE;
    if (len > room) return SW_STATE_OK;
    crc = sw_crc32_update(sw_crc32_update(0u, rec, sizeof rec), meta, 40u);
    if (crc_flash(s, payload_offset(s, slot), len, &crc, &payload_crc) != SW_STATE_OK) {
        return SW_STATE_ERR_IO;
    }
    if (crc != get_u32(&meta[40])) return SW_STATE_OK;
    info->valid = 1u;
    info->seq = get_u32(&meta[0]);
    info->payload_crc = payload_crc;
    info->ours = (uint8_t)(len == s->state_len &&
                           memcmp(&meta[4], s->model_hash, SW_STATE_HASH_SIZE) == 0);
    return SW_STATE_OK;
}

static int newest_slot(const sw_state_store *s)
{
    if (s->slots[0].ours && s->slots[1].ours) return s->slots[1].seq > s->slots[0].seq ? 1 : 0;
    if (s->slots[0].ours) return 0;
    if (s->slots[1].ours) return 1;
    return NO_SLOT;
}

/* The slot to overwrite: never the newest of ours; prefer an invalid slot to
 * another model's. */
static int target_slot(const sw_state_store *s)
{
    int newest = newest_slot(s);
    if (newest != NO_SLOT) return 1 - newest;
    if (!s->slots[0].valid) return 0;
    if (!s->slots[1].valid) return 1;
    return 0;
}

static int geometry_ok(const sw_flash *f)
{
    uint32_t w = f->write_size;
    if (f->read == NULL || f->write == NULL || f->erase == NULL) return 0;
    if (w == 0u || (w & (w - 1u)) != 0u || w > SW_STATE_MAX_WRITE_SIZE) return 0;
    if (f->erase_size == 0u || f->erase_size % w != 0u) return 0;
    return f->slot_size > 0u && f->slot_size % f->erase_size == 0u && f->base % f->erase_size == 0u;
}

int sw_state_init(sw_state_store *store, const sw_flash *flash,
                  const uint8_t model_hash[SW_STATE_HASH_SIZE], uint32_t state_len,
                  uint32_t min_interval_ms)
{
    int status;
    if (store == NULL || flash == NULL || model_hash == NULL || !geometry_ok(flash)) {
        return SW_STATE_ERR_ARG;
    }
    memset(store, 0, sizeof *store);
    store->flash = *flash;
    memcpy(store->model_hash, model_hash, SW_STATE_HASH_SIZE);
    store->state_len = state_len;
    store->min_interval_ms = min_interval_ms;
    if (state_len == 0u || SW_STATE_SLOT_BYTES(state_len, flash->write_size) > flash->slot_size) {
        return SW_STATE_ERR_SIZE;
    }
    status = scan_slot(store, 0);
    if (status == SW_STATE_OK) status = scan_slot(store, 1);
    return status;
}

int sw_state_restore(sw_state_store *store, uint8_t *state)
{
    int attempt;
    if (store == NULL || state == NULL) return SW_STATE_ERR_ARG;
    for (attempt = 0; attempt < 2; ++attempt) {
        int slot = newest_slot(store);
        if (slot == NO_SLOT) return SW_STATE_EMPTY;
        if (store->flash.read(store->flash.ctx, payload_offset(store, slot), state, store->state_len) != 0) {
            return SW_STATE_ERR_IO;
        }
        if (sw_crc32_update(0u, state, store->state_len) == store->slots[slot].payload_crc) {
            return SW_STATE_RESTORED;
        }
        memset(&store->slots[slot], 0, sizeof store->slots[slot]); /* changed since the scan */
    }
    return SW_STATE_EMPTY;
}

/* ------------------------------------------------------------------ saving */

typedef struct {
    const sw_flash *flash;
    uint32_t offset;
    uint8_t buf[CHUNK];
    size_t fill;
    int status;
} chunk_writer;

static void writer_flush(chunk_writer *w)
{
    size_t padded;
    if (w->fill == 0u || w->status != SW_STATE_OK) return;
    padded = (w->fill + w->flash->write_size - 1u) / w->flash->write_size * w->flash->write_size;
    memset(&w->buf[w->fill], 0xFF, padded - w->fill);
    if (w->flash->write(w->flash->ctx, w->offset, w->buf, padded) != 0) w->status = SW_STATE_ERR_IO;
    w->offset += (uint32_t)padded;
    w->fill = 0u;
}

static void writer_put(chunk_writer *w, const uint8_t *data, size_t len)
{
    while (len > 0u && w->status == SW_STATE_OK) {
        size_t n = CHUNK - w->fill < len ? CHUNK - w->fill : len;
        memcpy(&w->buf[w->fill], data, n);
        w->fill += n;
        data += n;
        len -= n;
        if (w->fill == CHUNK) writer_flush(w);
    }
}

static int erase_slot(const sw_state_store *s, int slot)
{
    uint32_t used = SW_STATE_SLOT_BYTES(s->state_len, s->flash.write_size), done;
    for (done = 0u; done < used; done += s->flash.erase_size) {
        if (s->flash.erase(s->flash.ctx, slot_offset(s, slot) + done) != 0) return SW_STATE_ERR_IO;
    }
    return SW_STATE_OK;
}

/* Erase, then metadata and payload, then the commit record. */
static int write_slot(const sw_state_store *s, int slot, const uint8_t *state, uint32_t seq)
{
    uint8_t rec[COMMIT_SIZE], meta[SW_STATE_META_SIZE];
    chunk_writer w;
    uint32_t crc;
    commit_record(rec);
    put_u32(&meta[0], seq);
    memcpy(&meta[4], s->model_hash, SW_STATE_HASH_SIZE);
    put_u32(&meta[36], s->state_len);
    crc = sw_crc32_update(sw_crc32_update(0u, rec, sizeof rec), meta, 40u);
    put_u32(&meta[40], sw_crc32_update(crc, state, s->state_len));
    if (erase_slot(s, slot) != SW_STATE_OK) return SW_STATE_ERR_IO;
    memset(&w, 0, sizeof w);
    w.flash = &s->flash;
    w.offset = slot_offset(s, slot) + data_offset(&s->flash);
    writer_put(&w, meta, sizeof meta);
    writer_put(&w, state, s->state_len);
    writer_flush(&w);
    if (w.status != SW_STATE_OK) return w.status;
    w.offset = slot_offset(s, slot);
    writer_put(&w, rec, sizeof rec);
    writer_flush(&w);
    return w.status;
}

/* 1 when the newest saved state is byte-for-byte state; 0 otherwise; < 0 on error. */
static int same_as_newest(const sw_state_store *s, const uint8_t *state)
{
    uint8_t buf[CHUNK];
    uint32_t done = 0u;
    int slot = newest_slot(s);
    if (slot == NO_SLOT || sw_crc32_update(0u, state, s->state_len) != s->slots[slot].payload_crc) {
        return 0;
    }
    while (done < s->state_len) {
        size_t n = s->state_len - done < CHUNK ? (size_t)(s->state_len - done) : CHUNK;
        if (s->flash.read(s->flash.ctx, payload_offset(s, slot) + done, buf, n) != 0) return SW_STATE_ERR_IO;
        if (memcmp(buf, &state[done], n) != 0) return 0;
        done += (uint32_t)n;
    }
    return 1;
}

int sw_state_save(sw_state_store *store, const uint8_t *state, uint32_t now_ms, unsigned flags)
{
    int same, newest, target, status;
    uint32_t seq;
    if (store == NULL || state == NULL) return SW_STATE_ERR_ARG;
    same = same_as_newest(store, state);
    if (same < 0) return same;
    if (same) return SW_STATE_UNCHANGED;
    if (store->saved_since_init && !(flags & SW_STATE_FORCE) &&
        (uint32_t)(now_ms - store->last_save_ms) < store->min_interval_ms) {
        return SW_STATE_TOO_SOON;
    }
    newest = newest_slot(store);
    target = target_slot(store);
    seq = newest == NO_SLOT ? 1u : store->slots[newest].seq + 1u;
    memset(&store->slots[target], 0, sizeof store->slots[target]);
    status = write_slot(store, target, state, seq);
    if (status != SW_STATE_OK) return status;
    status = scan_slot(store, target);
    if (status != SW_STATE_OK) return status;
    if (!store->slots[target].ours || store->slots[target].seq != seq) return SW_STATE_ERR_VERIFY;
    store->last_save_ms = now_ms;
    store->saved_since_init = 1u;
    return SW_STATE_SAVED;
}

int sw_state_clear(sw_state_store *store)
{
    int slot;
    if (store == NULL) return SW_STATE_ERR_ARG;
    for (slot = 0; slot < 2; ++slot) {
        memset(&store->slots[slot], 0, sizeof store->slots[slot]);
        if (store->flash.erase(store->flash.ctx, slot_offset(store, slot)) != 0) return SW_STATE_ERR_IO;
    }
    store->saved_since_init = 0u;
    return SW_STATE_OK;
}
