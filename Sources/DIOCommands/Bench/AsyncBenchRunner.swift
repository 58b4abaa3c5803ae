import Dispatch
import DirectIO
import DirectIOLog
import Glibc
import Histogram

/// Runs one job through the async API: `iodepth` tasks, each owning one pool buffer and
/// awaiting one I/O at a time, like `iodepth` callers of a server would. With `async`, the
/// tasks run on Swift's global executor and every request crosses to the ring's thread; with
/// `async-executor`, they run on the ring's own executor and submit with no handoff; with
/// `async-scoped`, they also pass one `IOScope` each to every call (one cancellation handler
/// per task, not per I/O). With `log-async`, the tasks (on the global executor) append their
/// writes as records to one `DurableLog` beside the target instead.
enum AsyncBenchRunner {
    /// What one task measured in the window.
    ///
    /// Each task has its own histogram (about 200 KiB), merged at the end, but records into it
    /// only every `batch` I/Os: recording each I/O as it finishes would spread 64 tasks' records
    /// over 13 MiB of histograms and charge the async APIs for cache misses the batched runner
    /// (one histogram) does not pay. No histogram is shared, so no lock is needed.
    private struct TaskTotals: Sendable {
        var ios = 0
        var bytes: Int64 = 0
        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var failure: String? = nil
        static let batch = 256

        /// Moves `samples` into the histogram and empties it.
        mutating func record(_ samples: inout [UInt64]) {
            for sample in samples { _ = histogram.record(sample) }
            samples.removeAll(keepingCapacity: true)
        }
    }

    /// With `installed`, the runtime whose rings are Swift's global executor runs the job (and
    /// is not shut down: it runs every task from now on); else a runtime of `rings` rings.
    static func run(_ workload: Workload, path: String, sizeBytes: Int64, rings: Int, installed: IORuntime? = nil) throws -> BenchResult {
        if let problem = workload.validate() {
            throw DirectIOError(.invalidArgument, operation: "bench", path: path, detail: problem)
        }
        let runtime = try installed ?? IORuntime(rings: rings, queueDepth: workload.iodepth)
        let pool = try BufferPool(count: workload.iodepth, bufferBytes: workload.maxBlockBytes + workload.bufferOffset, hugePages: workload.hugePages)
        let access: OpenOptions.Access = workload.pattern.writes ? .readWrite : .readOnly
        let file = try AsyncFile(path: path, options: OpenOptions(access: access, directIO: workload.mode == .direct ? .required : .disabled), runtime: runtime)
        var notes = pool.mapping.notes
        let logPath = path + ".log"
        if workload.api == .logAsync { _ = unlink(logPath) }
        let log: DurableLog? = workload.api == .logAsync ? try DurableLog(path: logPath, runtime: runtime) : nil
        if let log { notes.append("log \(logPath), \(log.blockBytes)-byte blocks") }
        defer { if log != nil { _ = unlink(logPath) } }
        if !runtime.usesIOUring { notes.append("io_uring unavailable: the runtime's rings drive the blocking engine") }
        if installed != nil { notes.append("tasks on the rings: \(runtime.ringCount) ring(s) installed as Swift's global executor") }

        let outcome = ResultBox()
        let done = DispatchSemaphore(value: 0)
        Task {
            if workload.buffers == .registered { await runtime.register(pool) }
            outcome.value = await measure(workload, file: file, log: log, pool: pool, runtime: runtime, sizeBytes: sizeBytes)
            if installed == nil { await runtime.shutdown() }
            done.signal()
        }
        done.wait()
        guard let (totals, seconds, cpu) = outcome.value else {
            throw DirectIOError(.unexpected, operation: "bench", path: path, detail: "the async job produced no result")
        }
        if let failure = totals.failure { throw DirectIOError(.ioError, operation: "bench", path: path, detail: failure) }
        // The file counts from the first I/O, ramp included: the window's bytes in that share.
        let counted = log == nil ? file.statistics : TransferStatistics()
        let bounced = counted.bytesBounced == 0 ? 0 : totals.bytes * Int64(counted.bytesBounced) / Int64(counted.bytesBounced + counted.bytesDirect)
        return BenchResult(
            workload: workload, engine: runtime.usesIOUring ? .ioUring : .blocking, ios: totals.ios, bytes: totals.bytes, seconds: seconds,
            latencyP50Ns: totals.histogram.valueAtPercentile(50), latencyP99Ns: totals.histogram.valueAtPercentile(99), latencyP999Ns: totals.histogram.valueAtPercentile(99.9),
            cpuUserSeconds: cpu.user, cpuSystemSeconds: cpu.system,
            bytesDirect: file.isDirect ? totals.bytes - bounced : 0, bytesBounced: bounced, bytesShifted: 0,
            registeredBuffers: workload.buffers == .registered && pool.registration != .unregistered, notes: notes)
    }

    /// Hands the result from the task to the waiting thread.
    ///
    /// Unchecked sendability: `value` is written once, by the task, before it signals the
    /// semaphore, and read by the waiting thread only after `wait()` returns; the semaphore's
    /// signal/wait pair orders the write before the read.
    private final class ResultBox: @unchecked Sendable {
        var value: (TaskTotals, Double, (user: Double, system: Double))?
    }

    private static func measure(_ workload: Workload, file: AsyncFile, log: DurableLog?, pool: BufferPool, runtime: IORuntime, sizeBytes: Int64) async -> (TaskTotals, Double, (user: Double, system: Double)) {
        let start = ProcessClock.nanoseconds()
        let rampEnd = start + UInt64(workload.rampSeconds * 1e9)
        let end = rampEnd + UInt64(workload.runtimeSeconds * 1e9)
        let blocks = UInt64(sizeBytes / Int64(workload.blockBytes))
        let executor: (any TaskExecutor)? = workload.api == .async || workload.api == .logAsync ? nil : runtime.executor(ring: 0)
        let scoped = workload.api == .asyncScoped
        return await withTaskGroup(of: TaskTotals.self) { group in
            for index in 0..<workload.iodepth {
                let caller: @Sendable () async -> TaskTotals = {
                    if scoped {
                        await runtime.withIOScope { scope in
                            await oneCaller(index, workload: workload, file: file, log: log, pool: pool, blocks: blocks, rampEnd: rampEnd, end: end, scope: scope)
                        }
                    } else {
                        await oneCaller(index, workload: workload, file: file, log: log, pool: pool, blocks: blocks, rampEnd: rampEnd, end: end, scope: nil)
                    }
                }
                // `addTask(executorPreference: nil)` is not `addTask`: the task is still marked
                // as having a preference, and the runtime then takes the task's status lock at
                // every executor switch and enqueue to find that it has none (about 0.4 µs an
                // I/O on this machine). Plain tasks are what users write.
                if let executor {
                    group.addTask(executorPreference: executor, operation: caller)
                } else {
                    group.addTask(operation: caller)
                }
            }
            // The measured window's CPU time, taken by this task at its edges.
            try? await Task.sleep(nanoseconds: rampEnd > ProcessClock.nanoseconds() ? rampEnd - ProcessClock.nanoseconds() : 0)
            let cpuStart = ProcessClock.cpuSeconds()
            let windowStart = ProcessClock.nanoseconds()
            try? await Task.sleep(nanoseconds: end > ProcessClock.nanoseconds() ? end - ProcessClock.nanoseconds() : 0)
            let cpuEnd = ProcessClock.cpuSeconds()
            let windowEnd = ProcessClock.nanoseconds()
            var total = TaskTotals()
            total.histogram.autoResize = true
            for await part in group {
                total.ios += part.ios
                total.bytes += part.bytes
                total.histogram.add(part.histogram)
                total.failure = total.failure ?? part.failure
            }
            return (total, Double(windowEnd - windowStart) / 1e9, (cpuEnd.user - cpuStart.user, cpuEnd.system - cpuStart.system))
        }
    }

    /// One caller: its own buffer, one I/O at a time until the window ends.
    nonisolated(nonsending) private static func oneCaller(_ index: Int, workload: Workload, file: AsyncFile, log: DurableLog?, pool: BufferPool, blocks: UInt64, rampEnd: UInt64, end: UInt64, scope: IOScope?) async -> TaskTotals {
        var totals = TaskTotals()
        totals.histogram.autoResize = true
        var samples: [UInt64] = []
        samples.reserveCapacity(TaskTotals.batch)
        guard var buffer = pool.take() else {
            totals.failure = "the pool has fewer buffers than callers"
            return totals
        }
        var random = SplitMix(seed: workload.seed &+ UInt64(index) &* 0x9E37_79B9)
        buffer.withUnsafeMutableBytes { random.fill($0) }
        var sequential = Int64(index) * Int64(workload.blockBytes)
        // Unaligned jobs: sequential callers take turns through the file, each from its slice.
        var slice = Int64(blocks) * Int64(workload.blockBytes) / Int64(workload.iodepth) * Int64(index)
        var writesDone = 0
        // --api log-async with --fdatasync N: this task's records, appended together at its Nth.
        var pending: [[UInt8]] = []
        // One clock read per I/O: a completion's time is its successor's submission time, as
        // in the batched runner (which reads the clock once per reaped batch).
        var now = ProcessClock.nanoseconds()
        while true {
            let count = workload.nextSize(&random)
            let offset: Int64
            if workload.unaligned {
                offset = workload.nextOffset(count: count, sizeBytes: Int64(blocks) * Int64(workload.blockBytes), sequential: &slice, &random)
            } else if workload.pattern.isRandom {
                offset = Int64(random.next() % blocks) * Int64(workload.blockBytes)
            } else {
                offset = sequential
                sequential += Int64(workload.iodepth * workload.blockBytes)
                if sequential + Int64(workload.blockBytes) > Int64(blocks) * Int64(workload.blockBytes) { sequential = Int64(index) * Int64(workload.blockBytes) }
            }
            let writes = workload.pattern == .randrw ? random.next() & 1 == 1 : workload.pattern.writes
            let submitted = now
            if submitted >= end { break }
            do {
                let moved: Int
                if let log {
                    let record = UnsafeRawBufferPointer(start: buffer.baseAddress, count: count)
                    if workload.fdatasyncEvery <= 1 {
                        _ = try await log.append(record)
                    } else {
                        pending.append([UInt8](record))
                        if pending.count == workload.fdatasyncEvery {
                            _ = try await log.append(contentsOf: pending)
                            pending.removeAll(keepingCapacity: true)
                        }
                    }
                    moved = count
                } else if workload.atomic {
                    moved = try await file.atomicWrite(buffer, count: count, at: offset, in: scope)
                } else if workload.bufferOffset == 0 {
                    moved = writes ? try await file.write(buffer, count: count, at: offset, in: scope) : try await file.read(into: &buffer, count: count, at: offset, in: scope)
                } else {
                    let memory = UnsafeMutableRawBufferPointer(start: buffer.baseAddress + workload.bufferOffset, count: count)
                    moved = writes ? try await file.write(UnsafeRawBufferPointer(memory), at: offset, in: scope) : try await file.read(into: memory, at: offset, in: scope)
                }
                if writes && log == nil {
                    writesDone += 1
                    if workload.fdatasyncEvery > 0 && writesDone % workload.fdatasyncEvery == 0 { try await file.sync(dataOnly: true, in: scope) }
                }
                let finished = ProcessClock.nanoseconds()
                now = finished
                if submitted >= rampEnd && finished <= end {
                    samples.append(finished - submitted)
                    if samples.count == TaskTotals.batch { totals.record(&samples) }
                    totals.ios += 1
                    totals.bytes += Int64(moved)
                }
            } catch {
                totals.failure = "\(error)"
                break
            }
        }
        totals.record(&samples)
        return totals
    }
}
