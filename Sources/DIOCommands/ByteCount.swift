import ArgumentParser

/// A byte count with an optional k/m/g suffix (powers of 1024, as fio reads them).
public struct ByteCount: ExpressibleByArgument, Sendable, Equatable {
    public let bytes: Int

    public init(_ bytes: Int) { self.bytes = bytes }

    public init?(argument: String) {
        guard let bytes = ByteCount.parse(argument) else { return nil }
        self.bytes = bytes
    }

    /// Help shows a default as users type it ("4k"), not as Swift prints the value.
    public var defaultValueDescription: String { ByteCount.format(bytes) }

    public static func parse(_ text: String) -> Int? {
        let lower = text.lowercased()
        let multipliers: [(String, Int)] = [("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("b", 1)]
        for (suffix, multiplier) in multipliers where lower.hasSuffix(suffix) {
            guard let value = Int(lower.dropLast(suffix.count)), value >= 0 else { return nil }
            let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
            return overflow ? nil : product
        }
        return Int(lower).flatMap { $0 >= 0 ? $0 : nil }
    }

    /// "4k", "1m", "1g", or plain bytes when not a whole multiple.
    public static func format(_ bytes: Int) -> String {
        for (suffix, unit) in [("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)] where bytes >= unit && bytes % unit == 0 {
            return "\(bytes / unit)\(suffix)"
        }
        return "\(bytes)"
    }
}

/// fio's bsrange: "MIN-MAX", each a byte count ("1-9000", "4k-64k").
public struct SizeRange: ExpressibleByArgument, Sendable, Equatable {
    public let range: ClosedRange<Int>

    public init?(argument: String) {
        let parts = argument.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let low = ByteCount.parse(String(parts[0])), let high = ByteCount.parse(String(parts[1])), low >= 1, low <= high else { return nil }
        range = low...high
    }

    public var defaultValueDescription: String { "\(ByteCount.format(range.lowerBound))-\(ByteCount.format(range.upperBound))" }
}
