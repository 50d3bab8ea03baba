/* stepwise_frame: COBS framing of HELLO/SAMPLE/RESET, decoding of PREDICTION. */
#include "stepwise_frame.h"

#include <string.h>

/* The wire format carries IEEE-754 binary32; refuse to build where float differs. */
typedef char sw_float_is_32_bits[(sizeof(float) == 4u) ? 1 : -1];

const char *sw_status_name(int status)
{
    switch (status) {
    case SW_ERR_BUFFER: return "buffer";
    case SW_ERR_FEATURES: return "features";
    case SW_ERR_COBS: return "cobs";
    case SW_ERR_CRC: return "crc";
    case SW_ERR_SHORT: return "short";
    case SW_ERR_TYPE: return "unknown_type";
    case SW_ERR_LENGTH: return "length";
    case SW_ERR_NON_FINITE: return "non_finite";
    case SW_ERR_TOO_LONG: return "frame_too_long";
    case SW_ERR_ARG: return "argument";
    default: return status >= 0 ? "ok" : "unknown";
    }
}

uint16_t sw_crc16_update(uint16_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int bit;
    for (i = 0; i < len; ++i) {
        crc = (uint16_t)(crc ^ (uint16_t)((uint16_t)data[i] << 8));
        for (bit = 0; bit < 8; ++bit) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

uint16_t sw_crc16(const uint8_t *data, size_t len)
{
    return sw_crc16_update(0xFFFFu, data, len);
}

void sw_put_f32le(uint8_t *dst, float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    dst[0] = (uint8_t)(bits & 0xFFu);
    dst[1] = (uint8_t)((bits >> 8) & 0xFFu);
    dst[2] = (uint8_t)((bits >> 16) & 0xFFu);
    dst[3] = (uint8_t)((bits >> 24) & 0xFFu);
}

static uint32_t get_u32le(const uint8_t *src)
{
    return (uint32_t)src[0] | ((uint32_t)src[1] << 8) | ((uint32_t)src[2] << 16) |
           ((uint32_t)src[3] << 24);
}

float sw_get_f32le(const uint8_t *src)
{
    uint32_t bits = get_u32le(src);
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* ------------------------------------------------------------------ COBS writer */

/* Streams bytes into dst as COBS without an intermediate body buffer. Same output
 * as the reference encoder: a full 254-byte block that ends the data is not
 * followed by an empty block. */
typedef struct {
    uint8_t *dst;
    size_t cap;
    size_t pos;
    size_t code_pos;
    uint8_t code;
    uint8_t open;
    uint8_t overflow;
    uint16_t crc;
} cobs_writer;

static void writer_open_block(cobs_writer *w)
{
    if (w->pos >= w->cap) {
        w->overflow = 1u;
        return;
    }
    w->code_pos = w->pos++;
    w->code = 1u;
    w->open = 1u;
}

static void writer_close_block(cobs_writer *w)
{
    w->dst[w->code_pos] = w->code;
    w->open = 0u;
}

static void writer_put(cobs_writer *w, uint8_t byte)
{
    if (w->overflow) return;
    if (!w->open) writer_open_block(w);
    if (w->overflow) return;
    if (byte == 0u) {
        writer_close_block(w);
        writer_open_block(w);
        return;
    }
    if (w->pos >= w->cap) {
        w->overflow = 1u;
        return;
    }
    w->dst[w->pos++] = byte;
    if (++w->code == 0xFFu) writer_close_block(w);
}

static void writer_start(cobs_writer *w, uint8_t *dst, size_t cap)
{
    w->dst = dst;
    w->cap = cap;
    w->pos = 0u;
    w->code_pos = 0u;
    w->code = 1u;
    w->open = 0u;
    w->overflow = 0u;
    w->crc = 0xFFFFu;
    writer_open_block(w);
}

static int writer_finish(cobs_writer *w)
{
    if (!w->overflow && w->open) writer_close_block(w);
    return w->overflow ? SW_ERR_BUFFER : (int)w->pos;
}

/* Body bytes (type..payload) go through the CRC as well as the encoder. */
static void writer_body(cobs_writer *w, const uint8_t *data, size_t len)
{
    size_t i;
    w->crc = sw_crc16_update(w->crc, data, len);
    for (i = 0; i < len; ++i) writer_put(w, data[i]);
}

int sw_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap)
{
    cobs_writer w;
    size_t i;
    if ((src == NULL && len > 0u) || dst == NULL) return SW_ERR_ARG;
    writer_start(&w, dst, cap);
    for (i = 0; i < len; ++i) writer_put(&w, src[i]);
    return writer_finish(&w);
}

/* ------------------------------------------------------------------ encoders */

static int finish_frame(cobs_writer *w)
{
    uint8_t crc[2];
    int written;
    crc[0] = (uint8_t)(w->crc & 0xFFu);
    crc[1] = (uint8_t)(w->crc >> 8);
    writer_put(w, crc[0]);
    writer_put(w, crc[1]);
    written = writer_finish(w);
    if (written < 0) return written;
    if ((size_t)written >= w->cap) return SW_ERR_BUFFER;
    w->dst[written] = 0u;
    return written + 1;
}

static void start_frame(cobs_writer *w, uint8_t *buf, size_t cap, uint8_t type, uint16_t seq)
{
    uint8_t head[3];
    head[0] = type;
    head[1] = (uint8_t)(seq & 0xFFu);
    head[2] = (uint8_t)(seq >> 8);
    writer_start(w, buf, cap);
    writer_body(w, head, sizeof head);
}

int sw_encode_frame(uint8_t *buf, size_t cap, uint8_t type, uint16_t seq,
                    const uint8_t *payload, size_t len)
{
    cobs_writer w;
    if (buf == NULL || (payload == NULL && len > 0u)) return SW_ERR_ARG;
    if (len > SW_MAX_BODY - SW_MIN_BODY) return SW_ERR_LENGTH;
    start_frame(&w, buf, cap, type, seq);
    writer_body(&w, payload, len);
    return finish_frame(&w);
}

static int advance(int written, uint16_t *seq)
{
    if (written > 0) *seq = (uint16_t)(*seq + 1u);
    return written;
}

int sw_encode_hello(uint8_t *buf, size_t cap, uint16_t *seq, uint8_t feature_count)
{
    uint8_t payload[2];
    if (seq == NULL) return SW_ERR_ARG;
    if (feature_count == 0u || feature_count > SW_MAX_FEATURES) return SW_ERR_FEATURES;
    payload[0] = (uint8_t)SW_PROTOCOL_VERSION;
    payload[1] = feature_count;
    return advance(sw_encode_frame(buf, cap, SW_FRAME_HELLO, *seq, payload, 2u), seq);
}

int sw_encode_sample(uint8_t *buf, size_t cap, uint16_t *seq, const float *values, size_t count)
{
    cobs_writer w;
    uint8_t bytes[4];
    size_t i;
    if (buf == NULL || seq == NULL || values == NULL) return SW_ERR_ARG;
    if (count == 0u || count > SW_MAX_FEATURES) return SW_ERR_FEATURES;
    start_frame(&w, buf, cap, SW_FRAME_SAMPLE, *seq);
    for (i = 0; i < count; ++i) {
        sw_put_f32le(bytes, values[i]);
        writer_body(&w, bytes, sizeof bytes);
    }
    return advance(finish_frame(&w), seq);
}

int sw_encode_reset(uint8_t *buf, size_t cap, uint16_t *seq)
{
    if (seq == NULL) return SW_ERR_ARG;
    return advance(sw_encode_frame(buf, cap, SW_FRAME_RESET, *seq, NULL, 0u), seq);
}

/* ------------------------------------------------------------------ decoder */

void sw_decoder_init(sw_decoder *dec)
{
    if (dec == NULL) return;
    dec->body_len = 0u;
    dec->encoded = 0u;
    dec->code = 0u;
    dec->remaining = 0u;
    dec->discarding = 0u;
}

/* (unsigned) before shifting: with a 16-bit int, 0xFF << 8 would overflow. */
static uint16_t get_u16le(const uint8_t *src)
{
    return (uint16_t)((unsigned)src[0] | ((unsigned)src[1] << 8));
}

static int is_finite_f32(const uint8_t *src)
{
    return ((get_u32le(src) >> 23) & 0xFFu) != 0xFFu;
}

/* Checks a complete body (delimiter seen); fills out on success. */
static int check_body(const sw_decoder *dec, sw_prediction *out)
{
    const uint8_t *b = dec->body;
    uint16_t n = dec->body_len;
    uint16_t payload_len;
    uint8_t i;
    if (dec->remaining != 0u) return SW_ERR_COBS;
    if (n < SW_MIN_BODY) return SW_ERR_SHORT;
    if (sw_crc16(b, (size_t)(n - 2u)) != get_u16le(&b[n - 2u])) return SW_ERR_CRC;
    if (b[0] != SW_FRAME_PREDICTION) return SW_ERR_TYPE;
    payload_len = (uint16_t)(n - SW_MIN_BODY);
    if (payload_len < 2u || b[4] == 0u || payload_len != 2u + 4u * b[4]) return SW_ERR_LENGTH;
    for (i = 0; i < b[4]; ++i) {
        if (!is_finite_f32(&b[5u + 4u * i])) return SW_ERR_NON_FINITE;
    }
    out->seq = get_u16le(&b[1]);
    out->class_index = b[3];
    out->n_outputs = b[4];
    out->raw_outputs = &b[5];
    return SW_FRAME_READY;
}

static int end_of_frame(sw_decoder *dec, sw_prediction *out)
{
    int status = SW_NEED_MORE;
    if (!dec->discarding && dec->encoded > 0u) status = check_body(dec, out);
    sw_decoder_init(dec);
    return status;
}

static int overflow(sw_decoder *dec)
{
    dec->discarding = 1u;
    return SW_ERR_TOO_LONG;
}

static int append(sw_decoder *dec, uint8_t byte)
{
    if (dec->body_len >= SW_DECODER_BODY_SIZE) return overflow(dec);
    dec->body[dec->body_len++] = byte;
    return SW_NEED_MORE;
}

int sw_decoder_feed(sw_decoder *dec, uint8_t byte, sw_prediction *out)
{
    if (dec == NULL || out == NULL) return SW_ERR_ARG;
    if (byte == 0u) return end_of_frame(dec, out);
    if (dec->discarding) return SW_NEED_MORE;
    if (++dec->encoded > SW_MAX_ENCODED) return overflow(dec);
    if (dec->remaining > 0u) {
        dec->remaining--;
        return append(dec, byte);
    }
    /* A code byte: the previous block, unless full, ended with an implicit zero. */
    if (dec->encoded > 1u && dec->code != 0xFFu) {
        int status = append(dec, 0u);
        if (status != SW_NEED_MORE) return status;
    }
    dec->code = byte;
    dec->remaining = (uint8_t)(byte - 1u);
    return SW_NEED_MORE;
}

float sw_prediction_output(const sw_prediction *prediction, uint8_t index)
{
    if (prediction == NULL || prediction->raw_outputs == NULL || index >= prediction->n_outputs) {
        return 0.0f;
    }
    return sw_get_f32le(&prediction->raw_outputs[4u * index]);
}
