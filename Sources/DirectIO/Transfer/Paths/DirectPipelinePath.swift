import Glibc
import SystemPackage

/// O_DIRECT reads into pinned pool buffers and O_DIRECT writes from the same buffers, several
/// in flight: the bytes go device → memory → device by DMA, never through the page cache or a
/// user-space copy. The right path for copies much larger than memory, which would otherwise
/// evict everything else from the page cache.
///
/// Direct I/O moves whole blocks, so the pipeline moves the block-aligned middle of a range;
/// a partial block at either end (less than one block) goes through the splice path, which
/// also copies nothing through user memory. Source and destination offsets must be congruent
/// modulo the block size (they are for whole-file copies).
final class DirectPipelinePath: TransferPath {
    let strategy = TransferStrategy.direct
    private let source: TransferEndpoint
    private let destination: TransferEndpoint
    private let engine: IOEngine
    private let sourceFile: DirectFile
    private let destinationFile: DirectFile
    private let pool: BufferPool
    /// The larger of both files' direct-I/O offset alignments.
    private let block: Int64
    private var edges: SplicePath?

    init(source: TransferEndpoint, destination: TransferEndpoint, buffers: Int, bufferBytes: Int) throws(PathFailure) {
        self.source = source
        self.destination = destination
        let engine: IOEngine
        do { engine = try IOEngine(queueDepth: max(1, buffers)) } catch { throw .failed(error) }
        // Reopen both files by /proc/self/fd: O_DIRECT is a property of the open file
        // description, and the caller's descriptors must keep theirs.
        sourceFile = try Self.reopen(source, access: .readOnly, engine: engine)
        destinationFile = try Self.reopen(destination, access: .writeOnly, engine: engine)
        let block = max(sourceFile.limits.offsetAlignment, sourceFile.limits.readOffsetAlignment, destinationFile.limits.offsetAlignment)
        do { pool = try BufferPool(count: max(1, buffers), bufferBytes: max(bufferBytes, block)) } catch { throw .failed(error) }
        self.block = Int64(block)
        self.engine = engine
        engine.register(pool)
    }

    private static func reopen(_ endpoint: TransferEndpoint, access: OpenOptions.Access, engine: IOEngine) throws(PathFailure) -> DirectFile {
        do {
            return try DirectFile(path: endpoint.reopenPath, options: OpenOptions(access: access, directIO: .required, misaligned: .fail), engine: engine)
        } catch where error.code == .directIOUnsupported {
            throw .unsupported("\(endpoint.label): \(error.detail ?? "O_DIRECT refused")", moved: 0)
        } catch {
            throw .failed(error.naming(endpoint.label))
        }
    }

    func move(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        guard let count = range.count, count > 0 else { return 0 }
        guard range.sourceOffset % block == range.destinationOffset % block else {
            throw .unsupported("source offset \(range.sourceOffset) and destination offset \(range.destinationOffset) differ by a non-multiple of the \(block)-byte direct-I/O block", moved: 0)
        }
        let head = min(count, (block - range.sourceOffset % block) % block)
        let body = (count - head) / block * block
        let tail = count - head - body
        var moved: Int64 = 0
        if head > 0 {
            moved += try moveEdge(TransferRange(sourceOffset: range.sourceOffset, destinationOffset: range.destinationOffset, count: head), meter: &meter)
        }
        if body > 0 {
            moved += try pipeline(range.advanced(by: head), count: body, meter: &meter)
        }
        if tail > 0 {
            moved += try moveEdge(range.advanced(by: head + body), meter: &meter)
        }
        return moved
    }

    private func moveEdge(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        let path: SplicePath
        if let edges { path = edges } else {
            path = try SplicePath(source: source, destination: destination)
            edges = path
        }
        do { return try path.move(range, meter: &meter) } catch {
            if case .unsupported(let why, _) = error {
                throw .failed(DirectIOError(.unsupported, operation: "transfer (direct)", path: destination.label, offset: range.destinationOffset,
                                            detail: "the partial block at \(range.sourceOffset) could not be spliced: \(why)"))
            }
            throw error
        }
    }

    /// Moves `count` bytes (a multiple of the block) with up to `pool.count` buffers in flight:
    /// each buffer is read into, then written from, then returned to the pool.
    private func pipeline(_ range: TransferRange, count: Int64, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        let chunk = Int64(pool.bufferBytes)
        let chunks = (count + chunk - 1) / chunk
        var next: Int64 = 0
        var written: Int64 = 0
        var reported: Int64 = 0
        /// Requests submitted and not yet reaped (the engine's `inFlight` leaves out finished
        /// ones waiting to be reaped, which still hold buffers).
        var outstanding = 0
        var failure: PathFailure? = nil
        func length(of index: Int64) -> Int { Int(min(chunk, count - index * chunk)) }
        while failure == nil && (next < chunks || outstanding > 0) {
            while failure == nil && next < chunks, let buffer = pool.take() {
                do {
                    try sourceFile.submitRead(into: buffer, count: length(of: next), at: range.sourceOffset + next * chunk, tag: UInt64(next) << 1)
                    next += 1
                    outstanding += 1
                } catch {
                    failure = .failed(error.naming(source.label))
                }
            }
            guard outstanding > 0 else { break }
            do throws(DirectIOError) {
                try engine.reap(minimum: 1) { (completion: consuming IOCompletion) in
                    var completion = completion
                    outstanding -= 1
                    let index = Int64(completion.tag >> 1)
                    let isWrite = completion.tag & 1 == 1
                    let expected = length(of: index)
                    let offset = (isWrite ? range.destinationOffset : range.sourceOffset) + index * chunk
                    if let errno = completion.outcome.errno {
                        failure = failure ?? .failed(.system(errno, operation: "transfer (direct)", call: isWrite ? "write" : "read",
                                                             path: isWrite ? destination.label : source.label, offset: offset + Int64(completion.outcome.bytes)))
                        return
                    }
                    guard completion.outcome.bytes == expected else {
                        failure = failure ?? .failed(DirectIOError(isWrite ? .noSpace : .ioError, operation: "transfer (direct)", path: isWrite ? destination.label : source.label,
                                                                   offset: offset + Int64(completion.outcome.bytes), length: expected,
                                                                   detail: isWrite ? "the device took \(completion.outcome.bytes) of \(expected) bytes" : "the source ended early (it shrank during the transfer)"))
                        return
                    }
                    if isWrite {
                        written += Int64(expected)
                        // Progress (and cancellation) per chunk, not per reap: the blocking
                        // engine finishes a whole pool's worth of writes in one reap.
                        failure = failure ?? meter.catchUp(to: written, reported: &reported, reaching: range.destinationOffset + written)
                        return  // the buffer goes back to the pool as the completion is dropped
                    }
                    guard failure == nil, let buffer = completion.takeBuffer() else { return }
                    do throws(DirectIOError) {
                        try destinationFile.submitWrite(buffer, count: expected, at: offset - range.sourceOffset + range.destinationOffset, tag: UInt64(index) << 1 | 1)
                        outstanding += 1
                    } catch {
                        failure = .failed(error.naming(destination.label))
                    }
                }
            } catch {
                failure = failure ?? .failed(error)
            }
            if failure == nil { failure = meter.catchUp(to: written, reported: &reported, reaching: range.destinationOffset + written) }
        }
        // Whatever happened, no buffer leaves this function while the kernel may use it.
        engine.drain(&outstanding)
        if let failure { throw failure }
        return written
    }
}
