import DirectIO

/// A durable append-only log with group commit, for write-ahead logs: records of any size
/// appended from many threads or tasks, each call returning its record's position once the
/// record is durable.
///
/// Records are packed into blocks in two registered buffers. Appends copy their record into the
/// active buffer; the first appender that finds no write in flight writes everything appended
/// so far (O_DIRECT, RWF_DSYNC: durable when the write completes, FUA where the device has it),
/// and the appends that arrive meanwhile go into the other buffer and are written together by
/// the next one: group commit. The partly filled last block stays in memory and is written
/// again, whole, with the next group, so no append ever reads the file (no read-modify-write,
/// no bounce buffer).
///
/// Threads append with the synchronous calls (a thread that writes a group blocks in its
/// engine); tasks with the `async` ones, which never block their thread: a task that writes a
/// group awaits it on an `IORuntime`, and one that waits for another's group is suspended and
/// resumed when that group is durable, or handed the next group to write. Both kinds share one
/// log and one group at a time.
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
/// before the log is shared). `file` and `engine` are touched only with `io` held. `prepared`
/// only by the one caller that holds the writer's role (`State.flushing`, set and cleared
/// under `state`). The buffers' memory is written by appenders only with `state` held and only
/// in the active buffer; a group's buffer stops being active (under `state`) before its write
/// starts, and becomes active again only after `publish` has recorded the write's outcome under
/// `state` (one group at a time), so no appender writes memory the kernel reads.
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
    /// The runtime async appends write on (nil: `IORuntime.shared()`), and the log's file
    /// opened there, on the first async append.
    private let runtime: IORuntime?
    private let asyncFile = ConditionLock<AsyncFile?>(nil)
    private let first: PoolBuffer
    private let second: PoolBuffer
    /// Zeros, written ahead of the log's end (see `zerosTarget`).
    private let zeros: PoolBuffer
    private let growthBytes: Int
    /// The file is written (data or zeros) up to here. By the writer only.
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
        /// A caller holds the writer's role: it is writing a group.
        var flushing = false
        var failure: DirectIOError?
        /// Tasks suspended in async appends, in arrival order, each until the log is durable
        /// up to `end` (threads wait on the lock's condition instead).
        var waiting: [(end: Int64, resume: UnsafeContinuation<Step, Never>)] = []
    }

    /// What one group write covers: a buffer, where it goes, and the end it makes durable.
    private struct Group: Sendable {
        var buffer: Int
        var base: Int64
        var count: Int
        var end: Int64
    }

    /// What an appender does next, decided under `state`.
    private enum Step: Sendable {
        /// Its record is placed at this position, or the log is durable up to its end.
        case done(Int64)
        /// It holds the writer's role: it writes this group, then decides again.
        case write(Group)
        /// Another caller is writing a group: wait until the log is durable up to this end
        /// (or until handed the writer's role), then decide again.
        case wait(until: Int64)
        case failed(DirectIOError)
    }

    /// Opens the log at `path`, creating it if absent, and recovers its valid end.
    /// - Parameters:
    ///   - engine: the engine for synchronous appends and reads (default: one of its own).
    ///   - runtime: the runtime async appends write on (default: `IORuntime.shared()`).
    ///   - bufferBytes: the size of each of the two append buffers, and so of the largest
    ///     group one write makes durable (a multiple of the block).
    ///   - growthBytes: how far ahead of its end the log writes zeros, so appends overwrite
    ///     blocks the file already has: a durable write that grows a file also commits the
    ///     new size (a journal commit on ext4), one that overwrites does not.
    public init(path: String, engine: IOEngine? = nil, runtime: IORuntime? = nil, bufferBytes: Int = 1 << 20, growthBytes: Int = 8 << 20) throws(DirectIOError) {
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
        self.runtime = runtime
        self.first = first
        self.second = second
        let tailBase = end / Int64(block) * Int64(block)
        state = ConditionLock(State(activeBase: tailBase, appendedEnd: end, durableEnd: end))
    }

    /// Whether the log's I/O goes through io_uring (else the blocking engine).
    public var usesIOUring: Bool { engine.usesIOUring }

    /// The position after the last durable record: where the next record goes once durable.
    public var end: Int64 { state.withLock { $0.durableEnd } }

    // MARK: Appending from threads

    /// Appends `record` and returns its position once it is durable (with every record
    /// appended before it). Records of 1 to `maxRecordBytes` bytes.
    public func append(_ record: UnsafeRawBufferPointer) throws(DirectIOError) -> Int64 {
        try checkSize(record.count)
        let position = try run { place(record, &$0) }
        _ = try run { durable(upTo: position + Int64(LogRecord.headerBytes + record.count), &$0) }
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
            let result = record.withUnsafeBytes { bytes in
                Result { () throws(DirectIOError) in
                    try checkSize(bytes.count)
                    return try run { place(bytes, &$0) }
                }
            }
            positions.append(try result.get())
        }
        if let last = positions.last, let record = records.last {
            _ = try run { durable(upTo: last + Int64(LogRecord.headerBytes + record.count), &$0) }
        }
        return positions
    }

    /// Takes steps until one is done, on this thread: writes the groups it is given, waits on
    /// the lock's condition while another caller writes.
    private func run(_ decide: (inout State) -> Step) throws(DirectIOError) -> Int64 {
        while true {
            let step = state.wait { state -> Step? in
                let step = decide(&state)
                if case .wait = step { return nil }
                return step
            }
            switch step {
            case .done(let value): return value
            case .write(let group): publish(group, failure: writeOnEngine(group))
            case .wait: continue
            case .failed(let error): throw error
            }
        }
    }

    /// Writes a group durably on the log's engine; returns why it failed, if it did.
    private func writeOnEngine(_ group: Group) -> DirectIOError? {
        guard group.end > group.base else { return nil }
        do throws(DirectIOError) {
            let written = try io.withLock { _ throws(DirectIOError) in
                let target = zerosTarget(before: group.base + Int64(group.count))
                while prepared < target {
                    let count = zerosCount(to: target)
                    try zerosWritten(try file.write(zeros, count: count, at: prepared), of: count)
                }
                return try group.buffer == 0
                    ? file.writeDurably(first, count: group.count, at: group.base)
                    : file.writeDurably(second, count: group.count, at: group.base)
            }
            return shortWrite(written, group)
        } catch {
            return error
        }
    }

    // MARK: Appending from tasks

    /// Appends `record` from a task and returns its position once it is durable (with every
    /// record appended before it). The task's thread never blocks: a group it writes is
    /// awaited on the log's runtime, and while another caller writes it is suspended. A
    /// placed record is made durable whatever happens to the task, so cancellation does not
    /// end the wait (it lasts one group write).
    public func append(_ record: UnsafeRawBufferPointer) async throws(DirectIOError) -> Int64 {
        try checkSize(record.count)
        let position = try await runAsTask { place(record, &$0) }
        _ = try await runAsTask { durable(upTo: position + Int64(LogRecord.headerBytes + record.count), &$0) }
        return position
    }

    public func append(_ record: [UInt8]) async throws(DirectIOError) -> Int64 {
        try checkSize(record.count)
        // The array's storage is lent only under the lock, never across a suspension.
        let position = try await runAsTask { state in record.withUnsafeBytes { place($0, &state) } }
        _ = try await runAsTask { durable(upTo: position + Int64(LogRecord.headerBytes + record.count), &$0) }
        return position
    }

    /// Appends `records` in order from a task and returns their positions once all are
    /// durable: one wait for many records.
    public func append(contentsOf records: [[UInt8]]) async throws(DirectIOError) -> [Int64] {
        var positions: [Int64] = []
        positions.reserveCapacity(records.count)
        for record in records {
            try checkSize(record.count)
            positions.append(try await runAsTask { state in record.withUnsafeBytes { place($0, &state) } })
        }
        if let last = positions.last, let record = records.last {
            _ = try await runAsTask { durable(upTo: last + Int64(LogRecord.headerBytes + record.count), &$0) }
        }
        return positions
    }

    /// Takes steps until one is done, as a task: awaits the groups it is given on the runtime,
    /// and suspends while another caller writes (registered under the same lock acquisition
    /// that saw the write in flight, so `publish` cannot miss it).
    private func runAsTask(_ decide: (inout State) -> Step) async throws(DirectIOError) -> Int64 {
        var step = state.withLock { decide(&$0) }
        while true {
            switch step {
            case .done(let value):
                return value
            case .failed(let error):
                throw error
            case .write(let group):
                publish(group, failure: await writeOnRuntime(group))
                step = state.withLock { decide(&$0) }
            case .wait:
                step = await suspend { (resume: UnsafeContinuation<Step, Never>) in
                    let now = state.withLock { state -> Step? in
                        let step = decide(&state)
                        guard case .wait(let end) = step else { return step }
                        state.waiting.append((end, resume))
                        return nil
                    }
                    if let now { resume.resume(returning: now) }
                }
            }
        }
    }

    /// Writes a group durably on the log's runtime; returns why it failed, if it did.
    private func writeOnRuntime(_ group: Group) async -> DirectIOError? {
        guard group.end > group.base else { return nil }
        do {
            let file = try openedAsync()
            let target = zerosTarget(before: group.base + Int64(group.count))
            while prepared < target {
                let count = zerosCount(to: target)
                try zerosWritten(try await file.writeToTheEnd(zeros, count: count, at: prepared, durably: false), of: count)
            }
            let written = try await group.buffer == 0
                ? file.writeToTheEnd(first, count: group.count, at: group.base, durably: true)
                : file.writeToTheEnd(second, count: group.count, at: group.base, durably: true)
            return shortWrite(written, group)
        } catch let error as DirectIOError {
            return error
        } catch {
            // Uncancellable writes throw only DirectIOError; anything else is still a failure.
            return DirectIOError(.ioError, operation: "append", path: path, offset: group.base, length: group.count, detail: "\(error)")
        }
    }

    /// The log's file on the runtime, opened on first use.
    private func openedAsync() throws(DirectIOError) -> AsyncFile {
        try asyncFile.withLock { opened throws(DirectIOError) in
            if let opened { return opened }
            let runtime: IORuntime = if let runtime { runtime } else { try IORuntime.shared() }
            let made = try AsyncFile(path: path, options: OpenOptions(access: .readWrite, directIO: .required), runtime: runtime)
            opened = made
            return made
        }
    }

    // MARK: Steps and groups

    private func checkSize(_ count: Int) throws(DirectIOError) {
        guard count >= 1 && count <= maxRecordBytes else {
            throw DirectIOError(.invalidArgument, operation: "append", path: path, length: count,
                                detail: "a record is 1 to \(maxRecordBytes) bytes (the log's buffers are \(capacity) bytes)")
        }
    }

    /// Copies the record into the active buffer (done: its position), or takes the writer's
    /// role when the buffer has no room, or waits for the writer.
    private func place(_ record: UnsafeRawBufferPointer, _ state: inout State) -> Step {
        if let failure = state.failure { return .failed(failure) }
        let frame = LogRecord.headerBytes + record.count
        if Int(state.appendedEnd - state.activeBase) + frame <= capacity {
            let position = state.appendedEnd
            LogRecord.encode(record, position: position, epoch: epoch, into: bases[state.active] + Int(position - state.activeBase))
            state.appendedEnd += Int64(frame)
            return .done(position)
        }
        // Room comes once what is appended is written.
        return takeWriterRole(&state, waitingFor: state.appendedEnd)
    }

    /// Done once everything before `end` is durable; else takes the writer's role or waits.
    private func durable(upTo end: Int64, _ state: inout State) -> Step {
        if state.durableEnd >= end { return .done(end) }
        if let failure = state.failure { return .failed(failure) }
        return takeWriterRole(&state, waitingFor: end)
    }

    /// `.write` with the next group if no one else writes one, else `.wait` for `end`.
    private func takeWriterRole(_ state: inout State, waitingFor end: Int64) -> Step {
        guard !state.flushing else { return .wait(until: end) }
        state.flushing = true
        return .write(startGroup(&state))
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

    /// Records a group write's outcome (a new durable end, or the log's failure) and gives up
    /// the writer's role: to the first suspended task still waiting for a later end, with the
    /// next group to write, else to whichever thread wakes first. Tasks whose end is now
    /// durable (or that must fail) are resumed.
    private func publish(_ group: Group, failure: DirectIOError?) {
        let resumed = state.updateAndBroadcast { state -> [(UnsafeContinuation<Step, Never>, Step)] in
            state.flushing = false
            if let failure {
                state.failure = failure
            } else {
                state.durableEnd = max(state.durableEnd, group.end)
            }
            var resumed: [(UnsafeContinuation<Step, Never>, Step)] = []
            guard !state.waiting.isEmpty else { return resumed }
            if let failure = state.failure {
                resumed = state.waiting.map { ($0.resume, .failed(failure)) }
                state.waiting.removeAll()
                return resumed
            }
            // Those whose end is durable try again (a placement finds room, a wait is done).
            let durable = state.durableEnd
            resumed = state.waiting.filter { $0.end <= durable }.map { ($0.resume, .wait(until: $0.end)) }
            state.waiting.removeAll { $0.end <= durable }
            if !state.waiting.isEmpty {
                let next = state.waiting.removeFirst()
                state.flushing = true
                resumed.append((next.resume, .write(startGroup(&state))))
            }
            return resumed
        }
        for (task, step) in resumed { task.resume(returning: step) }
    }

    /// How far to write zeros ahead of the log before a group write that reaches `end`:
    /// `growthBytes` past it once it passes the prepared end (else nothing, the prepared end).
    /// They are plain writes: the group's durable write after them commits the file's new
    /// size with its own data, and the cache flush it makes covers them too.
    private func zerosTarget(before end: Int64) -> Int64 {
        guard growthBytes > 0, end > prepared else { return prepared }
        return end + Int64(growthBytes)
    }

    /// The next piece of zeros towards `target`: at most the zeros buffer.
    private func zerosCount(to target: Int64) -> Int {
        Int(min(Int64(zeros.count), target - prepared))
    }

    private func zerosWritten(_ done: Int, of count: Int) throws(DirectIOError) {
        guard done == count else {
            throw DirectIOError(.ioError, operation: "append", path: path, offset: prepared + Int64(done), length: count, detail: "writing zeros ahead of the log took \(done) of \(count) bytes")
        }
        prepared += Int64(count)
    }

    private func shortWrite(_ written: Int, _ group: Group) -> DirectIOError? {
        guard written != group.count else { return nil }
        return DirectIOError(.ioError, operation: "append", path: path, offset: group.base + Int64(written), length: group.count,
                             detail: "the device took \(written) of \(group.count) bytes")
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
