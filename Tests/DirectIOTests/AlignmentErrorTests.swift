import Glibc
import Testing
@testable import DirectIO

/// The aligned API refuses what direct I/O cannot do, naming the broken limit, and writes
/// nothing (RELIABILITY-CASES 1, 12).
@Suite struct AlignmentErrorTests {
    /// A 64 KiB file of known bytes on ext4 (memory and offset alignment 512 here).
    private func fixture() throws -> (directory: String, path: String, reference: [UInt8]) {
        let directory = try TestSupport.scratchDirectory()
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 65536, seed: 77)
        try TestSupport.referenceWrite(path, reference)
        return (directory, path, reference)
    }

    @Test(arguments: EngineTests.engines)
    func misalignedMemoryNamesTheMemoryAlignment(config: EngineConfig) throws {
        let (directory, path, reference) = try fixture()
        defer { TestSupport.remove(directory) }
        let file = try DirectFile(path: path, options: OpenOptions(misaligned: .fail), engine: config.make())
        let memoryAlignment = file.limits.memoryAlignment
        try #require(memoryAlignment > 1, "ext4 must report a memory alignment")
        let buffer = try AlignedBuffer(byteCount: 16384)
        let misaligned = UnsafeRawBufferPointer(start: buffer.baseAddress + 8, count: 4096)
        let error = #expect(throws: DirectIOError.self) { _ = try file.write(misaligned, at: 0) }
        #expect(error?.code == .misaligned)
        #expect(error?.operation == "write")
        #expect(error?.path == path)
        #expect(error?.offset == 0)
        #expect(error?.detail?.contains("memory alignment \(memoryAlignment)") == true)
        let readError = #expect(throws: DirectIOError.self) {
            _ = try file.read(into: UnsafeMutableRawBufferPointer(mutating: misaligned), at: 0)
        }
        #expect(readError?.code == .misaligned)
        #expect(try TestSupport.referenceRead(path, count: 65536) == reference)
    }

    @Test(arguments: EngineTests.engines)
    func misalignedOffsetAndLengthNameTheOffsetAlignment(config: EngineConfig) throws {
        let (directory, path, reference) = try fixture()
        defer { TestSupport.remove(directory) }
        let file = try DirectFile(path: path, engine: config.make())
        let offsetAlignment = file.limits.offsetAlignment
        var buffer = try AlignedBuffer(byteCount: 8192)
        buffer.copy(from: [UInt8](repeating: 0xEE, count: 8192))
        let offsetError = #expect(throws: DirectIOError.self) { _ = try file.write(buffer, count: 4096, at: 100) }
        #expect(offsetError?.code == .misaligned)
        #expect(offsetError?.offset == 100)
        #expect(offsetError?.detail?.contains("offset 100 is not a multiple of the offset alignment \(offsetAlignment)") == true)
        let lengthError = #expect(throws: DirectIOError.self) { _ = try file.write(buffer, count: 1000, at: 4096) }
        #expect(lengthError?.detail?.contains("length 1000") == true)
        let readError = #expect(throws: DirectIOError.self) { _ = try file.read(into: &buffer, count: 4096, at: 511) }
        #expect(readError?.code == .misaligned)
        #expect(try TestSupport.referenceRead(path, count: 65536) == reference)
    }

    @Test(arguments: EngineTests.engines)
    func invalidArgumentsAreTypedErrorsAndWriteNothing(config: EngineConfig) throws {
        let (directory, path, reference) = try fixture()
        defer { TestSupport.remove(directory) }
        let engine = try config.make()
        let file = try DirectFile(path: path, engine: engine)
        let buffer = try AlignedBuffer(byteCount: 4096)
        let negative = #expect(throws: DirectIOError.self) { _ = try file.write(buffer, at: -4096) }
        #expect(negative?.code == .invalidArgument)
        #expect(negative?.detail?.contains("negative") == true)
        let tooBig = #expect(throws: DirectIOError.self) { _ = try file.write(buffer, count: 8192, at: 0) }
        #expect(tooBig?.code == .invalidArgument)
        let overflow = #expect(throws: DirectIOError.self) { _ = try file.write(buffer, at: Int64.max - 1024) }
        #expect(overflow?.code == .invalidArgument)
        #expect(try TestSupport.referenceRead(path, count: 65536) == reference)

        // Writing through a read-only file: the kernel's EBADF, typed, with the path and offset.
        let readOnly = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
        let denied = #expect(throws: DirectIOError.self) { _ = try readOnly.write(buffer, at: 4096) }
        #expect(denied?.code == .badDescriptor)
        #expect(denied?.errno == .badFileDescriptor)
        #expect(denied?.offset == 4096)
        #expect(denied?.path == path)
        #expect(try TestSupport.referenceRead(path, count: 65536) == reference)
    }

    @Test func openingMissingFilesAndDirectoriesFailsClearly() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let missing = #expect(throws: DirectIOError.self) { _ = try DirectFile(path: directory + "/absent") }
        #expect(missing?.code == .notFound)
        #expect(missing?.path == directory + "/absent")
        #expect(missing?.systemCall == "open")
        let isDirectory = #expect(throws: DirectIOError.self) { _ = try DirectFile(path: directory) }
        // A directory refuses O_DIRECT (EINVAL) or writing (EISDIR); either way, no file is made.
        #expect(isDirectory != nil)
        #expect(isDirectory?.description.contains(directory) == true)
    }
}
