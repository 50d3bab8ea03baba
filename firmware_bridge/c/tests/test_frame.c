/* Unit tests for stepwise_frame: known vectors, encoder limits, decoder errors. */
#include <math.h>
#include <string.h>

#include "../stepwise_frame.h"
#include "check.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Frames produced by firmware_bridge.cobs.encode_frame (see test_c_frame.py). */
static const uint8_t RESET_0102[] = {0x06, 0x03, 0x02, 0x01, 0x8f, 0xe3, 0x00};
static const uint8_t HELLO_FFFF_3[] = {0x08, 0x01, 0xff, 0xff, 0x01, 0x03, 0xcf, 0x3c, 0x00};
static const uint8_t SAMPLE_7[] = {0x03, 0x02, 0x07, 0x01, 0x01, 0x01, 0x02, 0x3f, 0x01, 0x03,
                                   0xa0, 0xbf, 0x06, 0x60, 0xea, 0x46, 0xb5, 0xf9, 0x00};
static const uint8_t PREDICTION_1234[] = {0x06, 0x04, 0x34, 0x12, 0x01, 0x02, 0x01, 0x03, 0x80,
                                          0x3e, 0x01, 0x05, 0x40, 0x3f, 0x3f, 0xf8, 0x00};

static void test_crc_check_value(void)
{
    CHECK_EQ(sw_crc16((const uint8_t *)"123456789", 9), 0x29B1);
    CHECK_EQ(sw_crc16_update(sw_crc16((const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5), 0x29B1);
}

static void check_cobs(const uint8_t *raw, size_t len, const uint8_t *expected, size_t expected_len)
{
    uint8_t out[600];
    int n = sw_cobs_encode(raw, len, out, sizeof out);
    CHECK_EQ(n, (long)expected_len);
    CHECK(n > 0 && memcmp(out, expected, expected_len) == 0);
    CHECK_EQ(sw_cobs_encode(raw, len, out, expected_len - 1u), SW_ERR_BUFFER);
}

static void test_cobs_wikipedia_vectors(void)
{
    static const uint8_t r1[] = {0x00}, e1[] = {0x01, 0x01};
    static const uint8_t r2[] = {0x00, 0x00}, e2[] = {0x01, 0x01, 0x01};
    static const uint8_t r3[] = {0x00, 0x11, 0x00}, e3[] = {0x01, 0x02, 0x11, 0x01};
    static const uint8_t r4[] = {0x11, 0x22, 0x00, 0x33}, e4[] = {0x03, 0x11, 0x22, 0x02, 0x33};
    static const uint8_t r5[] = {0x11, 0x22, 0x33, 0x44}, e5[] = {0x05, 0x11, 0x22, 0x33, 0x44};
    static const uint8_t r6[] = {0x11, 0x00, 0x00, 0x00}, e6[] = {0x02, 0x11, 0x01, 0x01, 0x01};
    uint8_t raw[256], expected[260];
    size_t i;
    check_cobs(r1, 1, e1, 2);
    check_cobs(r2, 2, e2, 3);
    check_cobs(r3, 3, e3, 4);
    check_cobs(r4, 4, e4, 5);
    check_cobs(r5, 4, e5, 5);
    check_cobs(r6, 4, e6, 5);
    /* 01..FE (254 bytes) -> FF 01..FE: no trailing empty block */
    for (i = 0; i < 254; ++i) raw[i] = (uint8_t)(i + 1u);
    expected[0] = 0xFF;
    memcpy(expected + 1, raw, 254);
    check_cobs(raw, 254, expected, 255);
    /* 01..FF (255 bytes) -> FF 01..FE 02 FF */
    raw[254] = 0xFF;
    expected[255] = 0x02;
    expected[256] = 0xFF;
    check_cobs(raw, 255, expected, 257);
    /* 02..FF 00 (255 bytes) -> FF 02..FF 01 01 */
    for (i = 0; i < 254; ++i) raw[i] = (uint8_t)(i + 2u);
    raw[254] = 0x00;
    memcpy(expected + 1, raw, 254);
    expected[255] = 0x01;
    expected[256] = 0x01;
    check_cobs(raw, 255, expected, 257);
    check_cobs(raw, 0, e1, 1); /* empty -> 01 */
}

static void test_encoders_match_python_vectors(void)
{
    uint8_t buf[SW_FRAME_BUFFER_SIZE];
    const float values[3] = {0.5f, -1.25f, 3e4f};
    uint16_t seq = 0x0102;
    CHECK_EQ(sw_encode_reset(buf, sizeof buf, &seq), (long)sizeof RESET_0102);
    CHECK(memcmp(buf, RESET_0102, sizeof RESET_0102) == 0);
    CHECK_EQ(seq, 0x0103);
    seq = 0xFFFF;
    CHECK_EQ(sw_encode_hello(buf, sizeof buf, &seq, 3), (long)sizeof HELLO_FFFF_3);
    CHECK(memcmp(buf, HELLO_FFFF_3, sizeof HELLO_FFFF_3) == 0);
    CHECK_EQ(seq, 0); /* wraps */
    seq = 7;
    CHECK_EQ(sw_encode_sample(buf, sizeof buf, &seq, values, 3), (long)sizeof SAMPLE_7);
    CHECK(memcmp(buf, SAMPLE_7, sizeof SAMPLE_7) == 0);
    CHECK_EQ(seq, 8);
}

static void test_encoder_limits_leave_counter_unchanged(void)
{
    uint8_t buf[SW_FRAME_BUFFER_SIZE];
    float values[SW_MAX_FEATURES + 1];
    uint16_t seq = 41;
    size_t i;
    for (i = 0; i < COUNT(values); ++i) values[i] = (float)i - 3.0f;
    CHECK_EQ(sw_encode_sample(buf, sizeof buf, &seq, values, 0), SW_ERR_FEATURES);
    CHECK_EQ(sw_encode_sample(buf, sizeof buf, &seq, values, SW_MAX_FEATURES + 1u), SW_ERR_FEATURES);
    CHECK_EQ(sw_encode_hello(buf, sizeof buf, &seq, SW_MAX_FEATURES + 1u), SW_ERR_FEATURES);
    CHECK_EQ(sw_encode_sample(buf, SW_SAMPLE_FRAME_SIZE(SW_MAX_FEATURES) - 1u, &seq, values, SW_MAX_FEATURES), SW_ERR_BUFFER);
    CHECK_EQ(sw_encode_reset(buf, 6, &seq), SW_ERR_BUFFER); /* needs 7 */
    CHECK_EQ(sw_encode_sample(NULL, sizeof buf, &seq, values, 1), SW_ERR_ARG);
    CHECK_EQ(seq, 41);
    CHECK(sw_encode_sample(buf, SW_SAMPLE_FRAME_SIZE(SW_MAX_FEATURES), &seq, values, SW_MAX_FEATURES) > 0);
    CHECK(sw_encode_sample(buf, SW_SAMPLE_FRAME_SIZE(5), &seq, values, 5) > 0);
    CHECK_EQ(seq, 43);
}

static void test_float_bytes_are_little_endian(void)
{
    uint8_t b[4];
    sw_put_f32le(b, 1.0f);
    CHECK(b[0] == 0x00 && b[1] == 0x00 && b[2] == 0x80 && b[3] == 0x3F);
    CHECK(sw_get_f32le(b) == 1.0f);
}

/* Feeds bytes; returns the last status and counts non-NEED_MORE results. */
static int feed(sw_decoder *dec, const uint8_t *bytes, size_t len, sw_prediction *out, int *events)
{
    int status = SW_NEED_MORE;
    size_t i;
    *events = 0;
    for (i = 0; i < len; ++i) {
        status = sw_decoder_feed(dec, bytes[i], out);
        if (status != SW_NEED_MORE) ++*events;
    }
    return status;
}

static void test_decoder_reads_python_prediction(void)
{
    sw_decoder dec;
    sw_prediction p;
    int events;
    sw_decoder_init(&dec);
    CHECK_EQ(feed(&dec, PREDICTION_1234, sizeof PREDICTION_1234, &p, &events), SW_FRAME_READY);
    CHECK_EQ(events, 1);
    CHECK_EQ(p.seq, 0x1234);
    CHECK_EQ(p.class_index, 1);
    CHECK_EQ(p.n_outputs, 2);
    CHECK(sw_prediction_output(&p, 0) == 0.25f && sw_prediction_output(&p, 1) == 0.75f);
    CHECK(sw_prediction_output(&p, 2) == 0.0f);
}

static int encode_prediction(uint8_t *buf, uint8_t n, float value)
{
    uint8_t payload[2 + 4 * SW_MAX_OUTPUTS];
    uint8_t i;
    payload[0] = 1;
    payload[1] = n;
    for (i = 0; i < n; ++i) sw_put_f32le(&payload[2 + 4 * i], value);
    return sw_encode_frame(buf, SW_FRAME_BUFFER_SIZE, SW_FRAME_PREDICTION, 9, payload, 2u + 4u * n);
}

/* Feeds bad, then a good frame: the error is reported once and the good frame decodes. */
static void check_rejected_then_recovers(const uint8_t *bad, size_t len, int expected)
{
    sw_decoder dec;
    sw_prediction p;
    uint8_t good[SW_FRAME_BUFFER_SIZE];
    int events, status = SW_NEED_MORE, seen = SW_NEED_MORE;
    size_t i;
    sw_decoder_init(&dec);
    for (i = 0; i < len; ++i) {
        status = sw_decoder_feed(&dec, bad[i], &p);
        if (status != SW_NEED_MORE) seen = status;
    }
    CHECK_EQ(seen, expected);
    status = feed(&dec, good, (size_t)encode_prediction(good, 3, 0.5f), &p, &events);
    CHECK_EQ(status, SW_FRAME_READY);
    CHECK_EQ(events, 1);
    CHECK(p.n_outputs == 3 && sw_prediction_output(&p, 2) == 0.5f);
}

static void test_decoder_rejections(void)
{
    uint8_t frame[SW_FRAME_BUFFER_SIZE], raw[300];
    const uint8_t cobs_bad[] = {0x05, 0x01, 0x02, 0x00};
    const uint8_t short_body[] = {0x05, 0x04, 0x01, 0x01, 0x01, 0x00};
    uint8_t payload[2];
    int n;
    check_rejected_then_recovers(cobs_bad, sizeof cobs_bad, SW_ERR_COBS);
    check_rejected_then_recovers(short_body, sizeof short_body, SW_ERR_SHORT);
    {
        uint8_t body[11] = {SW_FRAME_PREDICTION, 0x09, 0x00, 0x01, 0x01};
        uint16_t crc;
        sw_put_f32le(&body[5], 0.25f);
        crc = (uint16_t)(sw_crc16(body, 9) ^ 0x0100u); /* one bit off */
        body[9] = (uint8_t)(crc & 0xFFu);
        body[10] = (uint8_t)(crc >> 8);
        n = sw_cobs_encode(body, sizeof body, frame, sizeof frame);
        frame[n] = 0x00;
        check_rejected_then_recovers(frame, (size_t)n + 1u, SW_ERR_CRC);
    }
    check_rejected_then_recovers(SAMPLE_7, sizeof SAMPLE_7, SW_ERR_TYPE);
    payload[0] = 0;
    payload[1] = 1; /* one output announced, none carried */
    n = sw_encode_frame(frame, sizeof frame, SW_FRAME_PREDICTION, 1, payload, 2);
    check_rejected_then_recovers(frame, (size_t)n, SW_ERR_LENGTH);
    n = encode_prediction(frame, 1, INFINITY);
    check_rejected_then_recovers(frame, (size_t)n, SW_ERR_NON_FINITE);
    memset(raw, 0x01, sizeof raw);
    raw[sizeof raw - 1u] = 0x00;
    check_rejected_then_recovers(raw, sizeof raw, SW_ERR_TOO_LONG);
}

static void test_decoder_ignores_empty_frames_and_truncation(void)
{
    sw_decoder dec;
    sw_prediction p;
    const uint8_t empties[] = {0x00, 0x00, 0x00};
    int events;
    sw_decoder_init(&dec);
    CHECK_EQ(feed(&dec, empties, sizeof empties, &p, &events), SW_NEED_MORE);
    CHECK_EQ(events, 0);
    /* half a frame, then a flush 0x00 (reported), then a whole frame */
    CHECK_EQ(feed(&dec, PREDICTION_1234, 8, &p, &events), SW_NEED_MORE);
    CHECK_EQ(sw_decoder_feed(&dec, 0x00, &p), SW_ERR_COBS);
    CHECK_EQ(feed(&dec, PREDICTION_1234, sizeof PREDICTION_1234, &p, &events), SW_FRAME_READY);
    CHECK_EQ(sw_decoder_feed(NULL, 0x00, &p), SW_ERR_ARG);
}

static void test_decoder_largest_prediction(void)
{
    sw_decoder dec;
    sw_prediction p;
    uint8_t frame[SW_FRAME_BUFFER_SIZE];
    int events;
    int n = encode_prediction(frame, SW_MAX_OUTPUTS, -2.5f);
    CHECK(n > 0 && (size_t)n <= SW_FRAME_BUFFER_SIZE);
    sw_decoder_init(&dec);
    CHECK_EQ(feed(&dec, frame, (size_t)n, &p, &events), SW_FRAME_READY);
    CHECK(p.n_outputs == SW_MAX_OUTPUTS && sw_prediction_output(&p, SW_MAX_OUTPUTS - 1u) == -2.5f);
}

int main(void)
{
    test_crc_check_value();
    test_cobs_wikipedia_vectors();
    test_encoders_match_python_vectors();
    test_encoder_limits_leave_counter_unchanged();
    test_float_bytes_are_little_endian();
    test_decoder_reads_python_prediction();
    test_decoder_rejections();
    test_decoder_ignores_empty_frames_and_truncation();
    test_decoder_largest_prediction();
    return check_report("test_frame");
}
