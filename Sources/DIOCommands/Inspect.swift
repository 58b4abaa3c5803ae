import ArgumentParser
import DirectIO

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the direct-I/O limits of a file, block device or directory, and what stands in the way of direct I/O here.",
        discussion: """
            For a directory, prints the limits a new file created in it would have (probed with \
            a temporary file that is removed afterwards). Then the pre-flight checks: whether the \
            kernel bounces the device's DMA (swiotlb), whether this process may use io_uring, and \
            RLIMIT_MEMLOCK against a runtime of --rings rings of --queue-depth with a --pool-bytes \
            pool; each problem with its consequence and fix. --json prints one object \
            (docs/inspect-json.md).

            Example: dio inspect /data --rings 2 --pool-bytes 64m
            """)

    @Argument(help: "A file, block device or directory.")
    var path: String = "."

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "Also report what a pinned, registered buffer pool of this many bytes gets here (e.g. 64m), and count it in the locked-memory check.")
    var poolBytes: ByteCount?

    @Option(help: "Rings of the runtime to check locked memory for (default: one per online core).")
    var rings: Int?

    @Option(help: "Queue depth of each of those rings.")
    var queueDepth: Int = 128

    func validate() throws {
        if let rings, !(1...1024).contains(rings) { throw ValidationError("--rings must be 1...1024 (got \(rings))") }
        if !(1...16_383).contains(queueDepth) { throw ValidationError("--queue-depth must be 1...16383 (got \(queueDepth))") }
    }

    func run() throws {
        let pool = try poolBytes.map { try PoolReport(bytes: $0.bytes) }
        let report = Preflight.check(path: path, rings: rings, queueDepth: queueDepth, poolBytes: pool?.bytes ?? 0)
        guard let limits = report.limits else {
            if let error = report.pathError { throw error }
            throw ValidationError("cannot inspect \(path)")
        }
        // What `.automatic` picks here (honouring DIRECTIO_ENGINE), and why; a forced io_uring
        // that the kernel refuses is reported, not fatal: this command exists to explain it.
        let engineKind: String
        let engineNotes: [String]
        do {
            let automatic = try IOEngine(.automatic, queueDepth: 4)
            engineKind = automatic.kind.rawValue
            engineNotes = automatic.notes
        } catch {
            engineKind = "none"
            engineNotes = ["\(error)"]
        }
        let memlock = MemoryLimits.memlockLimitBytes
        let ring = report.ioUring

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
                ("pageCacheServesMisaligned", .bool(limits.pageCacheServesMisaligned)),
                ("logicalBlockSize", .optional(limits.logicalBlockSize)),
                ("physicalBlockSize", .optional(limits.physicalBlockSize)),
                ("maxIOBytes", .optional(limits.maxIOBytes)),
                ("maxSegments", .optional(limits.maxSegments)),
                ("maxSegmentBytes", .optional(limits.maxSegmentBytes)),
                ("dmaAlignment", .optional(limits.queue?.dmaAlignment)),
                ("virtBoundaryMask", .optional(limits.queue?.virtBoundaryMask)),
                ("atomicWriteUnitMin", .optional(limits.atomicWriteUnitMin)),
                ("atomicWriteUnitMax", .optional(limits.atomicWriteUnitMax)),
                ("atomicWriteSegmentsMax", .optional(limits.atomicWriteSegmentsMax)),
                ("atomicWriteUnitMaxOptimized", .optional(limits.atomicWriteUnitMaxOptimized)),
                ("ioUring", .bool(ring.available == true)),
                ("ioUringSetupFlags", .optional(ring.setupFlags)),
                ("ioUringNote", .optional(ring.setupError)),
                ("engine", .string(engineKind)),
                ("engineNotes", .array(engineNotes.map(JSON.string))),
                ("memlockLimitBytes", memlock.map { JSON.int(Int(clamping: $0)) } ?? .null),
                ("kernelBounce", report.kernelBounce.json),
                ("ioUringAccess", ring.json),
                ("lockedMemory", report.lockedMemory.json),
                ("findings", .array(report.findings.map(\.json))),
            ]
            if let pool { pairs.append(("pool", pool.json)) }
            print(JSON.object(pairs).rendered)
            return
        }

        func show(_ value: Int?) -> String { value.map { "\($0)" } ?? "-" }
        func atomicWrites(_ limits: DeviceLimits) -> String {
            guard let low = limits.atomicWriteUnitMin, let high = limits.atomicWriteUnitMax else { return "no (writes can tear)" }
            var text = "\(low) to \(high) bytes, \(limits.atomicWriteSegmentsMax ?? 1) segment\(limits.atomicWriteSegmentsMax == 1 ? "" : "s")"
            if let fast = limits.atomicWriteUnitMaxOptimized, fast < high { text += "; up to \(fast) in hardware, larger in software" }
            return text
        }
        func known(_ value: Int?) -> String { value.map { "\($0)" } ?? "unknown" }
        let bounce = report.kernelBounce
        let memory = report.lockedMemory
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
            ("page cache fallback", limits.pageCacheServesMisaligned ? "yes: misaligned O_DIRECT is served through the page cache; the alignments above keep I/O direct" : "no"),
            ("logical block size", show(limits.logicalBlockSize)),
            ("physical block size", show(limits.physicalBlockSize)),
            ("max I/O bytes", show(limits.maxIOBytes)),
            ("max segments", show(limits.maxSegments)),
            ("max segment bytes", show(limits.maxSegmentBytes)),
            ("DMA alignment mask", show(limits.queue?.dmaAlignment)),
            ("virt boundary mask", show(limits.queue?.virtBoundaryMask)),
            ("atomic writes", atomicWrites(limits)),
            ("", ""),
            ("kernel bounce (swiotlb)", bounce.bounces.map { $0 ? "yes: " + bounce.reasons.joined(separator: "; ") : "no" } ?? "unknown"),
            ("  DMA device", (bounce.dmaDevice ?? "none") + " (\(bounce.dmaDeviceNote))"),
            ("  DMA mask", bounce.dmaMaskBits.map { "\($0) bits" } ?? "unknown"),
            ("  memory ends at", bounce.memoryEndAddress.map { "0x" + String($0, radix: 16) + " (\(Preflight.size($0)))" } ?? "unknown"),
            ("  swiotlb forced", bounce.swiotlbForced ? "yes" : "no"),
            ("  memory encryption", bounce.memoryEncryption ?? "none"),
            ("  swiotlb slots", bounce.swiotlbSlots.map { "\($0), \(known(bounce.swiotlbSlotsUsed)) in use (\(bounce.swiotlbNote))" } ?? bounce.swiotlbNote),
            ("", ""),
            ("io_uring", ring.available == true ? "yes (\(ring.setupFlags ?? ""))" : "no: \(ring.setupError ?? "")"),
            ("  io_uring_disabled", known(ring.disabled)),
            ("  io_uring_group", known(ring.group) + (ring.inGroup.map { $0 ? " (this process is in it)" : " (this process is not in it)" } ?? "")),
            ("  seccomp", ring.seccompMode.map { ["none", "strict", "filter"][min(max($0, 0), 2)] + (ring.seccompFilters.map { ", \($0) filters" } ?? "") } ?? "unknown"),
            ("  opcodes", ring.lastOpcode.map { "\($0 + 1) known to the kernel; DirectIO's: \(ring.opcodes.joined(separator: " "))" + (ring.missingOpcodes.isEmpty ? "" : "; missing: \(ring.missingOpcodes.joined(separator: " "))") } ?? "unknown"),
            ("engine", engineKind + (engineNotes.isEmpty ? "" : " (" + engineNotes.joined(separator: "; ") + ")")),
            ("", ""),
            ("RLIMIT_MEMLOCK", memory.limitKnown ? (memory.limitBytes.map { "\($0) bytes" } ?? "unlimited") : "unknown"),
            ("  CAP_IPC_LOCK", memory.capIPCLock.map { $0 ? "yes (the limit does not apply)" : "no" } ?? "unknown"),
            ("  runtime locks", "\(Preflight.size(memory.neededBytes)): \(memory.rings) ring\(memory.rings == 1 ? "" : "s") × (\(Preflight.size(UInt64(memory.ringBytes))) queues + \(Preflight.size(UInt64(memory.poolBytes))) pool)"),
            ("  fits", memory.fits ? "yes" : "no: set at least \(Preflight.size(memory.suggestedLimitBytes)) (ulimit -l \(memory.suggestedLimitBytes >> 10); LimitMEMLOCK=\(memory.suggestedLimitBytes))"),
        ]
        if let pool { rows.append(("pool", pool.text)) }
        let width = rows.map(\.0.count).max() ?? 0
        for (name, value) in rows {
            print(name.isEmpty ? "" : name + String(repeating: " ", count: width - name.count) + "  " + value)
        }
        print("")
        if report.findings.isEmpty {
            print("No problems found.")
        } else {
            print("Problems:")
            for finding in report.findings {
                print("- \(finding.topic): \(finding.problem).")
                print("  Consequence: \(finding.consequence).")
                print("  Fix: \(finding.fix).")
            }
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
        // A forced io_uring (DIRECTIO_ENGINE) the kernel refuses leaves the blocking engine,
        // whose refusal to register says why.
        let engine = try (try? IOEngine(.automatic, queueDepth: 4)) ?? IOEngine(.blocking, queueDepth: 4)
        registration = engine.registering(pool)
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
