import Glibc

/// What a completion means for the request that produced it. Pure, so it is tested alone, and
/// shared by every engine, so both engines treat results identically.
enum CompletionStep: Equatable {
    /// The request is over: `bytes` moved in total (less than asked means EOF for reads).
    case finished(bytes: Int)
    /// Submit `IOOperation.advanced(by: bytes)` for the rest; `bytes` have moved so far.
    case resubmitRemainder(bytes: Int)
    /// Submit the same operation again; nothing of it counts as done.
    case retry
    /// The request failed with this errno after `bytes` had moved.
    case failed(errno: Int32, bytes: Int)
}

enum CompletionRule {
    /// How many times one request is retried after EAGAIN/EINTR before the error is reported.
    /// EAGAIN in a CQE means the kernel could not start the I/O now (block-layer tags exhausted,
    /// a multi-bio direct I/O partly failed): liburing#766 says resubmit the whole request.
    static let retryLimit = 1_000

    /// - Parameters:
    ///   - result: the CQE's `res` (or -errno from the blocking engine).
    ///   - done: bytes moved by earlier parts of this request.
    ///   - remaining: bytes the submitted part asked for.
    ///   - retries: retries so far.
    ///   - blockBytes: the file's direct-I/O offset alignment (1 for buffered files). Direct
    ///     reads move whole blocks except at end of file, so a short read ending off a block
    ///     boundary is EOF; resubmitting its remainder would only earn EINVAL for alignment.
    static func step(opcode: Opcode, result: Int32, done: Int, remaining: Int, retries: Int, blockBytes: Int = 1) -> CompletionStep {
        if result < 0 {
            let code = -result
            if (code == EAGAIN || code == EINTR) && retries < retryLimit { return .retry }
            return .failed(errno: code, bytes: done)
        }
        guard opcode.transfersData else { return .finished(bytes: Int(result)) }
        let moved = Int(result)
        if moved == 0 || moved >= remaining {
            // 0 bytes: a read at or past EOF (a short count, never an error), or a write the
            // device would not take any of (reported as short; the caller decides).
            return .finished(bytes: done + moved)
        }
        if opcode.readsIntoMemory && !isAligned(done + moved, to: blockBytes) {
            return .finished(bytes: done + moved)
        }
        return .resubmitRemainder(bytes: done + moved)
    }
}
