// stepwise_imu: streams a 3-axis sensor to `stepwise serve --protocol cobs` and shows
// the model's answer on an LED.
//
// - At boot: a 0x00 (flushes a half-received frame at the host), then HELLO.
// - Every SAMPLE_PERIOD_MS: one SAMPLE frame (3 x float32) from read_sensor().
// - Button pressed (pin to GND): a RESET frame, the model starts a new sequence.
// - PREDICTION frames from the host: LED on when the predicted class is not 0.
//
// All framing is done by stepwise_frame.c/.h (tested on the host); this file only
// wires it to the board. See ../../README.md for how to build and flash it.
#include "stepwise_frame.h"

static const unsigned long BAUD = 115200;
static const unsigned long SAMPLE_PERIOD_MS = 20;  // 50 Hz: match the training data's rate
static const uint8_t FEATURES = 3;                 // the manifest's input.feature_count
static const uint8_t BUTTON_PIN = 2;               // momentary button to GND
static const uint8_t LED_PIN = LED_BUILTIN;
static const unsigned long DEBOUNCE_MS = 30;

static uint16_t tx_seq = 0;                            // sequence number of the next frame
static uint8_t tx_frame[SW_SAMPLE_FRAME_SIZE(3)];      // large enough for HELLO, SAMPLE(3), RESET
static sw_decoder rx;                                  // PREDICTION decoder state
static unsigned long next_sample_ms = 0;
static int button_stable = HIGH;
static int button_last = HIGH;
static unsigned long button_changed_ms = 0;

// The only function that knows the sensor. This one reads an analog 3-axis
// accelerometer (e.g. an ADXL335) on A0..A2 and returns volts; replace it with your
// IMU driver. Send the same units the training data used: the host normalises.
static void read_sensor(float values[FEATURES])
{
    static const uint8_t pins[FEATURES] = {A0, A1, A2};
    for (uint8_t i = 0; i < FEATURES; ++i) {
        values[i] = (float)analogRead(pins[i]) * (5.0f / 1023.0f);
    }
}

static void send(int written)
{
    if (written > 0) Serial.write(tx_frame, (size_t)written);
}

static void receive_predictions()
{
    sw_prediction prediction;
    while (Serial.available() > 0) {
        int status = sw_decoder_feed(&rx, (uint8_t)Serial.read(), &prediction);
        if (status == SW_FRAME_READY) {
            digitalWrite(LED_PIN, prediction.class_index != 0 ? HIGH : LOW);
        }
        // Negative statuses are bad frames; the decoder already skipped them.
    }
}

// true once per press (debounced falling edge)
static bool button_pressed(unsigned long now)
{
    int level = digitalRead(BUTTON_PIN);
    if (level != button_last) {
        button_last = level;
        button_changed_ms = now;
    }
    if (level != button_stable && now - button_changed_ms >= DEBOUNCE_MS) {
        button_stable = level;
        return level == LOW;
    }
    return false;
}

void setup()
{
    pinMode(LED_PIN, OUTPUT);
    pinMode(BUTTON_PIN, INPUT_PULLUP);
    digitalWrite(LED_PIN, LOW);
    sw_decoder_init(&rx);
    Serial.begin(BAUD);
    Serial.write((uint8_t)0x00);
    send(sw_encode_hello(tx_frame, sizeof tx_frame, &tx_seq, FEATURES));
    next_sample_ms = millis();
}

void loop()
{
    unsigned long now = millis();
    receive_predictions();
    if (button_pressed(now)) {
        send(sw_encode_reset(tx_frame, sizeof tx_frame, &tx_seq));
    }
    if ((long)(now - next_sample_ms) >= 0) {
        float values[FEATURES];
        next_sample_ms += SAMPLE_PERIOD_MS;
        read_sensor(values);
        send(sw_encode_sample(tx_frame, sizeof tx_frame, &tx_seq, values, FEATURES));
    }
}
