import Glibc
import SystemPackage

/// File → socket with io_uring SEND_ZC: the file is read (O_DIRECT where the filesystem
/// allows) into registered, pinned pool buffers, and each buffer is sent from where it lies.
/// The network stack keeps referring to the buffer after the send's first completion, until
/// the notification completion (IORING_CQE_F_NOTIF); the engine holds the buffer until then,
/// also when the send failed, so it cannot be refilled while the NIC may still read it.
///
/// Reads run ahead (up to the pool's size); sends go one at a time, in order: a byte stream
/// must not be reordered, and two sends in flight on one socket may complete out of order.
final class ZeroCopySendPath: TransferPath {
    let strategy = TransferStrategy.zeroCopySend
    private let source: TransferEndpoint
    private let destination: TransferEndpoint
    private let engine: IOEngine
    private let sourceFile: DirectFile
    private let pool: BufferPool
    private(set) var sends = 0
    private(set) var sendsCopied = 0

    init(source: TransferEndpoint, destination: TransferEndpoint, buffers: Int, bufferBytes: Int) throws(PathFailure) {
        self.source = source
        self.destination = destination
        let engine: IOEngine
        do { engine = try IOEngine(.ioUring, queueDepth: max(2, buffers + 1)) } catch {
            throw .unsupported("io_uring is unavailable: \(error)", moved: 0)
        }
        guard engine.supports(.sendZeroCopy) else {
            throw .unsupported("this kernel's io_uring lacks SEND_ZC (Linux 6.0)", moved: 0)
        }
        do {
            sourceFile = try DirectFile(path: source.reopenPath, options: OpenOptions(access: .readOnly, directIO: .preferred), engine: engine)
            pool = try BufferPool(count: max(1, buffers), bufferBytes: bufferBytes)
        } catch {
            throw .failed(error.naming(source.label))
        }
        self.engine = engine
        engine.register(pool)
    }

    func move(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        guard let count = range.count, count > 0 else { return 0 }
        // A misaligned start is read block-aligned and shifted inside the buffer, which
        // needs one block of room.
        let block = Int64(sourceFile.limits.offsetAlignment)
        let chunk = Int64(pool.bufferBytes) - (range.sourceOffset % block == 0 ? 0 : block)
        let chunks = (count + chunk - 1) / chunk
        let depth = pool.count
        // Buffers whose read has finished, waiting for their turn to be sent: slot i % depth.
        let ready = UnsafeMutablePointer<PoolBuffer?>.allocate(capacity: depth)
        for slot in 0..<depth { (ready + slot).initialize(to: nil) }
        defer {
            ready.deinitialize(count: depth)
            ready.deallocate()
        }
        var nextRead: Int64 = 0
        var nextSend: Int64 = 0
        var sentOfCurrent = 0
        var sending = false
        var outstanding = 0
        var moved: Int64 = 0
        var reported: Int64 = 0
        var failure: PathFailure? = nil
        func length(of index: Int64) -> Int { Int(min(chunk, count - index * chunk)) }

        while failure == nil && (nextSend < chunks || outstanding > 0) {
            while failure == nil && nextRead < chunks && nextRead - nextSend < Int64(depth), let buffer = pool.take() {
                do throws(DirectIOError) {
                    try sourceFile.submitRead(into: buffer, count: length(of: nextRead), at: range.sourceOffset + nextRead * chunk, tag: UInt64(nextRead) << 1)
                    nextRead += 1
                    outstanding += 1
                } catch {
                    failure = .failed(error.naming(source.label))
                }
            }
            if failure == nil && !sending && nextSend < chunks, let buffer = ready[Int(nextSend % Int64(depth))].take() {
                do throws(DirectIOError) {
                    try engine.submitZeroCopySend(buffer, bufferOffset: sentOfCurrent, count: length(of: nextSend) - sentOfCurrent, to: destination.descriptor, tag: UInt64(nextSend) << 1 | 1)
                    sending = true
                    outstanding += 1
                } catch {
                    failure = .failed(error)
                }
            }
            guard outstanding > 0 else { break }
            do throws(DirectIOError) {
                try engine.reap(minimum: 1) { (completion: consuming IOCompletion) in
                    var completion = completion
                    outstanding -= 1
                    let index = Int64(completion.tag >> 1)
                    let expected = length(of: index)
                    if completion.tag & 1 == 0 {
                        // A read: it must fill the chunk (the source is not shorter than its size said).
                        if let errno = completion.outcome.errno {
                            failure = failure ?? .failed(.system(errno, operation: "transfer (send-zc)", call: "read", path: source.label, offset: range.sourceOffset + index * chunk))
                        } else if completion.outcome.bytes != expected {
                            failure = failure ?? .failed(DirectIOError(.ioError, operation: "transfer (send-zc)", path: source.label, offset: range.sourceOffset + index * chunk + Int64(completion.outcome.bytes),
                                                                       detail: "the source ended early (it shrank during the transfer)"))
                        } else {
                            ready[Int(index % Int64(depth))] = completion.takeBuffer()
                        }
                        return
                    }
                    // A send, reaped only after its notification: the buffer is free to reuse.
                    sending = false
                    sends += 1
                    if completion.outcome.copiedByKernel { sendsCopied += 1 }
                    if completion.outcome.errno == .noMemory {
                        // The kernel charges the pages a zero-copy send pins to RLIMIT_MEMLOCK
                        // (mm_account_pinned_pages): not an I/O failure, so the next path sends
                        // the rest with a copy.
                        let limit = Sys.memlockLimit().map { "\($0 / 1024) KiB" } ?? "unlimited"
                        failure = failure ?? .unsupported("SEND_ZC: out of memory: the kernel charges pages pinned by zero-copy sends to RLIMIT_MEMLOCK (\(limit) here); raise `ulimit -l` or grant CAP_IPC_LOCK", moved: moved)
                        return
                    }
                    if let errno = completion.outcome.errno {
                        failure = failure ?? .failed(.system(errno, operation: "transfer (send-zc)", call: "SEND_ZC", path: destination.label, offset: range.destinationOffset + moved))
                        return
                    }
                    sentOfCurrent += completion.outcome.bytes
                    moved += Int64(completion.outcome.bytes)
                    if sentOfCurrent < expected {
                        // A short send: the rest goes as a new send from the same buffer.
                        ready[Int(index % Int64(depth))] = completion.takeBuffer()
                    } else {
                        sentOfCurrent = 0
                        nextSend += 1
                    }
                }
            } catch {
                failure = failure ?? .failed(error)
            }
            if failure == nil { failure = meter.catchUp(to: moved, reported: &reported, reaching: range.destinationOffset + moved) }
        }
        // Whatever happened, no buffer leaves this function while the kernel may use it.
        engine.drain(&outstanding)
        if let failure { throw failure }
        return moved
    }
}
