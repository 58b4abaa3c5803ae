// Swift's global executor hooks, for an I/O runtime whose rings run every task
// (IORuntime.installAsGlobalExecutor). The concurrency runtime checks these hook variables
// (swift/Runtime/ConcurrencyHooks.def) before its own global enqueue; they hold swiftcall
// function pointers, which Swift code cannot declare, hence C. Each hook hands the job to the
// Swift side; when that refuses (the rings have stopped) the job goes where it would have gone
// without the hook.
#include "CDirectIO.h"
#include <dlfcn.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define DIO_SWIFTCC __attribute__((swiftcall))

typedef void (DIO_SWIFTCC *dio_enqueue_original)(void *job);
typedef void (DIO_SWIFTCC *dio_enqueue_delay_original)(unsigned long long delay, void *job);
typedef void (DIO_SWIFTCC *dio_enqueue_deadline_original)(long long sec, long long nsec, long long tsec,
                                                          long long tnsec, int clock, void *job);
typedef void (DIO_SWIFTCC *dio_get_time_fn)(long long *seconds, long long *nanoseconds, int clock);

static dio_enqueue_job_fn dio_enqueue_target;
static dio_enqueue_delayed_job_fn dio_enqueue_delayed_target;
// The installed runtime's Swift object (retained for the life of the process).
static void *dio_enqueue_context;
static dio_get_time_fn dio_get_time;

static void DIO_SWIFTCC dio_enqueue_hook(void *job, dio_enqueue_original original) {
    if (!dio_enqueue_target(dio_enqueue_context, job)) original(job);
}

static void DIO_SWIFTCC dio_enqueue_delay_hook(unsigned long long delay, void *job,
                                               dio_enqueue_delay_original original) {
    if (!dio_enqueue_delayed_target(dio_enqueue_context, delay, job)) original(delay, job);
}

static void DIO_SWIFTCC dio_enqueue_deadline_hook(long long sec, long long nsec, long long tsec, long long tnsec,
                                                  int clock, void *job, dio_enqueue_deadline_original original) {
    // The deadline is on the task's clock (continuous or suspending); the rings wait a delay.
    long long nowSeconds = 0, nowNanoseconds = 0;
    dio_get_time(&nowSeconds, &nowNanoseconds, clock);
    long long delay = (sec - nowSeconds) * 1000000000LL + (nsec - nowNanoseconds);
    if (!dio_enqueue_delayed_target(dio_enqueue_context, delay > 0 ? (unsigned long long)delay : 0, job))
        original(sec, nsec, tsec, tnsec, clock, job);
}

int dio_install_global_executor_hooks(void *context, dio_enqueue_job_fn enqueue, dio_enqueue_delayed_job_fn enqueueDelayed) {
    void **enqueueHook = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobal_hook");
    void **delayHook = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobalWithDelay_hook");
    void **deadlineHook = dlsym(RTLD_DEFAULT, "swift_task_enqueueGlobalWithDeadline_hook");
    void *getTime = dlsym(RTLD_DEFAULT, "swift_get_time");
    if (!enqueueHook || !delayHook || !deadlineHook || !getTime) return -1;
    // Someone else (swift-nio's event loops, another library) already took the global executor.
    if (*enqueueHook || *delayHook || *deadlineHook) return -2;
    dio_enqueue_context = context;
    dio_enqueue_target = enqueue;
    dio_enqueue_delayed_target = enqueueDelayed;
    dio_get_time = (dio_get_time_fn)getTime;
    *deadlineHook = (void *)dio_enqueue_deadline_hook;
    *delayHook = (void *)dio_enqueue_delay_hook;
    *enqueueHook = (void *)dio_enqueue_hook;
    return 0;
}

// initial-exec: read with one instruction, not a __tls_get_addr call per job (this object is
// linked into the program or a library loaded with it, never dlopen'ed later).
static __thread __attribute__((tls_model("initial-exec"))) void *dio_ring_executor_of_thread;

void *dio_current_ring_executor(void) { return dio_ring_executor_of_thread; }
void dio_set_current_ring_executor(void *executor) { dio_ring_executor_of_thread = executor; }

// DIRECTIO_GLOBAL_EXECUTOR=rings makes the default I/O runtime's rings the global executor
// before main runs, so no task can have started elsewhere: how a program opts in without a code
// change, and how the test suites run on the rings.
extern void dio_install_rings_from_environment(void);

__attribute__((constructor)) static void dio_global_executor_from_environment(void) {
    const char *wanted = getenv("DIRECTIO_GLOBAL_EXECUTOR");
    if (!wanted || !*wanted || strcmp(wanted, "default") == 0) return;
    if (strcmp(wanted, "rings") != 0) {
        fprintf(stderr, "DirectIO: DIRECTIO_GLOBAL_EXECUTOR=%s is not understood (rings or default); "
                        "tasks stay on Swift's default executor\n", wanted);
        return;
    }
    dio_install_rings_from_environment();
}
