extension Preflight {
    /// RLIMIT_MEMLOCK against what a runtime will lock.
    ///
    /// Without CAP_IPC_LOCK, the kernel charges against RLIMIT_MEMLOCK: every registered
    /// buffer, once per ring it is registered with (the pages are pinned per ring); recent
    /// kernels (6.18 here) also the ring's own memory; and, on a second count of the same
    /// limit, the pages a pool mlocks. The io_uring charge is per user, shared by all of that
    /// user's processes. systemd gives services 8 MiB by default.
    package struct LockedMemory: Sendable, Equatable {
        /// The soft limit in bytes; nil when unlimited or unknown (`limitKnown`).
        package var limitBytes: UInt64?
        package var limitKnown: Bool
        /// Whether the process has CAP_IPC_LOCK, which lifts the limit.
        package var capIPCLock: Bool?
        /// The runtime asked about: rings of `queueDepth`, each registering a pool of `poolBytes`.
        package var rings: Int
        package var queueDepth: Int
        package var poolBytes: Int
        /// Estimated bytes one ring's queues take (rounded to pages, as the kernel charges them).
        package var ringBytes: Int
        /// What the runtime locks: rings × (ring + pool).
        package var neededBytes: UInt64
        /// Whether that fits under the limit (true with CAP_IPC_LOCK or no limit).
        package var fits: Bool
        /// A limit that fits it, rounded up to a MiB: `ulimit -l` takes it in KiB,
        /// systemd's `LimitMEMLOCK=` in bytes.
        package var suggestedLimitBytes: UInt64
    }
}

extension Preflight.LockedMemory {
    init(files: SystemFiles, rings: Int, queueDepth: Int, poolBytes: Int) {
        let limit = Self.memlockLimit(files: files)
        limitKnown = limit != nil
        limitBytes = limit ?? nil
        capIPCLock = Preflight.hasCapability(14, files: files)  // CAP_IPC_LOCK
        self.rings = rings
        self.queueDepth = queueDepth
        self.poolBytes = poolBytes
        ringBytes = Self.ringBytes(runtimeQueueDepth: queueDepth)
        neededBytes = UInt64(rings) * UInt64(ringBytes + poolBytes)
        let mebibyte: UInt64 = 1 << 20
        suggestedLimitBytes = (neededBytes + mebibyte - 1) / mebibyte * mebibyte
        if capIPCLock == true {
            fits = true
        } else if let limit, let bytes = limit {
            fits = neededBytes <= bytes && UInt64(poolBytes) <= bytes
        } else {
            fits = limit != nil  // unlimited fits; unknown is not claimed to
        }
    }

    /// "Max locked memory" in /proc/self/limits: the soft limit in bytes, .some(nil) when
    /// unlimited, nil when the file is missing or malformed.
    private static func memlockLimit(files: SystemFiles) -> UInt64?? {
        guard let text = files.text("/proc/self/limits") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Max locked memory") {
            let words = line.dropFirst("Max locked memory".count).split(separator: " ", omittingEmptySubsequences: true)
            guard let soft = words.first else { return nil }
            if soft == "unlimited" { return .some(nil) }
            return UInt64(soft).map { .some($0) }
        }
        return nil
    }

    /// What the kernel charges for one of IORuntime's rings of `queueDepth`: its engine asks
    /// for (depth + 1) × 2 SQEs (room for a cancellation per request), which the kernel rounds
    /// up to a power of two, and twice as many CQEs. Two regions, each rounded up to pages:
    /// the shared rings (a header of about 256 bytes, 16 bytes per CQE, 4 per SQ index) and
    /// the SQE array (64 bytes each).
    static func ringBytes(runtimeQueueDepth queueDepth: Int) -> Int {
        var sqEntries = 1
        while sqEntries < (queueDepth + 1) * 2 { sqEntries <<= 1 }
        let cqEntries = sqEntries * 2
        func pages(_ bytes: Int) -> Int { (bytes + Sys.pageSize - 1) / Sys.pageSize * Sys.pageSize }
        return pages(256 + cqEntries * 16 + sqEntries * 4) + pages(sqEntries * 64)
    }
}
