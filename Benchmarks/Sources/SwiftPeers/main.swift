// 4 KiB random reads at queue depth 32, for a fixed time, through three libraries, on the
// same file in the same run, alternating the libraries round by round:
//  - DirectIO: O_DIRECT, io_uring with fixed buffers and files, submit-as-you-reap;
//  - swift-system's IORing: O_DIRECT, registered buffers, batch prepare/submit/consume (its
//    completion callback cannot queue new requests, so the batch is resubmitted after);
//  - SwiftNIO's NIOFileSystem: buffered (it has no O_DIRECT), 32 concurrent tasks calling
//    readChunk, each a pread on NIO's blocking thread pool. The page cache is dropped first.
//
// Usage: swift run -c release SwiftPeers FILE [SECONDS] [ROUNDS]
import DirectIO
import Glibc
import NIOFileSystem
import SystemPackage

func twoDigits(_ value: Double) -> String {
    let scaled = Int((value * 100).rounded())
    return "\(scaled / 100).\(String(repeating: "0", count: scaled % 100 < 10 ? 1 : 0))\(scaled % 100)"
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    print("usage: SwiftPeers FILE [SECONDS] [ROUNDS]   (FILE: at least 64 MiB of data, e.g. from dio bench FILE --size 1g)")
    exit(2)
}
let path = arguments[1]
let seconds = arguments.count > 2 ? Double(arguments[2]) ?? 5 : 5
let rounds = arguments.count > 3 ? Int(arguments[3]) ?? 3 : 3
let depth = 32
let blockBytes = 4096

struct Measurement {
    var ios: Int
    var seconds: Double
    var cpu: Double
    var iops: Double { Double(ios) / seconds }
    var cpuMicrosecondsPerIO: Double { cpu * 1e6 / Double(max(ios, 1)) }
}

struct Random {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func fileBlocks() -> UInt64 {
    var st = stat()
    guard stat(path, &st) == 0, st.st_size >= 64 << 20 else {
        print("\(path): needs at least 64 MiB of data")
        exit(2)
    }
    return UInt64(st.st_size) / UInt64(blockBytes)
}
let blocks = fileBlocks()

func measure(_ body: (_ deadline: UInt64) throws -> Int) rethrows -> Measurement {
    let cpuStart = ProcessClock.cpuSeconds()
    let start = ProcessClock.nanoseconds()
    let ios = try body(start + UInt64(seconds * 1e9))
    let elapsed = Double(ProcessClock.nanoseconds() - start) / 1e9
    let cpuEnd = ProcessClock.cpuSeconds()
    return Measurement(ios: ios, seconds: elapsed, cpu: cpuEnd.user - cpuStart.user + cpuEnd.system - cpuStart.system)
}

// MARK: DirectIO

func runDirectIO(seed: UInt64) throws -> Measurement {
    let engine = try IOEngine(.ioUring, queueDepth: depth, ringFlags: .threadPerCore)
    let pool = try BufferPool(count: depth, bufferBytes: blockBytes)
    engine.register(pool)
    let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
    var random = Random(state: seed)
    return try measure { deadline in
        while let buffer = pool.take() {
            try file.submitRead(into: buffer, at: Int64(random.next() % blocks) * Int64(blockBytes), tag: 0)
        }
        var ios = 0
        var failure: (any Error)? = nil
        while ProcessClock.nanoseconds() < deadline {
            try engine.reap(minimum: 1, maximum: 1) { completion in
                var completion = completion
                guard let buffer = completion.takeBuffer() else { return }
                ios += 1
                do { try file.submitRead(into: buffer, at: Int64(random.next() % blocks) * Int64(blockBytes), tag: 0) } catch { failure = error }
            }
            if let failure { throw failure }
        }
        while engine.inFlight > 0 { try engine.reap(minimum: 1) { _ in } }
        return ios
    }
}

// MARK: swift-system IORing

func runSystemIORing(seed: UInt64) throws -> Measurement {
    var ring = try IORing(queueDepth: UInt32(depth * 2), flags: [.singleSubmissionThread, .deferRunningTasks])
    var memory: UnsafeMutableRawPointer? = nil
    guard posix_memalign(&memory, 4096, depth * blockBytes) == 0, let memory else { throw Errno.noMemory }
    defer { free(memory) }
    let regions = (0..<depth).map { UnsafeMutableRawBufferPointer(start: memory + $0 * blockBytes, count: blockBytes) }
    try ring.registerBuffers(regions)
    let fd = try FileDescriptor.open(FilePath(path), .readOnly, options: FileDescriptor.OpenOptions(rawValue: 0o40000))  // O_DIRECT
    defer { try? fd.close() }
    var random = Random(state: seed)
    return try measure { deadline in
        for index in 0..<depth {
            _ = ring.prepare(request: .read(fd, into: ring.registeredBuffers[index], at: (random.next() % blocks) * UInt64(blockBytes), context: UInt64(index)))
        }
        try ring.submitPreparedRequests()
        var ios = 0
        var inFlight = depth
        var finished: [Int] = []
        finished.reserveCapacity(depth)
        while inFlight > 0 {
            finished.removeAll(keepingCapacity: true)
            try ring.blockingConsumeCompletions(minimumCount: 1) { (completion: consuming IORing.Completion?, error: Errno?, done: Bool) throws(Errno) in
                if let error { throw error }
                guard let completion else { return }
                guard completion.result == Int32(blockBytes) else { throw Errno(rawValue: -completion.result) }
                finished.append(Int(completion.context))
            }
            inFlight -= finished.count
            ios += finished.count
            if ProcessClock.nanoseconds() < deadline {
                for index in finished {
                    _ = ring.prepare(request: .read(fd, into: ring.registeredBuffers[index], at: (random.next() % blocks) * UInt64(blockBytes), context: UInt64(index)))
                    inFlight += 1
                }
                try ring.submitPreparedRequests()
            }
        }
        return ios
    }
}

// MARK: NIOFileSystem

func runNIOFileSystem(seed: UInt64) async throws -> Measurement {
    // Buffered only: drop the cache so reads reach the disk, as fio's invalidate=1 does.
    let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly, directIO: .disabled))
    try file.dropCachedPages()
    let cpuStart = ProcessClock.cpuSeconds()
    let start = ProcessClock.nanoseconds()
    let deadline = start + UInt64(seconds * 1e9)
    let ios = try await FileSystem.shared.withFileHandle(forReadingAt: FilePath(path)) { handle in
        try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<depth {
                group.addTask {
                    var random = Random(state: seed &+ UInt64(task))
                    var count = 0
                    while ProcessClock.nanoseconds() < deadline {
                        let offset = Int64(random.next() % blocks) * Int64(blockBytes)
                        let chunk = try await handle.readChunk(fromAbsoluteOffset: offset, length: .bytes(Int64(blockBytes)))
                        guard chunk.readableBytes == blockBytes else { throw Errno.ioError }
                        count += 1
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
    }
    let elapsed = Double(ProcessClock.nanoseconds() - start) / 1e9
    let cpuEnd = ProcessClock.cpuSeconds()
    return Measurement(ios: ios, seconds: elapsed, cpu: cpuEnd.user - cpuStart.user + cpuEnd.system - cpuStart.system)
}

// MARK: Rounds

var results: [String: [Measurement]] = [:]
let order = ["DirectIO", "swift-system IORing", "NIOFileSystem"]
for round in 0..<rounds {
    // Rotate the order each round so no library always runs first or last.
    for offset in 0..<order.count {
        let name = order[(round + offset) % order.count]
        let seed = UInt64(round * 10 + offset + 1)
        let result: Measurement
        switch name {
        case "DirectIO": result = try runDirectIO(seed: seed)
        case "swift-system IORing": result = try runSystemIORing(seed: seed)
        default: result = try await runNIOFileSystem(seed: seed)
        }
        results[name, default: []].append(result)
        print("round \(round + 1) \(name): \(Int(result.iops)) IOPS, \(twoDigits(result.cpuMicrosecondsPerIO)) µs CPU/IO")
        usleep(1_000_000)
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}
let baseline = median(results["DirectIO", default: []].map(\.iops))
print("")
print("| library | mode | IOPS min / median / max | vs DirectIO (median) | CPU µs per I/O (median) |")
print("| --- | --- | --- | --- | --- |")
for name in order {
    let runs = results[name, default: []]
    let iops = runs.map(\.iops)
    let mode = name == "NIOFileSystem" ? "buffered, cold cache" : "O_DIRECT"
    print("| \(name) | \(mode) | \(Int(iops.min() ?? 0)) / \(Int(median(iops))) / \(Int(iops.max() ?? 0)) | \(twoDigits(median(iops) / baseline)) | \(twoDigits(median(runs.map(\.cpuMicrosecondsPerIO)))) |")
}
