/*
 * Prints what a generated stepwise_model.h holds, one tab-separated record per line,
 * so a test can compare it with manifest.json. Build with the folder holding the
 * generated header on the include path:
 *   gcc -std=c99 -Wall -Wextra -Werror -pedantic -I <out> export_check.c
 */
#include <stdio.h>

#include "stepwise_model.h"

static void print_ref(const char *what, const char *variant, const sw_tensor_ref *t) {
    printf("%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.9g\t%d\n", what, variant, t->name, (int)t->is_input,
           (int)t->position, (int)t->index, (int)t->dtype, (double)t->scale, (int)t->zero_point);
}

static void print_model(void) {
    unsigned i, j;
    printf("model\t%d\t%s\t%s\t%d\t%s\t%d\n", SW_MODEL_SCHEMA_VERSION, SW_MODEL_SIGNATURE_KEY,
           SW_MODEL_INPUT_NAME, SW_MODEL_WINDOW_LENGTH, SW_MODEL_RESET_POLICY,
           SW_MODEL_DEFAULT_VARIANT);
    printf("sizes\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", SW_MODEL_FEATURES, SW_MODEL_NUM_STATES,
           SW_MODEL_STATES_ELEMENTS, SW_MODEL_STATES_FLOAT_BYTES, SW_MODEL_NUM_OUTPUTS,
           SW_MODEL_OUTPUT_UNITS, SW_MODEL_NUM_VARIANTS);
    for (i = 0; i < SW_MODEL_FEATURES; i++) {
        printf("feature\t%s\t%.9g\t%.9g\n", sw_model_feature_names[i], (double)sw_model_mean[i],
               (double)sw_model_std[i]);
    }
    for (i = 0; i < SW_MODEL_NUM_STATES; i++) {
        const sw_state_info *s = &sw_model_states[i];
        printf("state\t%s\t%s\t%s\t%s\t%s\t%d\t%u\t%u\t", s->name, s->input, s->output, s->layer,
               s->kind, (int)s->dtype, (unsigned)s->elements, (unsigned)s->offset);
        for (j = 0; j < s->rank; j++) printf("%s%u", j ? "," : "", (unsigned)s->shape[j]);
        printf("\n");
    }
    for (i = 0; i < SW_MODEL_NUM_OUTPUTS; i++) {
        const sw_output_info *o = &sw_model_outputs[i];
        printf("output\t%s\t%s\t%d\t%u", o->name, o->kind_name, (int)o->kind, (unsigned)o->units);
        for (j = 0; j < o->num_labels; j++) printf("\t%s", o->labels[j]);
        printf("\n");
    }
}

static void print_variant(const sw_variant_info *v) {
    unsigned i;
    printf("variant\t%s\t%s\t%u\t%u\t%u\t%u\t%s\t", v->name, v->file, (unsigned)v->bytes,
           (unsigned)v->op_count, (unsigned)v->arena_bytes, (unsigned)v->num_tensors, v->sha256_hex);
    for (i = 0; i < 32; i++) printf("%02x", v->sha256[i]);
    printf("\n");
    for (i = 0; i < v->num_tensors; i++) print_ref("tensor", v->name, &v->tensors[i]);
    print_ref("input", v->name, v->input);
    for (i = 0; i < SW_MODEL_NUM_STATES; i++) {
        printf("carry\t%s\t%s\t%s\t%s\n", v->name, sw_model_states[i].name, v->states[i].in->name,
               v->states[i].out->name);
    }
    for (i = 0; i < SW_MODEL_NUM_OUTPUTS; i++) print_ref("out", v->name, v->outputs[i]);
}

int main(void) {
    unsigned i;
    print_model();
    for (i = 0; i < SW_MODEL_NUM_VARIANTS; i++) print_variant(&sw_model_variants[i]);
    return 0;
}
