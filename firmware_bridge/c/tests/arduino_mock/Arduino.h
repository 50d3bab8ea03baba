// Just enough of the Arduino core to run a sketch on the host (sketch_host.cpp).
#ifndef STEPWISE_ARDUINO_MOCK_H
#define STEPWISE_ARDUINO_MOCK_H

#include <stddef.h>
#include <stdint.h>

#define HIGH 1
#define LOW 0
#define INPUT 0
#define OUTPUT 1
#define INPUT_PULLUP 2
#define LED_BUILTIN 13
#define A0 14
#define A1 15
#define A2 16

unsigned long millis();
int analogRead(uint8_t pin);
int digitalRead(uint8_t pin);
void digitalWrite(uint8_t pin, uint8_t value);
void pinMode(uint8_t pin, uint8_t mode);

class MockSerial {
public:
    void begin(unsigned long baud);
    int available();
    int read();
    size_t write(uint8_t byte);
    size_t write(const uint8_t *bytes, size_t len);
};

extern MockSerial Serial;

#endif
