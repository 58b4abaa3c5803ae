import DirectIO

/// One `dio verify` run: the write pass and the verify pass.
struct VerifyRun {
    let path: String
    let sizeBytes: Int
    let blockBytes: Int
    let iodepth: Int
    let bufferOffset: Int
    let offsetJitter: Int
    let seed: UInt64
    let sequence: UInt32
    let phase: Verify.Phase
    let engine: IOEngine.Choice

    var blocks: Int { (sizeBytes - offsetJitter) / blockBytes }
    func offset(ofBlock block: Int) -> Int64 { Int64(offsetJitter + block * blockBytes) }

    func run() throws(DirectIOError) -> VerifyReport {
        let engine = try IOEngine(self.engine, queueDepth: iodepth)
        let pool = try BufferPool(count: iodepth, bufferBytes: blockBytes + bufferOffset)
        engine.register(pool)
        let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: engine)
        var report = VerifyReport()
        if phase != .verify {
            try write(file, engine: engine, pool: pool, report: &report)
            try file.sync(dataOnly: true)
        }
        if phase != .write {
            try verify(file, engine: engine, pool: pool, report: &report)
        }
        return report
    }

    /// Aligned file offsets go batched, `iodepth` in flight (memory misaligned by
    /// `bufferOffset` is realigned in each buffer); jittered offsets need read-modify-write,
    /// which the synchronous calls do, one block at a time.
    private var batched: Bool { offsetJitter == 0 }

    private func write(_ file: borrowing DirectFile, engine: IOEngine, pool: BufferPool, report: inout VerifyReport) throws(DirectIOError) {
        var next = 0
        var failure: DirectIOError? = nil
        while next < blocks || engine.inFlight > 0 {
            while next < blocks, var buffer = pool.take() {
                let offset = offset(ofBlock: next)
                buffer.withUnsafeMutableBytes { raw in
                    VerifyBlock.fill(UnsafeMutableRawBufferPointer(rebasing: raw[bufferOffset..<bufferOffset + blockBytes]), offset: UInt64(offset), seed: seed, sequence: sequence)
                }
                if batched {
                    try file.submitWrite(buffer, bufferOffset: bufferOffset, count: blockBytes, at: offset, tag: UInt64(next))
                } else {
                    let written = try file.write(UnsafeRawBufferPointer(start: buffer.baseAddress + bufferOffset, count: blockBytes), at: offset)
                    if written != blockBytes {
                        throw DirectIOError(.ioError, operation: "verify write", path: path, offset: offset, length: blockBytes, detail: "short write: \(written) bytes")
                    }
                    report.bytesWritten += written
                }
                next += 1
            }
            guard engine.inFlight > 0 else { continue }
            try engine.reap(minimum: 1) { completion in
                if let errno = completion.outcome.errno, failure == nil {
                    failure = .system(errno, operation: "verify write", call: completion.opcode.description, path: path, offset: completion.offset, length: blockBytes)
                }
                report.bytesWritten += completion.outcome.bytes
            }
            if let failure { throw failure }
        }
    }

    private func verify(_ file: borrowing DirectFile, engine: IOEngine, pool: BufferPool, report: inout VerifyReport) throws(DirectIOError) {
        var next = 0
        var failure: DirectIOError? = nil
        while next < blocks || engine.inFlight > 0 {
            while next < blocks, let buffer = pool.take() {
                let offset = offset(ofBlock: next)
                if batched {
                    try file.submitRead(into: buffer, bufferOffset: bufferOffset, count: blockBytes, at: offset, tag: UInt64(next))
                } else {
                    let raw = UnsafeMutableRawBufferPointer(start: buffer.baseAddress + bufferOffset, count: blockBytes)
                    let got = try file.read(into: raw, at: offset)
                    report.bytesVerified += got
                    report.record(got == blockBytes ? VerifyBlock.check(UnsafeRawBufferPointer(raw), offset: UInt64(offset), seed: seed, sequence: sequence) : .corrupt, offset: offset)
                    _ = consume buffer  // back to the pool: the read above has completed
                }
                next += 1
            }
            guard engine.inFlight > 0 else { continue }
            try engine.reap(minimum: 1) { completion in
                var completion = completion
                guard let buffer = completion.takeBuffer() else { return }
                if let errno = completion.outcome.errno {
                    if failure == nil { failure = .system(errno, operation: "verify read", call: completion.opcode.description, path: path, offset: completion.offset, length: blockBytes) }
                    return
                }
                report.bytesVerified += completion.outcome.bytes
                let bytes = UnsafeRawBufferPointer(start: buffer.baseAddress + bufferOffset, count: blockBytes)
                let verdict = completion.outcome.bytes == blockBytes ? VerifyBlock.check(bytes, offset: UInt64(completion.offset), seed: seed, sequence: sequence) : .corrupt
                report.record(verdict, offset: completion.offset)
            }
            if let failure { throw failure }
        }
    }
}
