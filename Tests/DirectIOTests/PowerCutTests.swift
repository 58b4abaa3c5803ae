import Glibc
import Testing
@testable import DirectIO
import DirectIOTesting
import DIOCommands

/// The in-memory device's volatile write cache: a power cut keeps what was made durable and,
/// of every write after it, the whole write, nothing, or (for non-atomic writes) some of its
/// blocks; checked block by block against a model of what each block may hold.
@Suite struct PowerCutTests {
    static let block = 4096
    static let fileBytes = 64 * block

    /// Writes of 1-4 blocks at random block offsets with a data sync now and then, then a
    /// power cut at a random point; the survivor of every block must be one the model allows.
    /// Cached writes, then durable (RWF_DSYNC) writes over some of the same blocks, then a
    /// power cut, 300 seeds: a block written durably holds that write or a later one, never
    /// what an earlier cached write put there (a device's cache keeps each block's newest
    /// data; the simulation once let an older cached write land over a durable one).
    @Test func aDurableWriteIsNeverUndoneByAnEarlierCachedOne() throws {
        for seed in UInt64(1)...300 {
            let directory = try TestSupport.scratchDirectory()
            defer { TestSupport.remove(directory) }
            let path = directory + "/data"
            try TestSupport.referenceWrite(path, [])
            let device = MemoryDevice(writeCache: .init(logicalBlockSize: 512))
            let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite), engine: .inMemory(device))
            #expect(device.setContents([UInt8](repeating: 0, count: 16 * Self.block), ofFileAt: path))
            var allowed = [[[UInt8]]](repeating: [[UInt8](repeating: 0, count: Self.block)], count: 16)
            var random = SplitMix(seed: seed)
            let pool = try BufferPool(count: 1, bufferBytes: 4 * Self.block)
            guard let buffer = pool.take() else {
                Issue.record("the pool's one buffer was not there")
                return
            }
            for _ in 0..<(4 + Int(random.next() % 12)) {
                let first = Int(random.next() % 13), count = 1 + Int(random.next() % 3)
                let durably = random.next() % 3 == 0
                let bytes = TestSupport.pattern(count: count * Self.block, seed: random.next())
                bytes.withUnsafeBytes { buffer.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
                let written = try durably
                    ? file.writeDurably(buffer, count: bytes.count, at: Int64(first * Self.block))
                    : file.write(buffer, count: bytes.count, at: Int64(first * Self.block))
                #expect(written == bytes.count)
                for index in 0..<count {
                    let version = Array(bytes[index * Self.block..<(index + 1) * Self.block])
                    // Durable: the only version left; cached: one more it may hold.
                    if durably { allowed[first + index] = [version] } else { allowed[first + index].append(version) }
                }
            }
            device.powerCut(seed: seed ^ 0xBEEF)
            let survived = try #require(device.contents(ofFileAt: path))
            for index in 0..<16 {
                // Torn at 512 bytes: each sector of the block holds a sector of an allowed version.
                for sector in stride(from: 0, to: Self.block, by: 512) {
                    let start = index * Self.block + sector
                    let piece = Array(survived[start..<start + 512])
                    #expect(allowed[index].contains { Array($0[sector..<sector + 512]) == piece }, "seed \(seed): block \(index) holds bytes an earlier write left under a durable one")
                }
            }
        }
    }

    @Test func everyBlockHoldsTheDurableDataOrOneOfTheWritesSinceAfterAnyCut() throws {
        var tornSeen = 0
        for seed in UInt64(1)...300 {
            let directory = try TestSupport.scratchDirectory()
            defer { TestSupport.remove(directory) }
            let path = directory + "/data"
            try TestSupport.referenceWrite(path, [])
            let device = MemoryDevice(writeCache: .init(logicalBlockSize: Self.block))
            let engine = try IOEngine.inMemory(device)
            let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite), engine: engine)
            let initial = TestSupport.pattern(count: Self.fileBytes, seed: seed)
            #expect(device.setContents(initial, ofFileAt: path))

            // Per block: the durable bytes, and every version written since the last sync.
            var durable = (0..<64).map { Array(initial[$0 * Self.block..<($0 + 1) * Self.block]) }
            var since = [[[UInt8]]](repeating: [], count: 64)
            var random = SplitMix(seed: seed)
            let buffer = try AlignedBuffer(byteCount: 4 * Self.block)
            let writes = 1 + Int(random.next() % 40)
            for _ in 0..<writes {
                if random.next() % 8 == 0 {
                    try file.sync(dataOnly: true)
                    for index in 0..<64 where !since[index].isEmpty {
                        durable[index] = since[index].last ?? durable[index]
                        since[index] = []
                    }
                }
                let first = Int(random.next() % 61), count = 1 + Int(random.next() % 4)
                let bytes = TestSupport.pattern(count: count * Self.block, seed: random.next())
                bytes.withUnsafeBytes { buffer.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
                #expect(try file.write(UnsafeRawBufferPointer(start: buffer.baseAddress, count: bytes.count), at: Int64(first * Self.block)) == bytes.count)
                for index in 0..<count {
                    since[first + index].append(Array(bytes[index * Self.block..<(index + 1) * Self.block]))
                }
            }
            let cut = device.powerCut(seed: seed ^ 0xC0FFEE)
            tornSeen += cut.writesTorn
            let survived = try #require(device.contents(ofFileAt: path))
            #expect(survived.count == Self.fileBytes)
            for index in 0..<64 {
                let block = Array(survived[index * Self.block..<(index + 1) * Self.block])
                #expect(block == durable[index] || since[index].contains(block), "seed \(seed): block \(index) holds bytes no write put there")
            }
            // After the cut, everything that survived is durable: a second cut changes nothing.
            device.powerCut(seed: seed)
            #expect(device.contents(ofFileAt: path) == survived)
        }
        #expect(tornSeen > 0, "no cut tore a write: the model would not catch a torn page")
    }

    /// Atomic writes of several blocks never tear; plain writes of the same size do.
    @Test func atomicWritesLandWholeOrNotAtAllWhilePlainOnesTear() throws {
        var plainTorn = 0
        for atomic in [true, false] {
            for seed in UInt64(1)...100 {
                let directory = try TestSupport.scratchDirectory()
                defer { TestSupport.remove(directory) }
                let path = directory + "/data"
                try TestSupport.referenceWrite(path, [])
                let device = MemoryDevice(writeCache: .init(logicalBlockSize: Self.block, atomicWriteUnits: 4096...65536))
                let engine = try IOEngine.inMemory(device)
                let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite), engine: engine)
                let old = TestSupport.pattern(count: Self.fileBytes, seed: seed)
                #expect(device.setContents(old, ofFileAt: path))
                let buffer = try AlignedBuffer(byteCount: 16384)
                var written: [(Int, [UInt8])] = []
                // Four 16 KiB pages, each at its own naturally aligned offset.
                for page in [0, 5, 9, 14] {
                    let bytes = TestSupport.pattern(count: 16384, seed: seed &* 31 &+ UInt64(page))
                    bytes.withUnsafeBytes { buffer.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: 16384) }
                    let memory = UnsafeRawBufferPointer(start: buffer.baseAddress, count: 16384)
                    let offset = Int64(page * 16384)
                    #expect(try (atomic ? file.atomicWrite(memory, at: offset) : file.write(memory, at: offset)) == 16384)
                    written.append((page * 16384, bytes))
                }
                let cut = device.powerCut(seed: seed)
                let survived = try #require(device.contents(ofFileAt: path))
                for (offset, bytes) in written {
                    let page = Array(survived[offset..<offset + 16384])
                    let whole = page == bytes || page == Array(old[offset..<offset + 16384])
                    if atomic {
                        #expect(whole, "seed \(seed): an atomic write at \(offset) tore")
                    } else if !whole {
                        plainTorn += 1
                    }
                }
                if atomic { #expect(cut.writesTorn == 0) }
            }
        }
        #expect(plainTorn > 0, "plain writes never tore: the test would not tell atomic ones apart")
    }

    @Test func withoutAWriteCacheAPowerCutChangesNothing() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, [])
        let device = MemoryDevice()
        let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite), engine: IOEngine.inMemory(device))
        let bytes = TestSupport.pattern(count: 8192, seed: 3)
        #expect(try file.write(bytes, at: 0) == 8192)
        #expect(device.powerCut(seed: 1) == MemoryDevice.PowerCut())
        #expect(device.contents(ofFileAt: path) == bytes)
        // And it takes no atomic writes (a plain device has no atomic units).
        let buffer = try AlignedBuffer(byteCount: 4096)
        #expect(throws: DirectIOError.self) { _ = try file.atomicWrite(UnsafeRawBufferPointer(start: buffer.baseAddress, count: 4096), at: 0) }
    }
}
