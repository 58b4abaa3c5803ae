extension Preflight {
    /// Whether the kernel copies this device's DMA through its own bounce buffers (swiotlb):
    /// the seeds' bounce buffers, still alive below every direct read and write.
    ///
    /// The kernel bounces a device's DMA when swiotlb is forced on its command line, when memory
    /// encryption is active (AMD SEV and Intel TDX guests bounce all I/O through shared,
    /// unencrypted memory), or for memory above what the device's DMA mask reaches. Direct I/O
    /// then runs at memcpy speed and no application hears of it.
    package struct KernelBounce: Sendable, Equatable {
        /// The sysfs name of the device that does the DMA ("0000:00:02.0"), nil when none was
        /// found (virtual devices such as loop, or no block device behind the path).
        package var dmaDevice: String?
        /// How the device was found, or why none was.
        package var dmaDeviceNote: String
        /// Address bits the device can reach (sysfs `dma_mask_bits`); nil when unknown.
        package var dmaMaskBits: Int?
        /// One past the highest physical memory address (from /proc/zoneinfo); nil when unknown.
        package var memoryEndAddress: UInt64?
        /// `swiotlb=force` on the kernel command line.
        package var swiotlbForced: Bool
        /// "AMD SEV" or "Intel TDX" when this is a confidential guest with encrypted memory.
        package var memoryEncryption: String?
        /// swiotlb's default pool: slots of 2 KiB (debugfs `io_tlb_nslabs`); 0 when no pool
        /// was set up, nil when unknown.
        package var swiotlbSlots: Int?
        /// Slots in use now (debugfs `io_tlb_used`); nil when unknown.
        package var swiotlbSlotsUsed: Int?
        /// Where the swiotlb numbers came from, or why they are unknown.
        package var swiotlbNote: String
        /// Whether the kernel bounces this device's DMA: nil when that cannot be told.
        package var bounces: Bool?
        /// Why it does, in words a user understands (empty when it does not).
        package var reasons: [String]

        /// Bytes in one swiotlb slot (IO_TLB_SIZE, include/linux/swiotlb.h).
        package static let swiotlbSlotBytes = 2048
    }
}

extension Preflight.KernelBounce {
    /// Reads everything for block device `major:minor` (a file's filesystem device, or a
    /// device node's own number); without a device, only the system-wide reasons.
    init(device: (major: UInt32, minor: UInt32)?, path: String? = nil, files: SystemFiles) {
        if let device {
            (dmaDevice, dmaMaskBits, dmaDeviceNote) = Self.dmaDevice(major: device.major, minor: device.minor, path: path, files: files)
        } else {
            (dmaDevice, dmaMaskBits, dmaDeviceNote) = (nil, nil, "no path inspected: no device's DMA mask was checked")
        }
        memoryEndAddress = Self.memoryEnd(files: files)
        swiotlbForced = Self.swiotlbForced(files: files)
        memoryEncryption = Self.memoryEncryption(files: files)
        (swiotlbSlots, swiotlbSlotsUsed, swiotlbNote) = Self.swiotlbPool(files: files)

        var reasons: [String] = []
        if swiotlbForced {
            reasons.append("swiotlb=force is on the kernel command line: every device's DMA is copied through the bounce pool")
        }
        if let memoryEncryption {
            reasons.append("memory encryption is active (\(memoryEncryption) guest): devices cannot read encrypted memory, so all I/O is bounced through shared memory")
        }
        if let bits = dmaMaskBits, bits < 64, let end = memoryEndAddress, end > UInt64(1) << UInt64(bits) {
            reasons.append("the device's DMA mask is \(bits) bits (it reaches \(Preflight.size(UInt64(1) << UInt64(bits)))) but memory extends to \(Preflight.size(end)): I/O into memory above the mask is bounced")
        }
        self.reasons = reasons
        if !reasons.isEmpty {
            bounces = true
        } else if dmaMaskBits != nil && memoryEndAddress != nil {
            bounces = false
        } else if dmaDevice == nil && dmaDeviceNote.hasPrefix("virtual") {
            bounces = false  // a loop or other virtual device does no DMA of its own
        } else {
            bounces = nil
        }
    }

    /// The device doing the DMA: walk up from the disk's sysfs directory to the first parent
    /// with `dma_mask_bits` (the PCI function of a virtio or NVMe disk). Filesystems on an
    /// anonymous device (btrfs) are resolved through their mount's source first.
    private static func dmaDevice(major: UInt32, minor: UInt32, path: String?, files: SystemFiles) -> (String?, Int?, String) {
        guard let disk = files.diskDirectory(major: major, minor: minor, path: path) else {
            return (nil, nil, "no block device behind \(major):\(minor) (tmpfs, NFS or another filesystem without one)")
        }
        if disk.hasPrefix("/sys/devices/virtual/") {
            let name = disk.split(separator: "/").last.map(String.init) ?? disk
            return (nil, nil, "virtual device \(name): it does no DMA itself (its backing file's device does)")
        }
        var directory = disk
        while directory.hasPrefix("/sys/devices/"), let slash = directory.lastIndex(of: "/") {
            if let text = files.text(directory + "/dma_mask_bits") {
                let name = String(directory[directory.index(after: slash)...])
                guard let bits = Int(text.trimmingWhitespace()), (1...64).contains(bits) else {
                    return (name, nil, "\(directory)/dma_mask_bits is malformed (\(text.trimmingWhitespace().prefix(20)))")
                }
                return (name, bits, "\(directory)/dma_mask_bits")
            }
            directory = String(directory[..<slash])
        }
        return (nil, nil, "no dma_mask_bits above \(disk)")
    }

    /// One past the highest physical page of any memory zone (/proc/zoneinfo: each zone's
    /// `start_pfn` plus `spanned` pages). Readable by every user, unlike /proc/iomem.
    private static func memoryEnd(files: SystemFiles) -> UInt64? {
        guard let text = files.text("/proc/zoneinfo") else { return nil }
        var end: UInt64? = nil
        var spanned: UInt64 = 0
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            if words.first == "Node" { spanned = 0; continue }
            if words.count == 2, words[0] == "spanned", let pages = UInt64(words[1]) { spanned = pages }
            if words.count == 2, words[0] == "start_pfn:", let start = UInt64(words[1]), spanned > 0 {
                let zoneEnd = (start + spanned) * UInt64(Sys.pageSize)
                end = max(end ?? 0, zoneEnd)
            }
        }
        return end
    }

    /// `swiotlb=force` (alone or after a size: `swiotlb=65536,force`) on /proc/cmdline.
    private static func swiotlbForced(files: SystemFiles) -> Bool {
        guard let cmdline = files.text("/proc/cmdline") else { return false }
        for word in cmdline.split(whereSeparator: { $0 == " " || $0 == "\n" }) where word.hasPrefix("swiotlb=") {
            if word.dropFirst("swiotlb=".count).split(separator: ",").contains("force") { return true }
        }
        return false
    }

    /// A confidential guest: `tdx_guest` in /proc/cpuinfo's flags (Intel TDX), or an AMD SEV
    /// flag in a guest (`hypervisor` set; on a host those flags mean "can run SEV guests").
    private static func memoryEncryption(files: SystemFiles) -> String? {
        guard let flags = files.field("flags", in: "/proc/cpuinfo")?.split(separator: " ") else { return nil }
        if flags.contains("tdx_guest") { return "Intel TDX" }
        if flags.contains("hypervisor") && (flags.contains("sev") || flags.contains("sev_es") || flags.contains("sev_snp")) {
            return "AMD SEV"
        }
        return nil
    }

    /// swiotlb's default pool from debugfs (/sys/kernel/debug/swiotlb, root only).
    private static func swiotlbPool(files: SystemFiles) -> (Int?, Int?, String) {
        let directory = "/sys/kernel/debug/swiotlb"
        if let slots = files.number(directory + "/io_tlb_nslabs") {
            guard let used = files.number(directory + "/io_tlb_used") else {
                return (slots, nil, "debugfs \(directory): io_tlb_used is missing or malformed")
            }
            return (slots, used, "debugfs \(directory)")
        }
        if let names = files.entries(directory) {
            return names.isEmpty
                ? (0, 0, "debugfs \(directory) is empty: the kernel set up no default swiotlb pool, so nothing is bounced through one")
                : (nil, nil, "debugfs \(directory) has no readable io_tlb_nslabs")
        }
        if let debug = files.entries("/sys/kernel/debug"), !debug.isEmpty {
            return (nil, nil, "debugfs has no swiotlb directory (swiotlb not built into this kernel)")
        }
        return (nil, nil, "unknown: debugfs is not mounted at /sys/kernel/debug or not readable (as root: mount -t debugfs none /sys/kernel/debug)")
    }


    /// Slots of the default pool in use right now (for `dio bench`'s before and after); nil
    /// when debugfs cannot tell.
    package static func swiotlbSlotsInUse() -> Int? {
        swiotlbPool(files: .live).1
    }
}
