/* Switch callgrind's instrumentation on and off around the measured part of
   a benchmark (benches/instr_count.py loads this with ctypes; the program
   runs under valgrind --tool=callgrind --instr-atstart=no).  Outside
   valgrind both functions do nothing. */
#include <valgrind/callgrind.h>

void
cg_start(void)
{
    CALLGRIND_START_INSTRUMENTATION;
}

void
cg_stop(void)
{
    CALLGRIND_STOP_INSTRUMENTATION;
}
