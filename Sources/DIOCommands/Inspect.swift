import ArgumentParser
import DirectIO

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the direct-I/O limits of a file, block device or directory.",
        discussion: """
            For a directory, prints the limits a new file created in it would have (probed with \
            a temporary file that is removed afterwards).
            """)

    @Argument(help: "A file, block device or directory.")
    var path: String = "."

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "Also report what a pinned, registered buffer pool of this many bytes gets here (e.g. 64m).")
    var poolBytes: ByteCount?

    func run() throws {
        let limits = try DeviceLimits.of(path: path)
        var engineNote: String? = nil
        var ringFlags: String? = nil
        let ioUring: Bool
        do {
            let engine = try IOEngine(.ioUring, queueDepth: 4, ringFlags: .threadPerCore)
            ioUring = true
            ringFlags = engine.ringFlags?.description
        } catch {
            ioUring = false
            engineNote = "\(error)"
        }
        // What `.automatic` picks here (honouring DIRECTIO_ENGINE), and why.
        let automatic = try IOEngine(.automatic, queueDepth: 4)
        let memlock = MemoryLimits.memlockLimitBytes
        let pool = try poolBytes.map { try PoolReport(bytes: $0.bytes) }

        if json {
            var pairs: [(String, JSON)] = [
                ("path", .string(limits.path)),
                ("filesystem", .string(limits.filesystem)),
                ("device", .string(limits.device)),
                ("deviceName", .optional(limits.queue?.deviceName)),
                ("blockDevice", .bool(limits.isBlockDevice)),
                ("directIO", .bool(limits.directIO)),
                ("directIONote", .string(limits.directIONote)),
                ("memoryAlignment", .int(limits.memoryAlignment)),
                ("offsetAlignment", .int(limits.offsetAlignment)),
                ("readOffsetAlignment", .int(limits.readOffsetAlignment)),
                ("alignmentSource", .string(limits.alignmentSource.rawValue)),
                ("logicalBlockSize", .optional(limits.logicalBlockSize)),
                ("physicalBlockSize", .optional(limits.physicalBlockSize)),
                ("maxIOBytes", .optional(limits.maxIOBytes)),
                ("maxSegments", .optional(limits.maxSegments)),
                ("maxSegmentBytes", .optional(limits.maxSegmentBytes)),
                ("dmaAlignment", .optional(limits.queue?.dmaAlignment)),
                ("virtBoundaryMask", .optional(limits.queue?.virtBoundaryMask)),
                ("ioUring", .bool(ioUring)),
                ("ioUringSetupFlags", .optional(ringFlags)),
                ("ioUringNote", .optional(engineNote)),
                ("engine", .string(automatic.kind.rawValue)),
                ("engineNotes", .array(automatic.notes.map(JSON.string))),
                ("memlockLimitBytes", memlock.map { JSON.int(Int(clamping: $0)) } ?? .null),
            ]
            if let pool { pairs.append(("pool", pool.json)) }
            print(JSON.object(pairs).rendered)
            return
        }

        func show(_ value: Int?) -> String { value.map { "\($0)" } ?? "-" }
        var rows: [(String, String)] = [
            ("path", limits.path),
            ("filesystem", limits.filesystem),
            ("device", limits.device + (limits.queue.map { " (\($0.deviceName))" } ?? "")),
            ("direct I/O", limits.directIO ? "yes" : "no"),
            ("  how known", limits.directIONote),
            ("memory alignment", "\(limits.memoryAlignment) bytes"),
            ("offset alignment", "\(limits.offsetAlignment) bytes"),
            ("read offset alignment", "\(limits.readOffsetAlignment) bytes"),
            ("  from", limits.alignmentSource.rawValue),
            ("logical block size", show(limits.logicalBlockSize)),
            ("physical block size", show(limits.physicalBlockSize)),
            ("max I/O bytes", show(limits.maxIOBytes)),
            ("max segments", show(limits.maxSegments)),
            ("max segment bytes", show(limits.maxSegmentBytes)),
            ("DMA alignment mask", show(limits.queue?.dmaAlignment)),
            ("virt boundary mask", show(limits.queue?.virtBoundaryMask)),
            ("io_uring", ioUring ? "yes (\(ringFlags ?? ""))" : "no: \(engineNote ?? "")"),
            ("engine", automatic.kind.rawValue + (automatic.notes.isEmpty ? "" : " (" + automatic.notes.joined(separator: "; ") + ")")),
            ("RLIMIT_MEMLOCK", memlock.map { "\($0) bytes" } ?? "unlimited"),
        ]
        if let pool { rows.append(("pool", pool.text)) }
        let width = rows.map(\.0.count).max() ?? 0
        for (name, value) in rows {
            print(name + String(repeating: " ", count: width - name.count) + "  " + value)
        }
    }
}

/// What a pool of a given size gets on this machine: locked or not, registered or not.
struct PoolReport {
    static let bufferBytes = 64 * 1024
    let bytes: Int
    let mapping: MappingReport
    let registration: BufferPool.Registration

    init(bytes: Int) throws {
        let count = max(1, (bytes + Self.bufferBytes - 1) / Self.bufferBytes)
        let pool = try BufferPool(count: count, bufferBytes: Self.bufferBytes)
        let engine = try IOEngine(.automatic, queueDepth: 4)
        registration = engine.register(pool)
        self.bytes = count * Self.bufferBytes
        mapping = pool.mapping
    }

    var registered: Bool { if case .registered = registration { true } else { false } }

    var json: JSON {
        .object([
            ("bytes", .int(bytes)),
            ("locked", .bool(mapping.locked)),
            ("registered", .bool(registered)),
            ("notes", .array((mapping.notes + (registered ? [] : [registration.description])).map(JSON.string))),
        ])
    }

    var text: String {
        "\(bytes) bytes, \(mapping.locked ? "locked" : "not locked"), \(registration)"
            + (mapping.notes.isEmpty ? "" : "; " + mapping.notes.joined(separator: "; "))
    }
}
