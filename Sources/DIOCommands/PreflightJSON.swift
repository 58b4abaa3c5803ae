import DirectIO

/// `dio inspect --json`'s pre-flight sections; the schema is docs/inspect-json.md.
extension Preflight.KernelBounce {
    var json: JSON {
        .object([
            ("bounces", bounces.map(JSON.bool) ?? .null),
            ("reasons", .array(reasons.map(JSON.string))),
            ("dmaDevice", .optional(dmaDevice)),
            ("dmaDeviceNote", .string(dmaDeviceNote)),
            ("dmaMaskBits", .optional(dmaMaskBits)),
            ("memoryEndAddress", memoryEndAddress.map { JSON.int(Int(clamping: $0)) } ?? .null),
            ("swiotlbForced", .bool(swiotlbForced)),
            ("memoryEncryption", .optional(memoryEncryption)),
            ("swiotlbSlots", .optional(swiotlbSlots)),
            ("swiotlbSlotsUsed", .optional(swiotlbSlotsUsed)),
            ("swiotlbNote", .string(swiotlbNote)),
        ])
    }
}

extension Preflight.RingAccess {
    var json: JSON {
        .object([
            ("available", available.map(JSON.bool) ?? .null),
            ("setupError", .optional(setupError)),
            ("setupFlags", .optional(setupFlags)),
            ("disabled", .optional(disabled)),
            ("group", .optional(group)),
            ("inGroup", inGroup.map(JSON.bool) ?? .null),
            ("capSysAdmin", capSysAdmin.map(JSON.bool) ?? .null),
            ("seccompMode", .optional(seccompMode)),
            ("seccompFilters", .optional(seccompFilters)),
            ("lastOpcode", .optional(lastOpcode)),
            ("opcodes", .array(opcodes.map(JSON.string))),
            ("missingOpcodes", .array(missingOpcodes.map(JSON.string))),
        ])
    }
}

extension Preflight.LockedMemory {
    var json: JSON {
        .object([
            ("limitBytes", limitKnown ? (limitBytes.map { JSON.int(Int(clamping: $0)) } ?? .string("unlimited")) : .null),
            ("capIPCLock", capIPCLock.map(JSON.bool) ?? .null),
            ("rings", .int(rings)),
            ("queueDepth", .int(queueDepth)),
            ("poolBytes", .int(poolBytes)),
            ("ringBytes", .int(ringBytes)),
            ("neededBytes", .int(Int(clamping: neededBytes))),
            ("fits", .bool(fits)),
            ("suggestedLimitBytes", .int(Int(clamping: suggestedLimitBytes))),
        ])
    }
}

extension Preflight.Finding {
    var json: JSON {
        .object([("topic", .string(topic)), ("problem", .string(problem)), ("consequence", .string(consequence)), ("fix", .string(fix))])
    }
}
