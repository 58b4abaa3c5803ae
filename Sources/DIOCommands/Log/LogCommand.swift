import ArgumentParser
import DirectIO
import DirectIOLog
import Glibc

/// `dio log`: a `DurableLog` from the command line: fill one with known records (a writer to
/// kill for crash tests), and list what one holds.
public struct LogCommand: ParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Append to and list a DurableLog (the DirectIOLog product's group-commit log).",
        subcommands: [Fill.self, Dump.self])

    /// Appends records made from a seed, printing each one's index and position as soon as it
    /// is durable: kill it at any moment, reopen the log, and every printed record must be there.
    public struct Fill: ParsableCommand {
        public init() {}

        public static let configuration = CommandConfiguration(
            abstract: "Append --count records made from --seed to the log at PATH, printing \"INDEX POSITION\" for each once it is durable.",
            discussion: "Example: dio log fill /var/tmp/wal --count 100000 --group 8 (kill it, then dio log dump /var/tmp/wal).")

        @Argument(help: "The log file (created if absent; an existing log is appended to).")
        var path: String

        @Option(help: "Records to append.")
        var count = 1000

        @Option(help: "Records per append (append(contentsOf:)): one wait for them all.")
        var group = 1

        @Option(help: "Largest record; each is 1 to this many bytes.")
        var maxBytes = 9000

        @Option(help: "Seed for the records' sizes and bytes.")
        var seed: UInt64 = 1

        public func validate() throws {
            if count < 0 { throw ValidationError("--count must not be negative") }
            if group < 1 { throw ValidationError("--group must be at least 1") }
            if maxBytes < 1 || maxBytes > 1 << 19 { throw ValidationError("--max-bytes must be 1 to 512k") }
        }

        public func run() throws {
            let log = try DurableLog(path: path)
            var index = 0
            while index < count {
                let indices = index..<min(index + group, count)
                let positions = try log.append(contentsOf: indices.map { Self.record(seed: seed, index: $0, maxBytes: maxBytes) })
                // One write per group, so a kill can come between any two.
                var lines = ""
                for (index, position) in zip(indices, positions) { lines += "\(index) \(position)\n" }
                _ = lines.withCString { Glibc.write(STDOUT_FILENO, $0, strlen($0)) }
                index = indices.upperBound
            }
        }

        /// Record `index` of the sequence `seed` makes: 1 to `maxBytes` bytes.
        public static func record(seed: UInt64, index: Int, maxBytes: Int) -> [UInt8] {
            var random = SplitMix(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index))
            var bytes = [UInt8](repeating: 0, count: 1 + Int(random.next() % UInt64(maxBytes)))
            bytes.withUnsafeMutableBytes { random.fill($0) }
            return bytes
        }
    }

    /// Lists the records a log holds (recovering it first, as any open does).
    public struct Dump: ParsableCommand {
        public init() {}

        public static let configuration = CommandConfiguration(
            abstract: "List the records of the log at PATH: position and length, and a CRC-32C of each payload.",
            discussion: "Example: dio log dump /var/tmp/wal --json")

        @Argument(help: "The log file.")
        var path: String

        @Flag(help: "Print one JSON object.")
        var json = false

        public func run() throws {
            let log = try DurableLog(path: path)
            let records = try log.records()
            if json {
                let list = records.map { record in
                    JSON.object([("position", .int(Int(record.position))), ("length", .int(record.payload.count)),
                                 ("crc32c", .int(Int(record.payload.withUnsafeBytes { CRC32C.checksum($0) })))])
                }
                print(JSON.object([("path", .string(path)), ("records", .int(records.count)), ("end", .int(Int(log.end))), ("list", .array(list))]).rendered)
                return
            }
            for record in records {
                print("\(record.position) \(record.payload.count) \(String(record.payload.withUnsafeBytes { CRC32C.checksum($0) }, radix: 16))")
            }
            print("\(records.count) records, end \(log.end)")
        }
    }
}
