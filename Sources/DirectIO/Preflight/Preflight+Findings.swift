extension Preflight {
    /// Turns what was read into problems a new user can act on. Pure: tests feed it fixtures.
    static func findings(kernelBounce: KernelBounce, ioUring: RingAccess, lockedMemory: LockedMemory, limits: DeviceLimits?) -> [Finding] {
        var findings: [Finding] = []
        findings += bounceFindings(kernelBounce)
        findings += ringFindings(ioUring)
        findings += memoryFindings(lockedMemory)
        if let limits { findings += pathFindings(limits) }
        return findings
    }

    private static func bounceFindings(_ bounce: KernelBounce) -> [Finding] {
        let pool = bounce.swiotlbSlots.map { " (\($0) slots of 2 KiB here\(bounce.swiotlbSlotsUsed.map { ", \($0) in use" } ?? ""))" } ?? ""
        func copied(_ what: String) -> String {
            "\(what) is copied by the kernel through its swiotlb bounce pool\(pool): direct I/O runs at memcpy speed, and when the pool is exhausted I/O waits or fails"
        }
        let consequence = copied("Every direct read and write to this device")
        var findings: [Finding] = []
        if bounce.swiotlbForced {
            findings.append(Finding(topic: "kernel bounce", problem: "swiotlb=force is on the kernel command line", consequence: consequence,
                                    fix: "remove swiotlb=force from the kernel command line (it is a debugging option) and reboot"))
        }
        if let encryption = bounce.memoryEncryption {
            findings.append(Finding(topic: "kernel bounce", problem: "this is a confidential VM (\(encryption)): devices cannot read its encrypted memory", consequence: consequence,
                                    fix: "none inside the guest: it is the price of encrypted memory. Size the pool for the I/O in flight (swiotlb=<slots> on the command line) and prefer fewer, larger requests"))
        }
        if let bits = bounce.dmaMaskBits, bits < 64, let end = bounce.memoryEndAddress, end > UInt64(1) << UInt64(bits) {
            findings.append(Finding(topic: "kernel bounce",
                                    problem: "\(bounce.dmaDevice ?? "the device") can address only \(bits) bits (\(Preflight.size(UInt64(1) << UInt64(bits)))) but memory extends to \(Preflight.size(end))",
                                    consequence: copied("Direct I/O into memory above the mask"),
                                    fix: "turn on the IOMMU (intel_iommu=on or amd_iommu=on, iommu=pt) so the device reaches all memory, or keep I/O buffers below \(Preflight.size(UInt64(1) << UInt64(bits)))"))
        }
        return findings
    }

    private static func ringFindings(_ ring: RingAccess) -> [Finding] {
        let blocking = "DirectIO uses its blocking engine: each I/O in flight holds a thread in a system call, so a QD32 workload gets a fraction of the device's speed"
        var findings: [Finding] = []
        if ring.disabled == 2 {
            findings.append(Finding(topic: "io_uring", problem: "kernel.io_uring_disabled is 2: io_uring is off for every process", consequence: blocking,
                                    fix: "sysctl kernel.io_uring_disabled=0 (or 1 with kernel.io_uring_group set to this service's group)"))
        } else if ring.disabled == 1 && ring.capSysAdmin != true && ring.inGroup != true {
            let group = ring.group.map { $0 >= 0 ? "group \($0)" : "no group (io_uring_group is -1)" } ?? "an unknown group"
            findings.append(Finding(topic: "io_uring", problem: "kernel.io_uring_disabled is 1: only CAP_SYS_ADMIN and members of kernel.io_uring_group (\(group)) may use io_uring, and this process is neither", consequence: blocking,
                                    fix: "add this user to the group in kernel.io_uring_group (sysctl kernel.io_uring_group=GID if none is set), or sysctl kernel.io_uring_disabled=0"))
        }
        if ring.available == false && findings.isEmpty {
            let error = ring.setupError ?? "io_uring_setup failed"
            if ring.seccompMode == 2, error.contains("errno 1)") || error.contains("errno 38)") {
                findings.append(Finding(topic: "io_uring", problem: "a seccomp filter refuses io_uring_setup (\(error)); container runtimes' default profiles do this", consequence: blocking,
                                        fix: "allow io_uring_setup, io_uring_enter and io_uring_register in the seccomp profile (Docker: --security-opt seccomp=PROFILE)"))
            } else if error.contains("errno 12)") {
                findings.append(Finding(topic: "io_uring", problem: "io_uring_setup failed for lack of locked memory (\(error)): the ring's memory counts against RLIMIT_MEMLOCK", consequence: blocking,
                                        fix: "raise RLIMIT_MEMLOCK (see locked memory below)"))
            } else {
                findings.append(Finding(topic: "io_uring", problem: "io_uring is not available (\(error))", consequence: blocking,
                                        fix: "run on Linux 5.19 or later with io_uring enabled"))
            }
        }
        if !ring.missingOpcodes.isEmpty {
            findings.append(Finding(topic: "io_uring", problem: "this kernel lacks \(ring.missingOpcodes.joined(separator: ", "))",
                                    consequence: "DirectIO does those operations another way (READ_FIXED/WRITE_FIXED missing: unregistered buffers; SEND_ZC: sendfile or splice), or uses the blocking engine if basic reads and writes are missing",
                                    fix: "a newer kernel"))
        }
        return findings
    }

    private static func memoryFindings(_ memory: LockedMemory) -> [Finding] {
        guard !memory.fits, memory.limitKnown, let limit = memory.limitBytes else { return [] }
        let plan = "\(memory.rings) ring\(memory.rings == 1 ? "" : "s") of depth \(memory.queueDepth)" + (memory.poolBytes > 0 ? " each registering a \(Preflight.size(UInt64(memory.poolBytes))) pool" : "")
        return [Finding(topic: "locked memory",
                        problem: "RLIMIT_MEMLOCK is \(Preflight.size(limit)), and \(plan) lock about \(Preflight.size(memory.neededBytes))",
                        consequence: "Buffers that do not fit stay unregistered (the kernel pins their pages on every I/O) and rings that do not fit fall back to the blocking engine; DirectIO says so once and every I/O still completes",
                        fix: "ulimit -l \(memory.suggestedLimitBytes >> 10) in the shell, LimitMEMLOCK=\(memory.suggestedLimitBytes) in the systemd unit, memlock in /etc/security/limits.conf, or grant CAP_IPC_LOCK")]
    }

    private static func pathFindings(_ limits: DeviceLimits) -> [Finding] {
        var findings: [Finding] = []
        if !limits.directIO {
            findings.append(Finding(topic: "path", problem: "\(limits.path) (\(limits.filesystem)) does not do direct I/O: \(limits.directIONote)",
                                    consequence: "files opened with directIO: .required fail; with .preferred they use the page cache, counted as bufferedFallbacks",
                                    fix: "keep the data on ext4, xfs or a block device"))
        }
        if limits.pageCacheServesMisaligned {
            findings.append(Finding(topic: "path", problem: "\(limits.filesystem) serves direct I/O that breaks its \(limits.offsetAlignment)-byte alignment through the page cache",
                                    consequence: "a misaligned O_DIRECT request would be copied by the kernel, unseen; DirectIO keeps I/O direct by aligning to \(limits.offsetAlignment) bytes and bouncing the rest itself (counted in bytesBounced)",
                                    fix: "use buffers and offsets aligned to \(limits.offsetAlignment) bytes"))
        }
        return findings
    }
}
