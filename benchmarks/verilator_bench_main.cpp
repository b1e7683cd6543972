// Bare Verilator C++ harness for benchmarks/cosim_speed.py: the baseline a hand-written testbench reaches.
// Streams one beat per cycle into in_bits_0 with in_valid and out_ready held high, two evaluations per cycle
// (clock low with the new inputs, clock high), reads out_valid/out_bits_0, and prints cycles, seconds and a
// checksum of the outputs. Built by cosim_speed.py with -DVM_HEADER="V<top>.h" -DTOP_CLASS=V<top>.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <verilated.h>
#include VM_HEADER

int main(int argc, char **argv) {
    long cycles = argc > 1 ? atol(argv[1]) : 100000;
    unsigned mask = argc > 2 ? (unsigned)atol(argv[2]) : 31;
    VerilatedContext ctx;
    TOP_CLASS top{&ctx};
    top.reset = 1;
    for (int i = 0; i < 2; i++) { top.clock = 0; top.eval(); top.clock = 1; top.eval(); }
    top.reset = 0;
    unsigned long sum = 0, outs = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (long c = 0; c < cycles; c++) {
        top.clock = 0;
        top.in_valid = 1;
        top.in_bits_0 = (unsigned)(c * 7 + c / 64) & mask;
        top.out_ready = 1;
        top.eval();
        if (top.out_valid) { sum += (unsigned long)top.out_bits_0; outs++; }
        top.clock = 1;
        top.eval();
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("%ld %.6f %lu %lu\n", cycles, s, outs, sum);
    top.final();
    return 0;
}
