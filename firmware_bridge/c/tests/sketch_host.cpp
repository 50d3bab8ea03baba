// Runs examples/arduino/stepwise_imu on the host against arduino_mock/Arduino.h.
//
//   sketch_host MILLIS BUTTON_DOWN_MS BUTTON_UP_MS [AT_MS:HEX ...]
// Calls loop() once per simulated millisecond; the button reads LOW in
// [BUTTON_DOWN_MS, BUTTON_UP_MS); at AT_MS the bytes HEX arrive on the serial port.
// analogRead(A0 + i) returns (100 * (i + 1) + millis() / 20) % 1024.
// Prints "tx <hex of everything written>" and one "led <ms> <level>" per LED change.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "Arduino.h"
#include "../../examples/arduino/stepwise_imu/stepwise_imu.ino"

MockSerial Serial;
static unsigned long now_ms = 0;
static unsigned long button_down = 0, button_up = 0;
static uint8_t mock_rx[4096], mock_tx[65536];
static size_t mock_rx_len = 0, mock_rx_pos = 0, mock_tx_len = 0;
static int led = -1;

unsigned long millis() { return now_ms; }
int analogRead(uint8_t pin) { return (int)((100u * (pin - A0 + 1u) + now_ms / 20u) % 1024u); }
int digitalRead(uint8_t) { return now_ms >= button_down && now_ms < button_up ? LOW : HIGH; }
void pinMode(uint8_t, uint8_t) {}

void digitalWrite(uint8_t pin, uint8_t value)
{
    if (pin == LED_BUILTIN && value != led) {
        led = value;
        printf("led %lu %d\n", now_ms, value);
    }
}

void MockSerial::begin(unsigned long) {}
int MockSerial::available() { return (int)(mock_rx_len - mock_rx_pos); }
int MockSerial::read() { return mock_rx_pos < mock_rx_len ? mock_rx[mock_rx_pos++] : -1; }
size_t MockSerial::write(uint8_t byte) { return write(&byte, 1); }

size_t MockSerial::write(const uint8_t *bytes, size_t len)
{
    if (len > sizeof mock_tx - mock_tx_len) len = sizeof mock_tx - mock_tx_len;
    memcpy(&mock_tx[mock_tx_len], bytes, len);
    mock_tx_len += len;
    return len;
}

static void arrive(const char *hex)
{
    while (hex[0] && hex[1] && mock_rx_len < sizeof mock_rx) {
        char byte[3] = {hex[0], hex[1], 0};
        mock_rx[mock_rx_len++] = (uint8_t)strtoul(byte, NULL, 16);
        hex += 2;
    }
}

int main(int argc, char **argv)
{
    unsigned long end;
    if (argc < 4) return 2;
    end = strtoul(argv[1], NULL, 10);
    button_down = strtoul(argv[2], NULL, 10);
    button_up = strtoul(argv[3], NULL, 10);
    setup();
    for (now_ms = 0; now_ms < end; ++now_ms) {
        for (int i = 4; i < argc; ++i) {
            char *colon = strchr(argv[i], ':');
            if (colon != NULL && strtoul(argv[i], NULL, 10) == now_ms) arrive(colon + 1);
        }
        loop();
    }
    printf("tx ");
    for (size_t i = 0; i < mock_tx_len; ++i) printf("%02x", mock_tx[i]);
    printf("\n");
    return 0;
}
