/*
 * stepwise_frame: the device side of the stepwise "cobs" serial protocol
 * (docs/PROTOCOL.md). Portable C99, no malloc, no global mutable state.
 *
 * Frame on the wire: COBS(type u8 | seq u16 LE | payload | crc16 u16 LE) 0x00.
 *
 * Sending (device -> host): sw_encode_hello / sw_encode_sample / sw_encode_reset
 * write one complete frame, delimiter included, into a caller's buffer and advance
 * the caller's sequence counter. They return the number of bytes written, or a
 * negative SW_ERR_* code (nothing is sent, the counter is unchanged).
 *
 * Receiving (host -> device): sw_decoder_feed takes one byte at a time (e.g. from a
 * UART receive interrupt) and returns SW_NEED_MORE, SW_FRAME_READY or a negative
 * SW_ERR_* code. After an error it resynchronises at the next 0x00.
 */
#ifndef STEPWISE_FRAME_H
#define STEPWISE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SW_PROTOCOL_VERSION 1u

#define SW_FRAME_HELLO 0x01u
#define SW_FRAME_SAMPLE 0x02u
#define SW_FRAME_RESET 0x03u
#define SW_FRAME_PREDICTION 0x04u

#define SW_MIN_BODY 5u         /* type + seq + crc */
#define SW_MAX_BODY 256u       /* decoded body cap */
#define SW_MAX_ENCODED 259u    /* encoded frame cap, delimiter excluded */
#define SW_MAX_FEATURES 62u    /* SAMPLE values that fit in SW_MAX_BODY */
#define SW_MAX_OUTPUTS 62u     /* PREDICTION outputs that fit in SW_MAX_BODY */

/* Bytes a sender's buffer needs for any frame (encoded frame + delimiter). */
#define SW_FRAME_BUFFER_SIZE (SW_MAX_ENCODED + 1u)
/* Bytes a sender's buffer needs for a SAMPLE of n <= SW_MAX_FEATURES features:
 * body (5 + 4n <= 253 bytes) + 1 COBS code byte + 1 delimiter. */
#define SW_SAMPLE_FRAME_SIZE(n) (SW_MIN_BODY + 4u * (n) + 2u)

/* Largest decoded body the receiver keeps. A device expecting few outputs may
 * define a smaller value (7 + 4 x outputs: 11 for one output) to save RAM; longer frames are
 * then rejected as SW_ERR_TOO_LONG. */
#ifndef SW_DECODER_BODY_SIZE
#define SW_DECODER_BODY_SIZE SW_MAX_BODY
#endif

enum {
    SW_NEED_MORE = 0,       /* decoder: byte consumed, no frame yet */
    SW_FRAME_READY = 1,     /* decoder: a checked PREDICTION is ready */
    SW_ERR_BUFFER = -1,     /* encoder: output buffer too small */
    SW_ERR_FEATURES = -2,   /* encoder: zero or more than SW_MAX_FEATURES values */
    SW_ERR_COBS = -3,       /* decoder: bad COBS encoding */
    SW_ERR_CRC = -4,        /* decoder: CRC mismatch */
    SW_ERR_SHORT = -5,      /* decoder: body under SW_MIN_BODY bytes */
    SW_ERR_TYPE = -6,       /* decoder: not a PREDICTION frame */
    SW_ERR_LENGTH = -7,     /* decoder: payload size wrong for n_outputs */
    SW_ERR_NON_FINITE = -8, /* decoder: an output is NaN or infinite */
    SW_ERR_TOO_LONG = -9,   /* decoder: frame over the caps, dropped up to the next 0x00 */
    SW_ERR_ARG = -10        /* a required pointer is NULL */
};

/* The protocol's reason string for a status ("cobs", "crc", ...; "ok" for >= 0). */
const char *sw_status_name(int status);

/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF). Start with crc = 0xFFFF. */
uint16_t sw_crc16_update(uint16_t crc, const uint8_t *data, size_t len);
uint16_t sw_crc16(const uint8_t *data, size_t len);

/* COBS-encode len bytes into dst (no delimiter); bytes written or SW_ERR_BUFFER. */
int sw_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap);

/* Any frame, delimiter included; the encoders below are shorthands for it. */
int sw_encode_frame(uint8_t *buf, size_t cap, uint8_t type, uint16_t seq,
                    const uint8_t *payload, size_t len);

/* Device -> host frames. Each uses *seq, then increments it (wrapping at 65536). */
int sw_encode_hello(uint8_t *buf, size_t cap, uint16_t *seq, uint8_t feature_count);
int sw_encode_sample(uint8_t *buf, size_t cap, uint16_t *seq,
                     const float *values, size_t count);
int sw_encode_reset(uint8_t *buf, size_t cap, uint16_t *seq);

/* float32 <-> 4 little-endian bytes, whatever the host's byte order. */
void sw_put_f32le(uint8_t *dst, float value);
float sw_get_f32le(const uint8_t *src);

/* Receiver state: caller-owned, one per serial link. */
typedef struct {
    uint8_t body[SW_DECODER_BODY_SIZE];
    uint16_t body_len;   /* decoded bytes so far */
    uint16_t encoded;    /* encoded bytes so far (delimiter excluded) */
    uint8_t code;        /* current COBS block code */
    uint8_t remaining;   /* data bytes left in the current block */
    uint8_t discarding;  /* dropping bytes up to the next 0x00 */
} sw_decoder;

/* A decoded PREDICTION. raw_outputs points into the decoder and stays valid only
 * until the next sw_decoder_feed call: read what you need before feeding more. */
typedef struct {
    uint16_t seq;
    uint8_t class_index;
    uint8_t n_outputs;
    const uint8_t *raw_outputs; /* n_outputs x float32 LE */
} sw_prediction;

void sw_decoder_init(sw_decoder *dec);
int sw_decoder_feed(sw_decoder *dec, uint8_t byte, sw_prediction *out);
float sw_prediction_output(const sw_prediction *prediction, uint8_t index);

#ifdef __cplusplus
}
#endif

#endif /* STEPWISE_FRAME_H */
