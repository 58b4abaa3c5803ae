import DirectIO

/// What one benchmark job measured.
public struct BenchResult: Sendable {
    public var workload: Workload
    package var engine: EngineKind
    /// Completed I/Os inside the measured window (after the ramp).
    public var ios: Int
    public var bytes: Int64
    public var seconds: Double
    public var latencyP50Ns: UInt64
    public var latencyP99Ns: UInt64
    public var latencyP999Ns: UInt64
    public var cpuUserSeconds: Double
    public var cpuSystemSeconds: Double
    /// Bytes moved straight between the caller's buffers and the device.
    public var bytesDirect: Int64
    /// Bytes copied through bounce buffers.
    public var bytesBounced: Int64
    /// Bytes slid into place inside their own buffer after (reads) or around (writes) a DMA
    /// that could not target them directly (memory misaligned against the file offset).
    public var bytesShifted: Int64
    /// Whether the pool's buffers were registered (fixed buffers).
    public var registeredBuffers: Bool
    public var notes: [String]
    /// The kernel's own bounce: swiotlb slots (2 KiB each) in use before and after the job;
    /// nil where debugfs cannot tell (not mounted, or not root).
    public var swiotlbSlotsUsedBefore: Int? = nil
    public var swiotlbSlotsUsedAfter: Int? = nil

    public var iops: Double { seconds > 0 ? Double(ios) / seconds : 0 }
    public var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : 0 }
    public var cpuMicrosecondsPerIO: Double { ios > 0 ? (cpuUserSeconds + cpuSystemSeconds) * 1e6 / Double(ios) : 0 }

    var json: JSON {
        .object([
            ("name", .string(workload.name)),
            ("rw", .string(workload.pattern.rawValue)),
            ("bs", .int(workload.blockBytes)),
            ("iodepth", .int(workload.iodepth)),
            ("size", .int(Int(workload.sizeBytes))),
            ("runtime", .double(seconds)),
            ("ios", .int(ios)),
            ("iops", .double(iops.rounded())),
            ("bytesPerSecond", .double(bytesPerSecond.rounded())),
            ("latencyNs", .object([("p50", .int(Int(latencyP50Ns))), ("p99", .int(Int(latencyP99Ns))), ("p999", .int(Int(latencyP999Ns)))])),
            ("cpu", .object([("user", .double(cpuUserSeconds)), ("system", .double(cpuSystemSeconds))])),
            ("cpuMicrosecondsPerIO", .double((cpuMicrosecondsPerIO * 1000).rounded() / 1000)),
            ("bytesDirect", .int(Int(bytesDirect))),
            ("bytesBounced", .int(Int(bytesBounced))),
            ("bytesShifted", .int(Int(bytesShifted))),
            ("engine", .string(engine.rawValue)),
            ("api", .string(workload.api.rawValue)),
            ("mode", .string(workload.mode.rawValue)),
            ("buffers", .string(registeredBuffers ? "registered" : "unregistered")),
            ("bufferOffset", .int(workload.bufferOffset)),
            ("hugePages", .string(workload.hugePages.description)),
            ("reapBatch", .int(workload.reapBatch)),
            ("seed", .int(Int(truncatingIfNeeded: workload.seed))),
            ("swiotlbSlotsUsed", swiotlbSlotsUsedBefore == nil || swiotlbSlotsUsedAfter == nil ? .string("unknown")
                : .object([("before", .optional(swiotlbSlotsUsedBefore)), ("after", .optional(swiotlbSlotsUsedAfter))])),
            ("notes", .array(notes.map(JSON.string))),
        ])
    }

    /// The results as a table, one row per job.
    static func table(_ results: [BenchResult]) -> String {
        let header = ["job", "IOPS", "MB/s", "p50 µs", "p99 µs", "p99.9 µs", "CPU µs/IO", "usr s", "sys s", "direct MB", "bounced MB", "shifted MB", "engine"]
        var rows = [header]
        for result in results {
            rows.append([
                result.workload.name + (result.workload.bufferOffset > 0 ? " +\(result.workload.bufferOffset)" : "") + (result.workload.mode == .buffered ? " buffered" : ""),
                format(result.iops, digits: 0),
                format(result.bytesPerSecond / 1e6, digits: 1),
                format(Double(result.latencyP50Ns) / 1000, digits: 1),
                format(Double(result.latencyP99Ns) / 1000, digits: 1),
                format(Double(result.latencyP999Ns) / 1000, digits: 1),
                format(result.cpuMicrosecondsPerIO, digits: 2),
                format(result.cpuUserSeconds, digits: 2),
                format(result.cpuSystemSeconds, digits: 2),
                format(Double(result.bytesDirect) / 1e6, digits: 0),
                format(Double(result.bytesBounced) / 1e6, digits: 0),
                format(Double(result.bytesShifted) / 1e6, digits: 0),
                result.engine.rawValue + (result.registeredBuffers ? "" : " (unreg.)"),
            ])
        }
        let widths = (0..<header.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == 0 ? cell + String(repeating: " ", count: widths[column] - cell.count)
                    : String(repeating: " ", count: widths[column] - cell.count) + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    static func format(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return "-" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        if digits == 0 { return String(Int(rounded)) }
        let whole = Int(rounded)
        let fraction = Int(((abs(rounded) - Double(abs(whole))) * scale).rounded())
        let fractionText = String(fraction)
        return "\(rounded < 0 && whole == 0 ? "-" : "")\(whole)." + String(repeating: "0", count: max(0, digits - fractionText.count)) + fractionText
    }
}
