/*
 * stepwise_state: crash-safe persistence of the model's state buffers in NOR-like
 * flash (or EEPROM) through caller-supplied read/write/erase functions.
 * Portable C99, no malloc, no global mutable state.
 *
 * Two slots, A at flash.base and B at flash.base + flash.slot_size. Slot layout
 * (all integers little-endian), D = max(8, write_size):
 *
 *   0       u32  magic "SWST" (bytes 53 57 53 54), written LAST: it commits the slot
 *   4       u16  format version (1)
 *   6       u16  reserved (0)
 *   8..D         0xFF padding
 *   D+0     u32  sequence number (the newest valid slot has the highest)
 *   D+4     32B  model hash (the manifest's sha256 as 32 bytes)
 *   D+36    u32  payload length
 *   D+40    u32  CRC-32 (IEEE, = zlib.crc32) over bytes 0..7, D+0..D+39, then the payload
 *   D+44    payload (the state buffers)
 *
 * Save erases and writes the slot that does not hold the newest state, magic
 * last, so a power cut at any point leaves the previous state restorable. Restore
 * picks the valid slot (magic, version, CRC) with this model's hash and state length
 * and the highest sequence number. Saves that would rewrite identical bytes, or come
 * sooner than min_interval_ms after the previous save, write nothing.
 */
#ifndef STEPWISE_STATE_H
#define STEPWISE_STATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SW_STATE_MAGIC 0x54535753ul /* "SWST" little-endian */
#define SW_STATE_FORMAT_VERSION 1u
#define SW_STATE_HASH_SIZE 32u
#define SW_STATE_META_SIZE 44u
/* Largest program unit supported; writes are issued in chunks of this size. */
#define SW_STATE_MAX_WRITE_SIZE 64u

/* Bytes a slot needs for a state of n bytes with this program unit. */
#define SW_STATE_SLOT_BYTES(n, write_size) \
    (((write_size) > 8u ? (write_size) : 8u) + SW_STATE_META_SIZE + (n))

enum {
    SW_STATE_OK = 0,
    SW_STATE_EMPTY = 0,      /* restore: nothing valid for this model; start fresh */
    SW_STATE_RESTORED = 1,   /* restore: state copied from flash */
    SW_STATE_SAVED = 1,      /* save: state written and verified */
    SW_STATE_UNCHANGED = 2,  /* save: identical to the newest saved state, nothing written */
    SW_STATE_TOO_SOON = 3,   /* save: within min_interval_ms of the last save, nothing written */
    SW_STATE_ERR_ARG = -1,   /* NULL pointer or invalid flash geometry */
    SW_STATE_ERR_SIZE = -2,  /* state does not fit in a slot */
    SW_STATE_ERR_IO = -3,    /* a flash function reported failure */
    SW_STATE_ERR_VERIFY = -4 /* read-back after save did not validate */
};

/* Save flag: ignore min_interval_ms (e.g. on a power-fail warning or shutdown). */
#define SW_STATE_FORCE 1u

/* The flash interface. Each function returns 0 on success, non-zero on failure.
 * write: NOR semantics are assumed (programming only clears bits); offset and len
 *        are multiples of write_size.
 * erase: erases the erase_size block starting at offset (sets it to 0xFF). */
typedef struct {
    int (*read)(void *ctx, uint32_t offset, uint8_t *dst, size_t len);
    int (*write)(void *ctx, uint32_t offset, const uint8_t *src, size_t len);
    int (*erase)(void *ctx, uint32_t offset);
    void *ctx;
    uint32_t base;       /* slot A; a multiple of erase_size */
    uint32_t slot_size;  /* bytes per slot; a multiple of erase_size */
    uint32_t erase_size; /* erase block size */
    uint32_t write_size; /* program unit: a power of two <= SW_STATE_MAX_WRITE_SIZE */
} sw_flash;

/* What the store knows about one slot (filled by sw_state_init, kept up to date). */
typedef struct {
    uint8_t ours;        /* valid, this model's hash and state length */
    uint8_t valid;       /* magic, version and CRC check out (any model) */
    uint32_t seq;
    uint32_t payload_crc;
} sw_state_slot;

typedef struct {
    sw_flash flash;
    uint8_t model_hash[SW_STATE_HASH_SIZE];
    uint32_t state_len;
    uint32_t min_interval_ms;
    uint32_t last_save_ms;
    uint8_t saved_since_init;
    sw_state_slot slots[2];
} sw_state_store;

/* CRC-32 (IEEE 802.3, reflected, = zlib.crc32). Start with crc = 0. */
uint32_t sw_crc32_update(uint32_t crc, const uint8_t *data, size_t len);

/* Checks the geometry and scans both slots. Returns SW_STATE_OK or an error. */
int sw_state_init(sw_state_store *store, const sw_flash *flash,
                  const uint8_t model_hash[SW_STATE_HASH_SIZE], uint32_t state_len,
                  uint32_t min_interval_ms);

/* Copies the newest valid state of this model into state[state_len].
 * Returns SW_STATE_RESTORED, SW_STATE_EMPTY (state untouched) or an error. */
int sw_state_restore(sw_state_store *store, uint8_t *state);

/* Saves state[state_len] unless unchanged or too soon (see the return codes).
 * now_ms: the caller's millisecond clock (wrap-around is handled). */
int sw_state_save(sw_state_store *store, const uint8_t *state, uint32_t now_ms, unsigned flags);

/* Invalidates both slots (erases their first block). */
int sw_state_clear(sw_state_store *store);

#ifdef __cplusplus
}
#endif

#endif /* STEPWISE_STATE_H */
