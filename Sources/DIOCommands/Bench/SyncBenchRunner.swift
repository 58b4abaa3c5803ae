import CDirectIO
import DirectIO
import Glibc
import DirectIOLog
import Histogram

/// Runs one job as `iodepth` threads, each making one I/O at a time at any offset, length and
/// memory: through `DirectFile` (`--api sync`; each thread has its own engine and file, as
/// threads of a server would, and they share the block locks), or as plain O_DIRECT
/// pread/pwrite doing the least an unaligned request needs (`--api posix`), the floor `sync` is
/// measured against in one run.
enum SyncBenchRunner {
    static func run(_ workload: Workload, path: String, sizeBytes: Int64) throws -> BenchResult {
        if let problem = workload.validate() {
            throw DirectIOError(.invalidArgument, operation: "bench", path: path, detail: problem)
        }
        // --api log: every thread appends to one log, a new file beside the target.
        let logPath = path + ".log"
        var log: DurableLog? = nil
        if workload.api == .log {
            _ = unlink(logPath)
            log = try DurableLog(path: logPath)
        }
        defer { if log != nil { _ = unlink(logPath) } }
        let start = ProcessClock.nanoseconds()
        let window = (start: start + UInt64(workload.rampSeconds * 1e9), end: start + UInt64((workload.rampSeconds + workload.runtimeSeconds) * 1e9))
        let callers = (0..<workload.iodepth).map { Caller(index: $0, workload: workload, path: path, sizeBytes: sizeBytes, window: window, log: log) }
        for caller in callers { try caller.start() }
        // CPU over the measured window, taken here at its edges.
        func sleep(until deadline: UInt64) {
            let now = ProcessClock.nanoseconds()
            if deadline > now { usleep(UInt32(min((deadline - now) / 1000, UInt64(UInt32.max)))) }
        }
        sleep(until: window.start)
        let cpuStart = ProcessClock.cpuSeconds()
        sleep(until: window.end)
        let cpuEnd = ProcessClock.cpuSeconds()
        for caller in callers { caller.join() }
        if let failure = callers.lazy.compactMap(\.failure).first { throw failure }

        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        histogram.autoResize = true
        for caller in callers { histogram.add(caller.histogram) }
        let ios = callers.reduce(0) { $0 + $1.ios }
        let bytes = callers.reduce(Int64(0)) { $0 + $1.bytes }
        let bounced = callers.reduce(Int64(0)) { $0 + $1.bytesBounced }
        return BenchResult(
            workload: workload, engine: callers[0].kind, ios: ios, bytes: bytes, seconds: Double(window.end - window.start) / 1e9,
            latencyP50Ns: histogram.valueAtPercentile(50), latencyP99Ns: histogram.valueAtPercentile(99), latencyP999Ns: histogram.valueAtPercentile(99.9),
            cpuUserSeconds: cpuEnd.user - cpuStart.user, cpuSystemSeconds: cpuEnd.system - cpuStart.system,
            bytesDirect: bytes - bounced, bytesBounced: bounced, bytesShifted: 0, registeredBuffers: false, notes: callers[0].notes)
    }
}

/// One caller thread and what it measured. Its fields are written by its thread only, and read
/// by the starting thread only after `join()` returns (pthread_join orders the two).
private final class Caller {
    let index: Int
    let workload: Workload
    let path: String
    let sizeBytes: Int64
    let window: (start: UInt64, end: UInt64)
    private var thread = pthread_t()
    var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    var ios = 0
    var bytes: Int64 = 0
    var bytesBounced: Int64 = 0
    var kind = EngineKind.blocking
    var notes: [String] = []
    var failure: (any Error)?
    let log: DurableLog?

    init(index: Int, workload: Workload, path: String, sizeBytes: Int64, window: (start: UInt64, end: UInt64), log: DurableLog?) {
        self.log = log
        self.index = index
        self.workload = workload
        self.path = path
        self.sizeBytes = sizeBytes
        self.window = window
        histogram.autoResize = true
    }

    func start() throws {
        let context = Unmanaged.passRetained(self).toOpaque()
        let created = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            let caller = Unmanaged<Caller>.fromOpaque(raw).takeRetainedValue()
            do { try caller.loop() } catch { caller.failure = error }
            return nil
        }, context)
        if created != 0 {
            Unmanaged<Caller>.fromOpaque(context).release()
            throw DirectIOError(.unexpected, operation: "bench", path: path, detail: "pthread_create failed (\(created))")
        }
    }

    func join() { pthread_join(thread, nil) }

    /// One I/O at a time until the window ends. The engine is made here: a thread-per-core
    /// ring belongs to the thread that created it.
    private func loop() throws {
        let io: any OneAtATime = if let log {
            LogIO(log, syncEvery: workload.fdatasyncEvery)
        } else if workload.api == .posix {
            try PlainIO(path: path, workload: workload)
        } else {
            try DirectFileIO(path: path, workload: workload)
        }
        kind = io.kind
        notes = io.notes
        let memory = try AlignedBuffer(byteCount: workload.maxBlockBytes + workload.bufferOffset)
        var random = SplitMix(seed: workload.seed &+ UInt64(index) &* 0x9E37_79B9)
        random.fill(UnsafeMutableRawBufferPointer(start: memory.baseAddress, count: memory.count))
        // Sequential callers take turns through the file: each starts at its own slice.
        var sequential = sizeBytes / Int64(workload.iodepth) * Int64(index)
        var writes = 0
        var bouncedAtStart: Int64? = nil
        var now = ProcessClock.nanoseconds()
        while now < window.end {
            let count = workload.nextSize(&random)
            let offset = workload.nextOffset(count: count, sizeBytes: sizeBytes, sequential: &sequential, &random)
            let isWrite = workload.pattern == .randrw ? random.next() & 1 == 1 : workload.pattern.writes
            let buffer = UnsafeMutableRawBufferPointer(start: memory.baseAddress + workload.bufferOffset, count: count)
            let submitted = now
            if submitted >= window.start && bouncedAtStart == nil { bouncedAtStart = io.bytesBounced }
            let moved = isWrite ? try io.write(UnsafeRawBufferPointer(buffer), at: offset) : try io.read(into: buffer, at: offset)
            if isWrite {
                writes += 1
                if workload.fdatasyncEvery > 0 && writes % workload.fdatasyncEvery == 0 { try io.syncData() }
            }
            now = ProcessClock.nanoseconds()
            if submitted >= window.start && now <= window.end {
                _ = histogram.record(now - submitted)
                ios += 1
                bytes += Int64(moved)
            }
        }
        bytesBounced = io.bytesBounced - (bouncedAtStart ?? io.bytesBounced)
    }
}

/// One I/O at a time, one way or the other.
private protocol OneAtATime {
    var kind: EngineKind { get }
    var notes: [String] { get }
    var bytesBounced: Int64 { get }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int
    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int
    func syncData() throws
}

/// `--api sync`: DirectFile's synchronous calls (bounce buffers and read-modify-write).
private final class DirectFileIO: OneAtATime {
    let engine: IOEngine
    let file: DirectFile
    let atomic: Bool

    init(path: String, workload: Workload) throws {
        engine = try IOEngine(workload.engine, queueDepth: 8, ringFlags: .threadPerCore)
        atomic = workload.atomic
        let access: OpenOptions.Access = workload.pattern.writes ? .readWrite : .readOnly
        file = try DirectFile(path: path, options: OpenOptions(access: access, directIO: workload.mode == .direct ? .required : .disabled), engine: engine)
    }

    var kind: EngineKind { engine.kind }
    var notes: [String] { engine.notes }
    var bytesBounced: Int64 { Int64(file.statistics.bytesBounced) }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int { try file.read(into: buffer, at: offset) }
    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        atomic ? try file.atomicWrite(buffer, at: offset) : try file.write(buffer, at: offset)
    }
    func syncData() throws { try file.sync(dataOnly: true) }
}

/// `--api log`: appends to a `DurableLog` shared by every thread. Each record is durable when
/// its write returns, or with `--fdatasync N`, the N records of a thread are appended together
/// (one wait) at its Nth write, as a caller of `append(contentsOf:)` would.
private final class LogIO: OneAtATime {
    let log: DurableLog
    let syncEvery: Int
    var pending: [[UInt8]] = []

    init(_ log: DurableLog, syncEvery: Int) {
        self.log = log
        self.syncEvery = syncEvery
    }

    var kind: EngineKind { log.usesIOUring ? .ioUring : .blocking }
    var notes: [String] { ["log \(log.path), \(log.blockBytes)-byte blocks"] }
    var bytesBounced: Int64 { 0 }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        throw DirectIOError(.invalidArgument, operation: "bench", path: log.path, detail: "--api log only appends")
    }
    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        if syncEvery <= 1 {
            _ = try log.append(buffer)
        } else {
            pending.append([UInt8](buffer))
        }
        return buffer.count
    }
    func syncData() throws {
        guard !pending.isEmpty else { return }
        _ = try log.append(contentsOf: pending)
        pending.removeAll(keepingCapacity: true)
    }
}

/// `--api posix`: plain O_DIRECT pread/pwrite with the least work an unaligned request needs.
/// A read is widened to whole blocks and copied out; a write reads the blocks it covers only
/// partly (the whole covering range in one pread when that is at most 64 KiB, else each edge
/// block), copies the data in and writes the covering blocks.
private final class PlainIO: OneAtATime {
    let fd: Int32
    let block: Int64
    let scratch: AlignedBuffer
    let path: String

    init(path: String, workload: Workload) throws {
        self.path = path
        // Buffered (--mode buffered): plain pread/pwrite through the page cache, no alignment.
        let direct = workload.mode == .direct
        block = direct ? Int64(max(try DeviceLimits.of(path: path).offsetAlignment, 1)) : 1
        scratch = try AlignedBuffer(byteCount: workload.maxBlockBytes + 2 * Int(block))
        fd = open(path, (workload.pattern.writes ? O_RDWR : O_RDONLY) | O_CLOEXEC | (direct ? DIO_O_DIRECT : 0))
        guard fd >= 0 else { throw DirectIOError(.ioError, operation: "bench (posix)", path: path, detail: "open\(direct ? " with O_DIRECT" : "") failed (errno \(errno))") }
    }

    deinit { close(fd) }

    var kind: EngineKind { .blocking }
    var notes: [String] { [] }
    var bytesBounced: Int64 { 0 }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        let start = offset / block * block
        let end = (offset + Int64(buffer.count) + block - 1) / block * block
        // Short only at the end of the file, past the caller's range.
        try full(pread(fd, scratch.baseAddress, Int(end - start), off_t(start)), Int(offset - start) + buffer.count, "pread", start)
        buffer.copyMemory(from: UnsafeRawBufferPointer(start: scratch.baseAddress + Int(offset - start), count: buffer.count))
        return buffer.count
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        let start = offset / block * block
        let end = (offset + Int64(buffer.count) + block - 1) / block * block
        let headPartial = offset != start
        let tailPartial = offset + Int64(buffer.count) != end
        if headPartial && tailPartial && end - start <= 65536 {
            try full(pread(fd, scratch.baseAddress, Int(end - start), off_t(start)), Int(end - start), "pread", start)
        } else {
            if headPartial { try full(pread(fd, scratch.baseAddress, Int(block), off_t(start)), Int(block), "pread", start) }
            if tailPartial && (end - block > start || !headPartial) {
                try full(pread(fd, scratch.baseAddress + Int(end - block - start), Int(block), off_t(end - block)), Int(block), "pread", end - block)
            }
        }
        (scratch.baseAddress + Int(offset - start)).copyMemory(from: buffer.baseAddress.unsafelyUnwrapped, byteCount: buffer.count)
        try full(pwrite(fd, scratch.baseAddress, Int(end - start), off_t(start)), Int(end - start), "pwrite", start)
        return buffer.count
    }

    func syncData() throws {
        guard fdatasync(fd) == 0 else { throw DirectIOError(.ioError, operation: "bench (posix)", path: path, detail: "fdatasync failed (errno \(errno))") }
    }

    /// Throws unless the call moved at least `expected` bytes.
    private func full(_ result: Int, _ expected: Int, _ call: String, _ offset: Int64) throws {
        guard result >= expected else {
            throw DirectIOError(.ioError, operation: "bench (posix)", path: path, offset: offset, length: expected,
                                detail: result < 0 ? "\(call) failed (errno \(errno))" : "\(call) moved \(result) of \(expected) bytes")
        }
    }
}
