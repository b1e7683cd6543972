/* hashiflex stream driver: the StreamSim.run loop in C, over the model's own port accessors.
 *
 * StreamSim hands over the addresses of pyverilator's generated functions (eval, set_<port>, get_<port>) and
 * the beats to send; this loop does per cycle what the Python loop does (drive the input beat and out_ready,
 * evaluate, take the input if ready, take an output if valid and ready, clock high, evaluate, clock low),
 * without a Python call per cycle, and lets the evaluation after the next inputs settle the falling edge. Accessors take/return at most 64 bits: set_* functions that
 * take a 32-bit value read the low half of the 64-bit argument register and get_* results are masked, which
 * holds for the x86-64 and AArch64 calling conventions.
 */
#include <stdint.h>

typedef void (*eval_fn)(void *);
typedef void (*set_fn)(void *, uint64_t);
typedef uint64_t (*get_fn)(void *);

typedef struct {
    void *model;
    eval_fn eval;
    set_fn clock, in_valid, out_ready;
    get_fn in_ready, out_valid;
    int64_t n_in, n_out;
    set_fn *in_bits;
    get_fn *out_bits;
    const uint64_t *out_masks;
} hfx_ports;

/* Returns the cycles simulated, or -1 after max_cycles without all outputs (a deadlock).
 * counters[0]: input waits (a beat offered, not ready); counters[1]: output stalls (valid, not taken). */
int64_t hfx_stream(const hfx_ports *p, const uint64_t *beats, int64_t n_beats, int64_t per_image_in,
                   uint64_t *out, int64_t n_out_beats, int64_t per_image_out, const uint8_t *backpressure,
                   int64_t bp_len, int64_t cycle0, int64_t max_cycles, int64_t *in_cycles, int64_t *out_cycles,
                   int64_t *counters) {
    int64_t cycle = cycle0, sent = 0, got = 0;
    while (got < n_out_beats) {
        if (cycle - cycle0 > max_cycles) return -1;
        if (sent < n_beats) {
            p->in_valid(p->model, 1);
            const uint64_t *b = beats + sent * p->n_in;
            for (int64_t i = 0; i < p->n_in; i++) p->in_bits[i](p->model, b[i]);
        } else {
            p->in_valid(p->model, 0);
        }
        int ready = !(backpressure && backpressure[cycle % bp_len]);
        p->out_ready(p->model, (uint64_t)ready);
        p->eval(p->model);
        if (sent < n_beats) {
            if (p->in_ready(p->model) & 1) {
                if (sent % per_image_in == 0) in_cycles[sent / per_image_in] = cycle;
                sent++;
            } else {
                counters[0]++;
            }
        }
        if (p->out_valid(p->model) & 1) {
            if (!ready) {
                counters[1]++;
            } else {
                uint64_t *o = out + got * p->n_out;
                for (int64_t k = 0; k < p->n_out; k++) o[k] = p->out_bits[k](p->model) & p->out_masks[k];
                got++;
                if (got % per_image_out == 0) out_cycles[got / per_image_out - 1] = cycle;
            }
        }
        p->clock(p->model, 1);
        p->eval(p->model);
        /* clock low: every register is on the rising edge, so the falling edge is settled together with the
         * next cycle's inputs by the next evaluation (two evaluations per cycle, as a bare harness does) */
        p->clock(p->model, 0);
        cycle++;
    }
    p->eval(p->model);
    return cycle - cycle0;
}
