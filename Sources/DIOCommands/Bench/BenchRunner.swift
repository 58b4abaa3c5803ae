import DirectIO
import Glibc
import Histogram

/// Runs one job the way fio's io_uring engine does: `iodepth` requests in flight from the
/// start, and each completion's buffer resubmitted at once with the next offset (submit as
/// you reap), so one io_uring_enter both submits the new requests and waits for the next
/// completion. The loop allocates nothing per I/O: buffers come from a pool sized to the
/// depth, per-buffer state lives in arrays indexed by buffer, offsets come from splitmix64.
enum BenchRunner {
    /// Called about twice a second with (elapsed seconds, I/Os so far in the measured window).
    typealias Progress = (Double, Int) -> Void

    static func run(_ workload: Workload, path: String, sizeBytes: Int64, progress: Progress?) throws -> BenchResult {
        if let problem = workload.validate() {
            throw DirectIOError(.invalidArgument, operation: "bench", path: path, detail: problem)
        }
        var notes: [String] = []
        // fio's ring flags: this loop stays on one thread.
        let engine = try IOEngine(workload.engine, queueDepth: workload.iodepth, ringFlags: .threadPerCore)
        notes += engine.notes
        // ... and drops the engine on it: its enters may use a registered ring descriptor.
        _ = engine.registerRingDescriptor()
        let pool = try BufferPool(count: workload.iodepth, bufferBytes: workload.maxBlockBytes + workload.bufferOffset, hugePages: workload.hugePages)
        notes += pool.mapping.notes
        var registered = false
        if workload.buffers == .registered {
            let registration = engine.registering(pool)
            if case .registered = registration { registered = true } else { notes.append(registration.description) }
        }
        let access: OpenOptions.Access = workload.pattern.writes ? .readWrite : .readOnly
        let file = try DirectFile(path: path, options: OpenOptions(access: access, directIO: workload.mode == .direct ? .required : .disabled), engine: engine)
        if workload.mode == .buffered {
            // fio's invalidate=1: start buffered jobs with a cold cache.
            try file.dropCachedPages()
        }

        // The loop's state is reached through a pointer: a variable captured by the closures
        // below would pay a dynamic exclusivity check on every access (callgrind measured
        // about 200 instructions per I/O, BENCHMARKS.md).
        let state = UnsafeMutablePointer<LoopState>.allocate(capacity: 1)
        state.initialize(to: LoopState(workload: workload, sizeBytes: sizeBytes))
        defer {
            state.deinitialize(count: 1)
            state.deallocate()
        }
        let unaligned = workload.unaligned
        func submit(_ buffer: consuming PoolBuffer, at now: UInt64) throws(DirectIOError) {
            state.pointee.submittedAt[buffer.index] = now
            var count = workload.blockBytes
            let offset: Int64
            if unaligned {
                // --blockalign / --bsrange: any offset and length (realigned in steps).
                count = workload.nextSize(&state.pointee.random)
                offset = workload.nextOffset(count: count, sizeBytes: sizeBytes, sequential: &state.pointee.nextSequential, &state.pointee.random)
            } else {
                offset = state.pointee.nextOffset()
            }
            if workload.atomic {
                try file.submitAtomicWrite(buffer, count: count, at: offset, tag: 1)
            } else if state.pointee.nextIsWrite() {
                try file.submitWrite(buffer, bufferOffset: workload.bufferOffset, count: count, at: offset, tag: 1)
            } else {
                try file.submitRead(into: buffer, bufferOffset: workload.bufferOffset, count: count, at: offset, tag: 0)
            }
        }

        // Write jobs write random data (filled once: fio's default, refill_buffers off).
        var data = SplitMix(seed: workload.seed ^ 0xDA7A)
        while var buffer = pool.take() {
            buffer.withUnsafeMutableBytes { data.fill($0) }
            try submit(buffer, at: ProcessClock.nanoseconds())
        }

        let start = ProcessClock.nanoseconds()
        let rampEnd = start + UInt64(workload.rampSeconds * 1e9)
        let end = rampEnd + UInt64(workload.runtimeSeconds * 1e9)
        state.pointee.measuring = workload.rampSeconds == 0
        var measureStart = start
        var cpuStart = ProcessClock.cpuSeconds()
        var statisticsStart = engine.statistics
        var nextProgress = start + 500_000_000

        while true {
            state.pointee.batchNow = 0
            // By default one completion per call, resubmitted at once: see IOEngine.reap(maximum:).
            try engine.reap(minimum: 1, maximum: workload.reapBatch) { completion in
                var completion = completion
                guard let buffer = completion.takeBuffer() else { return }
                if state.pointee.batchNow == 0 { state.pointee.batchNow = ProcessClock.nanoseconds() }
                if let errno = completion.outcome.errno {
                    if state.pointee.failure == nil {
                        state.pointee.failure = .system(errno, operation: completion.tag == 1 ? "write" : "read", call: completion.opcode.description, path: path, offset: completion.offset, length: workload.blockBytes)
                    }
                    return
                }
                state.pointee.record(buffer.index, bytes: completion.outcome.bytes)
                if state.pointee.failure == nil {
                    do throws(DirectIOError) { try submit(buffer, at: state.pointee.batchNow) } catch { state.pointee.failure = error }
                }
            }
            if let failure = state.pointee.failure { throw failure }
            let now = state.pointee.batchNow == 0 ? ProcessClock.nanoseconds() : state.pointee.batchNow
            if !state.pointee.measuring && now >= rampEnd {
                state.pointee.measuring = true
                measureStart = now
                cpuStart = ProcessClock.cpuSeconds()
                statisticsStart = engine.statistics
            }
            if now >= end { break }
            if let progress, now >= nextProgress {
                progress(Double(now - start) / 1e9, state.pointee.ios)
                nextProgress = now + 500_000_000
            }
        }
        let measureEnd = ProcessClock.nanoseconds()
        let statisticsEnd = engine.statistics
        let cpuEnd = ProcessClock.cpuSeconds()
        // Drain: the kernel finishes what is in flight before the buffers are released.
        while engine.inFlight > 0 {
            try engine.reap(minimum: 1) { _ in }
        }
        let ios = state.pointee.ios
        let bytes = state.pointee.bytes
        let histogram = state.pointee.histogram

        let direct = workload.mode == .direct && file.isDirect
        // Counted over the measured window, like the I/Os (completions after it are not).
        let bounced = Int64(statisticsEnd.transfers.bytesBounced - statisticsStart.transfers.bytesBounced)
        let shifted = Int64(statisticsEnd.transfers.bytesShifted - statisticsStart.transfers.bytesShifted)
        return BenchResult(
            workload: workload, engine: engine.kind, ios: ios, bytes: bytes, seconds: Double(measureEnd - measureStart) / 1e9,
            latencyP50Ns: histogram.valueAtPercentile(50), latencyP99Ns: histogram.valueAtPercentile(99), latencyP999Ns: histogram.valueAtPercentile(99.9),
            cpuUserSeconds: cpuEnd.user - cpuStart.user, cpuSystemSeconds: cpuEnd.system - cpuStart.system,
            bytesDirect: direct ? bytes - bounced : 0, bytesBounced: bounced,
            bytesShifted: shifted, registeredBuffers: registered, notes: notes)
    }

    /// Everything the loop changes per I/O, in one value.
    private struct LoopState {
        let pattern: Workload.Pattern
        let blockBytes: Int64
        let blocks: UInt64
        let sizeBytes: Int64
        var random: SplitMix
        var nextSequential: Int64 = 0
        var submittedAt: [UInt64]
        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var measuring = false
        var batchNow: UInt64 = 0
        var ios = 0
        var bytes: Int64 = 0
        var failure: DirectIOError? = nil

        init(workload: Workload, sizeBytes: Int64) {
            pattern = workload.pattern
            blockBytes = Int64(workload.blockBytes)
            blocks = UInt64(sizeBytes / Int64(workload.blockBytes))
            self.sizeBytes = sizeBytes
            random = SplitMix(seed: workload.seed)
            submittedAt = [UInt64](repeating: 0, count: workload.iodepth)
            histogram.autoResize = true
        }

        mutating func nextOffset() -> Int64 {
            if pattern.isRandom { return Int64(random.next() % blocks) * blockBytes }
            let offset = nextSequential
            nextSequential += blockBytes
            if nextSequential + blockBytes > sizeBytes { nextSequential = 0 }
            return offset
        }

        mutating func nextIsWrite() -> Bool {
            switch pattern {
            case .read, .randread: false
            case .write, .randwrite: true
            case .randrw: random.next() & 1 == 1  // fio's default rwmixread=50
            }
        }

        mutating func record(_ bufferIndex: Int, bytes moved: Int) {
            guard measuring else { return }
            _ = histogram.record(batchNow &- submittedAt[bufferIndex])
            ios += 1
            bytes += Int64(moved)
        }
    }

}
