/*
 * frame_tool: drives stepwise_frame from the command line for the Python cross-tests.
 *
 *   frame_tool encode START_SEQ [CAP] < script
 *     script lines: "hello N", "sample V1 V2 ...", "reset"; one output line per input
 *     line: the frame as hex (delimiter included) or "error <reason>"; then "seq <n>".
 *   frame_tool decode < hex
 *     feeds the bytes one at a time; one line per event:
 *     "prediction <seq> <class> <n> <hex of the n float32 LE>" or "error <reason>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../stepwise_frame.h"

static void print_hex(const uint8_t *bytes, size_t len)
{
    size_t i;
    for (i = 0; i < len; ++i) printf("%02x", bytes[i]);
}

static void print_result(const uint8_t *buf, int status)
{
    if (status < 0) {
        printf("error %s\n", sw_status_name(status));
        return;
    }
    print_hex(buf, (size_t)status);
    printf("\n");
}

static int encode_line(char *line, uint8_t *buf, size_t cap, uint16_t *seq)
{
    float values[SW_MAX_FEATURES + 8];
    size_t count = 0;
    char *word = strtok(line, " \t\r\n");
    if (word == NULL) return SW_ERR_ARG;
    if (strcmp(word, "reset") == 0) return sw_encode_reset(buf, cap, seq);
    if (strcmp(word, "hello") == 0) {
        char *n = strtok(NULL, " \t\r\n");
        return n == NULL ? SW_ERR_ARG : sw_encode_hello(buf, cap, seq, (uint8_t)strtoul(n, NULL, 10));
    }
    if (strcmp(word, "sample") != 0) return SW_ERR_ARG;
    while ((word = strtok(NULL, " \t\r\n")) != NULL && count < sizeof values / sizeof values[0]) {
        values[count++] = strtof(word, NULL);
    }
    return sw_encode_sample(buf, cap, seq, values, count);
}

static int run_encode(int argc, char **argv)
{
    static uint8_t buf[1024];
    static char line[4096];
    uint16_t seq;
    size_t cap = SW_FRAME_BUFFER_SIZE;
    if (argc < 3) return 2;
    seq = (uint16_t)strtoul(argv[2], NULL, 10);
    if (argc > 3) cap = (size_t)strtoul(argv[3], NULL, 10);
    if (cap > sizeof buf) return 2;
    while (fgets(line, sizeof line, stdin) != NULL) {
        print_result(buf, encode_line(line, buf, cap, &seq));
    }
    printf("seq %u\n", (unsigned)seq);
    return 0;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void report(int status, const sw_prediction *p)
{
    if (status == SW_FRAME_READY) {
        printf("prediction %u %u %u ", (unsigned)p->seq, (unsigned)p->class_index, (unsigned)p->n_outputs);
        print_hex(p->raw_outputs, 4u * p->n_outputs);
        printf("\n");
    } else if (status != SW_NEED_MORE) {
        printf("error %s\n", sw_status_name(status));
    }
}

static int run_decode(void)
{
    sw_decoder dec;
    sw_prediction p;
    int c, high = -1;
    sw_decoder_init(&dec);
    while ((c = getchar()) != EOF) {
        int v = hex_value(c);
        if (v < 0) continue;
        if (high < 0) {
            high = v;
            continue;
        }
        report(sw_decoder_feed(&dec, (uint8_t)(high * 16 + v), &p), &p);
        high = -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "encode") == 0) return run_encode(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "decode") == 0) return run_decode();
    fprintf(stderr, "usage: frame_tool encode START_SEQ [CAP] | frame_tool decode\n");
    return 2;
}
