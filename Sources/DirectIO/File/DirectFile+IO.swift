import CDirectIO
import Glibc
import SystemPackage

/// Reads and writes. Every synchronous call returns only after the kernel has finished with
/// the memory it was given, on success and on every error.
extension DirectFile {
    // MARK: Buffers DirectIO owns (pool buffers, aligned buffers)

    /// Reads up to `count` bytes (default: the whole buffer) at `offset` into `buffer`.
    /// Returns the bytes read: fewer than asked only at end of file, 0 at or past it.
    /// Registered pool buffers use READ_FIXED.
    public func read<Buffer: IOBuffer & ~Copyable>(into buffer: inout Buffer, count: Int? = nil, at offset: Int64) throws(DirectIOError) -> Int {
        let length = count ?? buffer.count
        try checkFits(length, in: buffer.count, operation: "read", offset: offset)
        let operation = IOOperation.read(fd: descriptor, fileSlot: fileSlot, into: buffer.baseAddress, count: length, at: offset, fixedSlot: engine.fixedIndex(of: buffer.poolSlot))
        return try run(operation, name: "read", address: UInt(bitPattern: buffer.baseAddress), offset: offset, length: length)
    }

    /// Writes `count` bytes (default: the whole buffer) from `buffer` at `offset`. Returns the
    /// bytes written. Registered pool buffers use WRITE_FIXED.
    public func write<Buffer: IOBuffer & ~Copyable>(_ buffer: borrowing Buffer, count: Int? = nil, at offset: Int64) throws(DirectIOError) -> Int {
        let length = count ?? buffer.count
        try checkFits(length, in: buffer.count, operation: "write", offset: offset)
        let operation = IOOperation.write(fd: descriptor, fileSlot: fileSlot, from: buffer.baseAddress, count: length, at: offset, fixedSlot: engine.fixedIndex(of: buffer.poolSlot))
        return try run(operation, name: "write", address: UInt(bitPattern: buffer.baseAddress), offset: offset, length: length)
    }

    // MARK: Untorn writes

    /// Writes `count` bytes (default: the whole buffer) at `offset` so that they land whole or
    /// not at all, even across a power cut (RWF_ATOMIC): no torn page for a database to repair
    /// with a doublewrite buffer. The length must be a power of two within
    /// `limits.atomicWriteUnitMin...atomicWriteUnitMax`, the offset a multiple of it and the
    /// memory aligned; anything else, or a file without atomic write support, is refused
    /// before it reaches the kernel.
    public func atomicWrite<Buffer: IOBuffer & ~Copyable>(_ buffer: borrowing Buffer, count: Int? = nil, at offset: Int64) throws(DirectIOError) -> Int {
        let length = count ?? buffer.count
        try checkFits(length, in: buffer.count, operation: "atomic write", offset: offset)
        return try atomicWrite(from: buffer.baseAddress, count: length, at: offset)
    }

    /// Writes `buffer` at `offset` whole or not at all; see the pool-buffer form. The memory
    /// must already be aligned (an atomic write is never bounced: a copy cannot be untorn
    /// across two requests).
    public func atomicWrite(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws(DirectIOError) -> Int {
        guard let base = buffer.baseAddress else {
            throw DirectIOError(.invalidArgument, operation: "atomic write", path: path, offset: offset, length: 0, detail: "an atomic write needs at least one byte")
        }
        return try atomicWrite(from: base, count: buffer.count, at: offset)
    }

    private func atomicWrite(from base: UnsafeRawPointer, count: Int, at offset: Int64) throws(DirectIOError) -> Int {
        try rules.checkAtomicWrite(name: "atomic write", address: UInt(bitPattern: base), offset: offset, length: count)
        let operation = IOOperation.atomicWrite(fd: descriptor, fileSlot: fileSlot, from: base, count: count, at: offset)
        return try run(operation, name: "atomic write", address: UInt(bitPattern: base), offset: offset, length: count, validated: true)
    }

    /// Writes `count` bytes of `buffer` at `offset`, durable when this returns (RWF_DSYNC: one
    /// request, FUA where the device has it, instead of a write and a data sync). Aligned
    /// requests only: for layers (the append log) that keep their own blocks.
    package func writeDurably<Buffer: IOBuffer & ~Copyable>(_ buffer: borrowing Buffer, count: Int, at offset: Int64) throws(DirectIOError) -> Int {
        try checkFits(count, in: buffer.count, operation: "durable write", offset: offset)
        var operation = IOOperation.write(fd: descriptor, fileSlot: fileSlot, from: buffer.baseAddress, count: count, at: offset, fixedSlot: engine.fixedIndex(of: buffer.poolSlot))
        operation.rwFlags = DIO_RWF_DSYNC
        return try run(operation, name: "durable write", address: UInt(bitPattern: buffer.baseAddress), offset: offset, length: count)
    }

    // MARK: Caller memory

    /// Reads `buffer.count` bytes at `offset` into any caller memory. Returns the bytes read:
    /// fewer only at end of file. Memory, offset and length need no alignment: what breaks
    /// the device's alignment goes through bounce buffers (unless the file was opened with
    /// `misaligned: .fail`), the rest straight into `buffer`.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(DirectIOError) -> Int {
        guard let base = buffer.baseAddress else { return try checkEmpty("read", offset) }
        if try mustRealign(name: "read", address: UInt(bitPattern: base), offset: offset, length: buffer.count, isRead: true) {
            return try transferBounced(isRead: true, .one(CallerSegment(address: UInt(bitPattern: base), length: buffer.count)), at: offset, name: "read")
        }
        let fixed = engine.fixedIndex(containing: base, length: buffer.count)
        let operation = IOOperation.read(fd: descriptor, fileSlot: fileSlot, into: base, count: buffer.count, at: offset, fixedSlot: fixed)
        return try run(operation, name: "read", address: UInt(bitPattern: base), offset: offset, length: buffer.count, validated: true)
    }

    /// Writes `buffer` at `offset` from any caller memory; see `read(into:at:)`.
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws(DirectIOError) -> Int {
        guard let base = buffer.baseAddress else { return try checkEmpty("write", offset) }
        if try mustRealign(name: "write", address: UInt(bitPattern: base), offset: offset, length: buffer.count, isRead: false) {
            return try transferBounced(isRead: false, .one(CallerSegment(address: UInt(bitPattern: base), length: buffer.count)), at: offset, name: "write")
        }
        let fixed = engine.fixedIndex(containing: base, length: buffer.count)
        let operation = IOOperation.write(fd: descriptor, fileSlot: fileSlot, from: base, count: buffer.count, at: offset, fixedSlot: fixed)
        return try run(operation, name: "write", address: UInt(bitPattern: base), offset: offset, length: buffer.count, validated: true)
    }

    /// Reads into `bytes` (its whole count) at `offset`; returns the bytes read.
    public func read(into bytes: inout [UInt8], at offset: Int64) throws(DirectIOError) -> Int {
        // withUnsafeMutableBytes rethrows untyped errors: carry the typed one out in a Result.
        let result = bytes.withUnsafeMutableBytes { raw in Result { () throws(DirectIOError) in try read(into: raw, at: offset) } }
        return try result.get()
    }

    /// Writes `bytes` at `offset`; returns the bytes written.
    public func write(_ bytes: [UInt8], at offset: Int64) throws(DirectIOError) -> Int {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(DirectIOError) in try write(raw, at: offset) } }
        return try result.get()
    }

    /// Reads into the bytes `span` covers, at `offset`; returns the bytes read.
    public func read(into span: inout MutableRawSpan, at offset: Int64) throws(DirectIOError) -> Int {
        let result = span.withUnsafeMutableBytes { raw in Result { () throws(DirectIOError) in try read(into: raw, at: offset) } }
        return try result.get()
    }

    /// Writes the bytes `span` covers at `offset`; returns the bytes written.
    public func write(_ span: RawSpan, at offset: Int64) throws(DirectIOError) -> Int {
        let result = span.withUnsafeBytes { raw in Result { () throws(DirectIOError) in try write(raw, at: offset) } }
        return try result.get()
    }

    /// Reads into several buffers from consecutive file bytes starting at `offset` (READV /
    /// preadv when all are aligned; planned and partly bounced otherwise).
    public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: Int64) throws(DirectIOError) -> Int {
        try vectored(.readv, buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }, at: offset)
    }

    /// Writes several buffers to consecutive file bytes starting at `offset` (WRITEV / pwritev).
    public func write(_ buffers: [UnsafeRawBufferPointer], at offset: Int64) throws(DirectIOError) -> Int {
        try vectored(.writev, buffers.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }, at: offset)
    }

    /// Checks a request that may be realigned: bad arguments throw; a broken alignment returns
    /// true (bounce or shift it) unless the file refuses misaligned requests, which throws
    /// `.misaligned` naming the limit. One check per request, shared by every path.
    private func mustRealign(name: String, address: UInt, offset: Int64, length: Int, isRead: Bool) throws(DirectIOError) -> Bool {
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: length) {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, length: length, detail: problem)
        }
        guard length > 0, let violation = alignment.violation(address: address, offset: offset, length: length, isRead: isRead) else { return false }
        guard bouncesMisaligned else {
            throw DirectIOError(.misaligned, operation: name, path: path, offset: offset, length: length, detail: AlignmentCheck.describe(violation, limits: limits, isRead: isRead))
        }
        return true
    }

    // MARK: Batched, owned buffers

    /// Starts a read into `buffer` without waiting. The engine owns the buffer until the
    /// request completes; `engine.reap` returns it with the outcome and `tag`.
    /// - Parameters:
    ///   - buffer: the pool buffer the data goes to, owned by the engine until its completion.
    ///   - bufferOffset: where in the buffer the data goes.
    ///   - count: bytes to read (default: the buffer from `bufferOffset` to its end).
    ///   - offset: the file offset to read from.
    ///   - tag: any value, handed back with the completion.
    public func submitRead(into buffer: consuming PoolBuffer, bufferOffset: Int = 0, count: Int? = nil, at offset: Int64, tag: UInt64) throws(DirectIOError) {
        try submit(isRead: true, buffer, bufferOffset: bufferOffset, count: count, at: offset, tag: tag)
    }

    /// Starts a write from `buffer` without waiting; see `submitRead`.
    public func submitWrite(_ buffer: consuming PoolBuffer, bufferOffset: Int = 0, count: Int? = nil, at offset: Int64, tag: UInt64) throws(DirectIOError) {
        try submit(isRead: false, buffer, bufferOffset: bufferOffset, count: count, at: offset, tag: tag)
    }

    /// Starts a write from `buffer` that lands whole or not at all (RWF_ATOMIC), without
    /// waiting; the rules are `atomicWrite`'s, checked before anything is submitted.
    public func submitAtomicWrite(_ buffer: consuming PoolBuffer, bufferOffset: Int = 0, count: Int? = nil, at offset: Int64, tag: UInt64) throws(DirectIOError) {
        let name = "atomic write"
        guard bufferOffset >= 0 && bufferOffset <= buffer.count else {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, detail: "buffer offset \(bufferOffset) is outside the \(buffer.count)-byte buffer")
        }
        let length = count ?? buffer.count - bufferOffset
        try checkFits(length, in: buffer.count - bufferOffset, operation: name, offset: offset)
        let address = buffer.baseAddress + bufferOffset
        try rules.checkAtomicWrite(name: name, address: UInt(bitPattern: address), offset: offset, length: length)
        let operation = IOOperation.atomicWrite(fd: descriptor, fileSlot: fileSlot, from: address, count: length, at: offset)
        try engine.submit(operation, tag: tag, buffer: buffer, blockBytes: blockBytes(isRead: false), counters: isDirect ? counters : nil)
    }

    private func submit(isRead: Bool, _ buffer: consuming PoolBuffer, bufferOffset: Int, count: Int?, at offset: Int64, tag: UInt64) throws(DirectIOError) {
        let name = isRead ? "read" : "write"
        guard bufferOffset >= 0 && bufferOffset <= buffer.count else {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, detail: "buffer offset \(bufferOffset) is outside the \(buffer.count)-byte buffer")
        }
        let length = count ?? buffer.count - bufferOffset
        try checkFits(length, in: buffer.count - bufferOffset, operation: name, offset: offset)
        let address = buffer.baseAddress + bufferOffset
        if try mustRealign(name: name, address: UInt(bitPattern: address), offset: offset, length: length, isRead: isRead) {
            // Inside its own buffer where the block range fits and a write covers whole blocks
            // (one DMA, no bounce buffer); else through the realignment layer, in steps.
            let block = Int64(isRead ? alignment.readAlignment : alignment.writeAlignment)
            let span = alignUp(offset + Int64(length), block) - alignDown(offset, block)
            let wholeBlocks = offset % block == 0 && Int64(length) % block == 0
            if span <= Int64(buffer.count) && (isRead || wholeBlocks) {
                return try submitShifted(isRead: isRead, buffer, bufferOffset: bufferOffset, count: length, at: offset, tag: tag)
            }
            return try submitRealigned(isRead: isRead, buffer, bufferOffset: bufferOffset, count: length, at: offset, tag: tag)
        }
        // The whole range lies inside the registered buffer, so the fixed slot stays valid.
        let fixed = engine.fixedIndex(of: buffer.poolSlot)
        let operation = isRead
            ? IOOperation.read(fd: descriptor, fileSlot: fileSlot, into: address, count: length, at: offset, fixedSlot: fixed)
            : IOOperation.write(fd: descriptor, fileSlot: fileSlot, from: address, count: length, at: offset, fixedSlot: fixed)
        try engine.submit(operation, tag: tag, buffer: buffer, blockBytes: blockBytes(isRead: isRead), counters: isDirect ? counters : nil)
    }

    /// A batched request whose memory breaks the alignment, served inside its own pool buffer
    /// (see `Shift`): reads fetch the whole block range to the buffer's start and slide the
    /// caller's bytes into place after the completion; writes of whole blocks slide the bytes
    /// to the buffer's start first. Either way no bounce buffer is involved, and every byte
    /// still moves by DMA.
    private func submitShifted(isRead: Bool, _ buffer: consuming PoolBuffer, bufferOffset: Int, count: Int, at offset: Int64, tag: UInt64) throws(DirectIOError) {
        let block = Int64(isRead ? alignment.readAlignment : alignment.writeAlignment)
        let first = offset / block * block
        let last = (offset + Int64(count) + block - 1) / block * block
        let span = Int(last - first)
        let base = buffer.baseAddress
        let shift = Shift(callerOffset: bufferOffset, deviceOffset: isRead ? Int(offset - first) : 0, count: count, isRead: isRead)
        if !isRead {
            base.copyMemory(from: base + bufferOffset, byteCount: count)  // memmove: the ranges may overlap
        }
        let fixed = engine.fixedIndex(of: buffer.poolSlot)
        let operation = isRead
            ? IOOperation.read(fd: descriptor, fileSlot: fileSlot, into: base, count: span, at: first, fixedSlot: fixed)
            : IOOperation.write(fd: descriptor, fileSlot: fileSlot, from: base, count: span, at: first, fixedSlot: fixed)
        try engine.submit(operation, tag: tag, buffer: buffer, blockBytes: blockBytes(isRead: isRead), shift: shift, counters: counters)
    }

    // MARK: Shared paths

    private func vectored(_ opcode: Opcode, _ vectors: [iovec], at offset: Int64) throws(DirectIOError) -> Int {
        let name = opcode == .readv ? "vectored read" : "vectored write"
        let total = vectors.reduce(0) { $0 + $1.iov_len }
        guard !vectors.isEmpty else { return try checkEmpty(name, offset) }
        if try rules.checkVectors(vectors, name: name, offset: offset, isRead: opcode == .readv, realign: bouncesMisaligned) {
            let segments = CallerSegments.many(vectors.map { CallerSegment(address: UInt(bitPattern: $0.iov_base), length: $0.iov_len) })
            return try transferBounced(isRead: opcode == .readv, segments, at: offset, name: name)
        }
        // The engine rewrites the iovecs to resubmit a short transfer's remainder, so it gets
        // its own copy, alive (in this frame) until the request has completed.
        let copy = UnsafeMutablePointer<iovec>.allocate(capacity: vectors.count)
        defer { copy.deallocate() }
        copy.initialize(from: vectors, count: vectors.count)
        let operation = IOOperation.vectored(opcode, fd: descriptor, fileSlot: fileSlot, vectors: copy, count: vectors.count, at: offset)
        let outcome = try engine.perform(operation, blockBytes: blockBytes(isRead: opcode == .readv))
        if let errno = outcome.errno {
            throw failure(errno, name: name, call: RequestCarrier(engine.kind, waited: true).name(of: operation), address: nil, offset: offset, length: total, isRead: opcode == .readv, done: outcome.bytes)
        }
        if isDirect { record(TransferStatistics(bytesDirect: outcome.bytes)) }
        return outcome.bytes
    }

    /// - Parameter validated: the caller already checked the arguments (`mustRealign`).
    private func run(_ operation: IOOperation, name: String, address: UInt, offset: Int64, length: Int, validated: Bool = false) throws(DirectIOError) -> Int {
        let isRead = operation.opcode.readsIntoMemory
        if !validated { try checkArguments(name: name, address: address, offset: offset, length: length, isRead: isRead) }
        if length == 0 { return 0 }
        let outcome = try engine.perform(operation, blockBytes: blockBytes(isRead: isRead))
        if let errno = outcome.errno {
            throw failure(errno, name: name, call: RequestCarrier(engine.kind, waited: true).name(of: operation), address: address, offset: offset, length: length, isRead: isRead, done: outcome.bytes)
        }
        if isDirect { record(TransferStatistics(bytesDirect: outcome.bytes)) }
        return outcome.bytes
    }

    private func blockBytes(isRead: Bool) -> Int {
        isRead ? alignment.readAlignment : alignment.writeAlignment
    }

    private func checkArguments(name: String, address: UInt, offset: Int64, length: Int, isRead: Bool) throws(DirectIOError) {
        try rules.checkArguments(name: name, address: address, offset: offset, length: length, isRead: isRead)
    }

    private func checkFits(_ length: Int, in capacity: Int, operation: String, offset: Int64) throws(DirectIOError) {
        try rules.checkFits(length, in: capacity, operation: operation, offset: offset)
    }

    private func checkEmpty(_ name: String, _ offset: Int64) throws(DirectIOError) -> Int {
        try rules.checkEmpty(name, offset)
    }

    private func failure(_ errno: Errno, name: String, call: String, address: UInt?, offset: Int64, length: Int, isRead: Bool, done: Int) -> DirectIOError {
        rules.failure(errno, name: name, call: call, address: address, offset: offset, length: length, isRead: isRead, done: done)
    }
}
