import ArgumentParser
import DirectIO

/// `dio verify`: writes blocks that describe themselves, reads them back and reports every
/// block that is not what was written, by kind (like fio's verify).
public struct Verify: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Write self-describing blocks, read them back, and report misplaced, lost and corrupt ones.",
        discussion: """
            Each block carries a header (magic, offset, seed, write sequence, length) and a \
            CRC-32C of its payload. A block with another offset's header is misplaced, one from \
            an earlier sequence is a lost write, one with a bad checksum is torn or corrupt. \
            Exits non-zero on any mismatch. --buffer-offset and --offset-jitter misalign memory \
            and file offsets so the bounce and read-modify-write paths are verified too.

            Example: dio verify /dev/loop0 --size 64m --buffer-offset 8 --offset-jitter 100
            """)

    public init() {}

    @Argument(help: "A file (created if absent) or a block device. Its contents are overwritten.")
    var path: String

    @Option(help: "Bytes to cover.")
    var size: ByteCount = ByteCount(64 << 20)

    @Option(help: "Block size (at least 64 bytes).")
    var bs: ByteCount = ByteCount(65536)

    @Option(help: "Requests in flight (aligned offsets only; jittered offsets go one at a time).")
    var iodepth: Int = 16

    @Option(help: "Start each block's memory this many bytes into its buffer.")
    var bufferOffset: Int = 0

    @Option(help: "Shift every block's file offset by this many bytes.")
    var offsetJitter: Int = 0

    @Option(help: "Seed for the payloads.")
    var seed: UInt64 = 1

    @Option(help: "Write sequence to write and to expect.")
    var sequence: UInt32 = 1

    @Option(help: "write, verify, or both.")
    var phase: Phase = .both

    @Option(help: "auto (io_uring where this process may set up a ring, else blocking), uring or blocking.")
    var engine: Bench.EngineArgument = .auto

    @Flag(help: "Print one JSON object.")
    var json = false

    public enum Phase: String, ExpressibleByArgument, CaseIterable, Sendable { case write, verify, both }

    public func validate() throws {
        if bs.bytes < 64 { throw ValidationError("--bs must be at least 64 bytes") }
        if iodepth < 1 || iodepth > 4096 { throw ValidationError("--iodepth must be between 1 and 4096") }
        if bufferOffset < 0 || offsetJitter < 0 { throw ValidationError("--buffer-offset and --offset-jitter must not be negative") }
        if size.bytes < offsetJitter + bs.bytes { throw ValidationError("--size must hold at least one block after the jitter") }
    }

    public func run() throws {
        let report: VerifyReport
        do {
            report = try VerifyRun(
                path: path, sizeBytes: size.bytes, blockBytes: bs.bytes, iodepth: iodepth, bufferOffset: bufferOffset,
                offsetJitter: offsetJitter, seed: seed, sequence: sequence, phase: phase, engine: engine.choice
            ).run()
        } catch {
            throw error.inCommandTerms(remedy: "dio verify checks direct I/O, so it needs a filesystem that offers it (dio inspect DIR says whether one does)")
        }
        if json {
            print(report.json.rendered)
        } else {
            print("dio verify \(path): wrote \(report.bytesWritten) bytes, verified \(report.bytesVerified); mismatches \(report.mismatches) (misplaced \(report.misplaced), lost \(report.lost), corrupt \(report.corrupt))")
            for line in report.examples { print("  " + line) }
        }
        if report.mismatches > 0 { throw ExitCode(1) }
    }
}

/// What a verification found.
struct VerifyReport {
    var bytesWritten = 0
    var bytesVerified = 0
    var misplaced = 0
    var lost = 0
    var corrupt = 0
    /// The first few mismatches, described.
    var examples: [String] = []

    var mismatches: Int { misplaced + lost + corrupt }

    var json: JSON {
        .object([
            ("bytesWritten", .int(bytesWritten)), ("bytesVerified", .int(bytesVerified)), ("mismatches", .int(mismatches)),
            ("misplaced", .int(misplaced)), ("lost", .int(lost)), ("corrupt", .int(corrupt)),
            ("examples", .array(examples.map(JSON.string))),
        ])
    }

    mutating func record(_ verdict: VerifyBlock.Verdict, offset: Int64) {
        let description: String
        switch verdict {
        case .good:
            return
        case .misplaced(let found):
            misplaced += 1
            description = "block at \(offset) holds the block written for offset \(found) (misplaced write)"
        case .lost(let found):
            lost += 1
            description = "block at \(offset) is from write sequence \(found), older than expected (lost write)"
        case .corrupt:
            corrupt += 1
            description = "block at \(offset) has a bad header or checksum (torn or corrupt)"
        }
        if examples.count < 10 { examples.append(description) }
    }
}
