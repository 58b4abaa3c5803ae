import DirectIO

extension DurableLog {
    /// Opens the log in `file`: checks its header, finds the valid end (`LogRecord`), and
    /// writes the header again with the next epoch, durably, before anything is appended.
    /// Leaves the valid bytes of the block that holds the end at the start of `tailBuffer`
    /// (zeros after them); `scratch` holds the new header.
    static func recover(_ file: borrowing DirectFile, path: String, block: Int, tailBuffer: borrowing PoolBuffer, scratch: borrowing PoolBuffer) throws(DirectIOError) -> (end: Int64, epoch: UInt32) {
        let memory = tailBuffer.baseAddress
        let capacity = tailBuffer.count
        let blockSize = Int64(block)
        let headerRead = try file.read(into: UnsafeMutableRawBufferPointer(start: memory, count: block), at: 0)
        let headerEpoch: UInt32
        if headerRead == 0 {
            headerEpoch = 0  // a new, empty log
        } else if headerRead >= 16, let epoch = LogRecord.logHeaderEpoch(at: memory) {
            headerEpoch = epoch
        } else {
            throw DirectIOError(.invalidArgument, operation: "open log", path: path, offset: 0,
                                detail: "this file is not a DirectIO log (no valid DIOLOG01 header in its first block); nothing was changed")
        }
        guard headerEpoch < UInt32.max else {
            throw DirectIOError(.invalidArgument, operation: "open log", path: path, detail: "the log has been opened \(UInt32.max) times; its epoch cannot grow")
        }

        // Records from the second block on, read in chunks that always hold a whole record.
        var position = blockSize
        var previousEpoch: UInt32 = 0
        var chunkStart: Int64 = -1
        var chunkBytes = 0
        func load(_ needed: Int) throws(DirectIOError) -> Bool {
            if chunkStart >= 0 && position >= chunkStart && position + Int64(needed) <= chunkStart + Int64(chunkBytes) { return true }
            chunkStart = position / blockSize * blockSize
            chunkBytes = try file.read(into: UnsafeMutableRawBufferPointer(start: memory, count: capacity), at: chunkStart)
            return position + Int64(needed) <= chunkStart + Int64(chunkBytes)
        }
        while try load(LogRecord.headerBytes) {
            let header = memory + Int(position - chunkStart)
            guard let (length, epoch, checksum) = LogRecord.fields(at: header), length <= capacity - block - LogRecord.headerBytes,
                  epoch >= previousEpoch, epoch <= headerEpoch,
                  try load(LogRecord.headerBytes + length) else { break }
            let record = memory + Int(position - chunkStart)
            let payload = UnsafeRawBufferPointer(start: record + LogRecord.headerBytes, count: length)
            guard LogRecord.checksum(payload, position: position, epoch: epoch) == checksum else { break }
            previousEpoch = epoch
            position += Int64(LogRecord.headerBytes + length)
        }
        let end = position

        // The block holding the end, as far as it is valid.
        let tailBase = end / blockSize * blockSize
        let tail = Int(end - tailBase)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: block)
        if tail > 0 {
            _ = try file.read(into: UnsafeMutableRawBufferPointer(start: memory, count: block), at: tailBase)
            (memory + tail).initializeMemory(as: UInt8.self, repeating: 0, count: block - tail)
        }

        let epoch = headerEpoch + 1
        LogRecord.encodeLogHeader(epoch: epoch, into: scratch.baseAddress, blockBytes: block)
        let written = try file.writeDurably(scratch, count: block, at: 0)
        guard written == block else {
            throw DirectIOError(.ioError, operation: "open log", path: path, offset: 0, length: block, detail: "the header write took \(written) of \(block) bytes")
        }
        return (end, epoch)
    }
}
