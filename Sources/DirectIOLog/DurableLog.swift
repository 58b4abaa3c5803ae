import DirectIO

/// A durable append-only log with group commit, for write-ahead logs: records of any size
/// appended from many threads, each call returning its record's position once the record is
/// durable.
///
/// Records are packed into blocks in two registered buffers. Appends copy their record into the
/// active buffer; the first appender that finds no write in flight writes everything appended
/// so far (O_DIRECT, RWF_DSYNC: durable when the write completes, FUA where the device has it),
/// and the appends that arrive meanwhile go into the other buffer and are written together by
/// the next one: group commit. The partly filled last block stays in memory and is written
/// again, whole, with the next group, so no append ever reads the file (no read-modify-write,
/// no bounce buffer).
///
/// Reopening finds the valid end: records are checked one by one from the start (`LogRecord`:
/// length, epoch, CRC-32C over position and payload), and the first that does not check ends
/// the log, so a torn tail is never returned; each open writes a new epoch into the header, so
/// bytes an earlier open left past the end can never pass for records after newer ones. A
/// write that fails leaves the log failed: every later call throws that error, and reopening
/// recovers what is durable (a log cannot know what a failed write left behind).
///
/// The log writes zeros ahead of its end (`growthBytes`), so group writes overwrite blocks the
/// file already has: a durable write that grows a file commits its new size as well.
///
/// Unchecked sendability: the stored `let`s are immutable after `init` (which runs recovery
/// before the log is shared). `file`, `engine` and `prepared` are touched only with `io` held.
/// The buffers' memory is written by appenders only with `state` held and only in the active
/// buffer; a group's buffer stops being active (under `state`) before its write starts, and
/// becomes active again only after `finish` has published the write's outcome under `state`
/// (`flushing` allows one group at a time), so no appender writes memory the kernel reads.
public final class DurableLog: @unchecked Sendable {

    public let path: String
    /// The log's block: the file's direct-I/O write alignment, at least 4 KiB.
    public let blockBytes: Int
    /// The largest record payload.
    public let maxRecordBytes: Int
    /// Where the first record goes (after the log's header block).
    public var firstPosition: Int64 { Int64(blockBytes) }
    /// This open's epoch, written into its records (`LogRecord`).
    private let epoch: UInt32

    private let file: DirectFile
    private let engine: IOEngine
    private let first: PoolBuffer
    private let second: PoolBuffer
    /// Zeros, written ahead of the log's end (see `extend`).
    private let zeros: PoolBuffer
    private let growthBytes: Int
    /// The file is written (data or zeros) up to here. Under `io`.
    private var prepared: Int64
    private let bases: [UnsafeMutableRawPointer]
    private let capacity: Int
    private let io = ConditionLock(())
    private let state: ConditionLock<State>

    private struct State: Sendable {
        /// The buffer appends go to (0 or 1) and the file offset of its first byte (a block
        /// boundary).
        var active = 0
        var activeBase: Int64
        /// Where the next record goes.
        var appendedEnd: Int64
        /// Everything before this is durable.
        var durableEnd: Int64
        var flushing = false
        var failure: DirectIOError?
    }

    /// What one group write covers: a buffer, where it goes, and the end it makes durable.
    private struct Group {
        var buffer: Int
        var base: Int64
        var count: Int
        var end: Int64
    }

    /// Opens the log at `path`, creating it if absent, and recovers its valid end.
    /// - Parameters:
    ///   - engine: the engine for its I/O (default: one of its own).
    ///   - bufferBytes: the size of each of the two append buffers, and so of the largest
    ///     group one write makes durable (a multiple of the block).
    ///   - growthBytes: how far ahead of its end the log writes zeros, so appends overwrite
    ///     blocks the file already has: a durable write that grows a file also commits the
    ///     new size (a journal commit on ext4), one that overwrites does not.
    public init(path: String, engine: IOEngine? = nil, bufferBytes: Int = 1 << 20, growthBytes: Int = 8 << 20) throws(DirectIOError) {
        let engine: IOEngine = if let engine { engine } else { try IOEngine() }
        let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite, directIO: .required, create: true), engine: engine)
        let block = max(file.limits.offsetAlignment, 4096)
        guard bufferBytes >= 2 * block, bufferBytes % block == 0 else {
            throw DirectIOError(.invalidArgument, operation: "open log", path: path, length: bufferBytes,
                                detail: "the buffer size must be a multiple of the log's \(block)-byte block, and at least two blocks")
        }
        let pool = try BufferPool(count: 3, bufferBytes: bufferBytes)
        engine.register(pool)
        guard let first = pool.take(), let second = pool.take(), let zeros = pool.take() else {
            throw DirectIOError(.outOfMemory, operation: "open log", path: path, detail: "the log's buffers could not be taken from their pool")
        }
        zeros.baseAddress.initializeMemory(as: UInt8.self, repeating: 0, count: zeros.count)
        self.path = path
        self.blockBytes = block
        self.capacity = bufferBytes
        self.maxRecordBytes = bufferBytes - block - LogRecord.headerBytes
        self.bases = [first.baseAddress, second.baseAddress]
        let (end, epoch) = try Self.recover(file, path: path, block: block, tailBuffer: first, scratch: second)
        self.epoch = epoch
        self.zeros = zeros
        self.growthBytes = max(growthBytes, 0) / block * block
        // Past the recovered end whatever the size says (a simulated device's file on disk
        // stays empty): zeros written there only replace bytes that are no records.
        self.prepared = max(try file.size(), end + Int64(block) - 1) / Int64(block) * Int64(block)
        self.file = file
        self.engine = engine
        self.first = first
        self.second = second
        let tailBase = end / Int64(block) * Int64(block)
        state = ConditionLock(State(activeBase: tailBase, appendedEnd: end, durableEnd: end))
    }

    /// Whether the log's I/O goes through io_uring (else the blocking engine).
    public var usesIOUring: Bool { engine.usesIOUring }

    /// The position after the last durable record: where the next record goes once durable.
    public var end: Int64 { state.withLock { $0.durableEnd } }

    // MARK: Appending

    /// Appends `record` and returns its position once it is durable (with every record
    /// appended before it). Records of 1 to `maxRecordBytes` bytes.
    public func append(_ record: UnsafeRawBufferPointer) throws(DirectIOError) -> Int64 {
        let position = try place(record)
        try waitUntilDurable(position + Int64(LogRecord.headerBytes + record.count))
        return position
    }

    public func append(_ record: [UInt8]) throws(DirectIOError) -> Int64 {
        let result = record.withUnsafeBytes { bytes in Result { () throws(DirectIOError) in try append(bytes) } }
        return try result.get()
    }

    /// Appends `records` in order and returns their positions once all are durable: one wait
    /// for many records.
    public func append(contentsOf records: [[UInt8]]) throws(DirectIOError) -> [Int64] {
        var positions: [Int64] = []
        positions.reserveCapacity(records.count)
        for record in records {
            let result = record.withUnsafeBytes { bytes in Result { () throws(DirectIOError) in try place(bytes) } }
            positions.append(try result.get())
        }
        if let last = positions.last, let record = records.last {
            try waitUntilDurable(last + Int64(LogRecord.headerBytes + record.count))
        }
        return positions
    }

    /// Copies the record into the active buffer and returns its position; writes a group first
    /// when the buffer has no room.
    private func place(_ record: UnsafeRawBufferPointer) throws(DirectIOError) -> Int64 {
        guard record.count >= 1 && record.count <= maxRecordBytes else {
            throw DirectIOError(.invalidArgument, operation: "append", path: path, length: record.count,
                                detail: "a record is 1 to \(maxRecordBytes) bytes (the log's buffers are \(capacity) bytes)")
        }
        let frame = LogRecord.headerBytes + record.count
        enum Step { case placed(Int64), write(Group), failed(DirectIOError) }
        while true {
            let step = state.wait { state -> Step? in
                if let failure = state.failure { return .failed(failure) }
                if Int(state.appendedEnd - state.activeBase) + frame <= capacity {
                    let position = state.appendedEnd
                    LogRecord.encode(record, position: position, epoch: epoch, into: bases[state.active] + Int(position - state.activeBase))
                    state.appendedEnd += Int64(frame)
                    return .placed(position)
                }
                guard !state.flushing else { return nil }
                state.flushing = true
                return .write(startGroup(&state))
            }
            switch step {
            case .placed(let position): return position
            case .write(let group): finish(group)
            case .failed(let error): throw error
            }
        }
    }

    private func waitUntilDurable(_ end: Int64) throws(DirectIOError) {
        enum Step { case durable, write(Group), failed(DirectIOError) }
        while true {
            let step = state.wait { state -> Step? in
                if state.durableEnd >= end { return .durable }
                if let failure = state.failure { return .failed(failure) }
                guard !state.flushing else { return nil }
                state.flushing = true
                return .write(startGroup(&state))
            }
            switch step {
            case .durable: return
            case .write(let group): finish(group)
            case .failed(let error): throw error
            }
        }
    }

    /// Under the state lock: takes everything appended as a group and makes the other buffer
    /// active, starting with a copy of the partly filled last block (appends go on there while
    /// the group is written). The group's last block is padded with zeros.
    private func startGroup(_ state: inout State) -> Group {
        let block = Int64(blockBytes)
        let buffer = state.active
        let used = Int(state.appendedEnd - state.activeBase)
        let count = (used + blockBytes - 1) / blockBytes * blockBytes
        let tailBase = state.appendedEnd / block * block
        let tail = Int(state.appendedEnd - tailBase)
        let next = 1 - buffer
        if tail > 0 {
            bases[next].copyMemory(from: bases[buffer] + Int(tailBase - state.activeBase), byteCount: tail)
        }
        (bases[buffer] + used).initializeMemory(as: UInt8.self, repeating: 0, count: count - used)
        let group = Group(buffer: buffer, base: state.activeBase, count: count, end: state.appendedEnd)
        state.active = next
        state.activeBase = tailBase
        return group
    }

    /// Writes a group durably and publishes the outcome (a new durable end, or the failure).
    private func finish(_ group: Group) {
        var failure: DirectIOError?
        if group.end > group.base {
            do throws(DirectIOError) {
                let written = try io.withLock { _ throws(DirectIOError) in
                    try extend(past: group.base + Int64(group.count))
                    return try group.buffer == 0
                        ? file.writeDurably(first, count: group.count, at: group.base)
                        : file.writeDurably(second, count: group.count, at: group.base)
                }
                if written != group.count {
                    failure = DirectIOError(.ioError, operation: "append", path: path, offset: group.base + Int64(written), length: group.count,
                                            detail: "the device took \(written) of \(group.count) bytes")
                }
            } catch {
                failure = error
            }
        }
        state.updateAndBroadcast { state in
            state.flushing = false
            if let failure {
                state.failure = failure
            } else {
                state.durableEnd = max(state.durableEnd, group.end)
            }
        }
    }

    /// Writes zeros from the prepared end to `growthBytes` past `end`, then makes them and the
    /// new size durable. Under `io`.
    private func extend(past end: Int64) throws(DirectIOError) {
        guard end > prepared, growthBytes > 0 else { return }
        let target = end + Int64(growthBytes)
        while prepared < target {
            let count = Int(min(Int64(zeros.count), target - prepared))
            let written = try file.write(zeros, count: count, at: prepared)
            guard written == count else {
                throw DirectIOError(.ioError, operation: "append", path: path, offset: prepared + Int64(written), length: count, detail: "writing zeros ahead of the log took \(written) of \(count) bytes")
            }
            prepared += Int64(count)
        }
        try file.sync(dataOnly: true)
    }

    // MARK: Reading

    /// The payload of the record at `position` (a position an append returned, or one
    /// `next(after:)` gave). Throws for a position that holds no record.
    public func read(at position: Int64) throws(DirectIOError) -> [UInt8] {
        guard let (payload, _) = try record(at: position) else {
            throw DirectIOError(.invalidArgument, operation: "read record", path: path, offset: position, detail: "no record starts at this position (the log ends at \(end))")
        }
        return payload
    }

    /// Every durable record from `position` (default: the first), in order, with its position.
    public func records(from position: Int64? = nil) throws(DirectIOError) -> [(position: Int64, payload: [UInt8])] {
        var result: [(position: Int64, payload: [UInt8])] = []
        var next = position ?? firstPosition
        while next < end, let (payload, after) = try record(at: next) {
            result.append((next, payload))
            next = after
        }
        return result
    }

    /// The record at `position` and the position after it, or nil where none checks.
    private func record(at position: Int64) throws(DirectIOError) -> ([UInt8], Int64)? {
        let limit = end
        guard position >= firstPosition, position + Int64(LogRecord.headerBytes) < limit else { return nil }
        var header = [UInt8](repeating: 0, count: LogRecord.headerBytes)
        try io.withLock { _ throws(DirectIOError) in _ = try file.read(into: &header, at: position) }
        guard let (length, epoch, stored) = header.withUnsafeBytes({ LogRecord.fields(at: $0.baseAddress.unsafelyUnwrapped) }), length <= maxRecordBytes,
              position + Int64(LogRecord.headerBytes + length) <= limit else { return nil }
        var payload = [UInt8](repeating: 0, count: length)
        try io.withLock { _ throws(DirectIOError) in _ = try file.read(into: &payload, at: position + Int64(LogRecord.headerBytes)) }
        guard payload.withUnsafeBytes({ LogRecord.checksum($0, position: position, epoch: epoch) }) == stored else { return nil }
        return (payload, position + Int64(LogRecord.headerBytes + length))
    }
}
