/// A fast seeded generator (splitmix64): offsets and data for benchmarks and tests, power cuts
/// in the simulated device; the same seed gives the same sequence.
package struct SplitMix: Sendable {
    private var state: UInt64

    package init(seed: UInt64) { state = seed }

    @inline(__always)
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Fills `bytes` with random data, eight bytes per step.
    package mutating func fill(_ bytes: UnsafeMutableRawBufferPointer) {
        var offset = 0
        while offset + 8 <= bytes.count {
            bytes.storeBytes(of: next(), toByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        while offset < bytes.count {
            bytes[offset] = UInt8(truncatingIfNeeded: next())
            offset += 1
        }
    }
}
