extension Preflight {
    /// Whether this process may use io_uring, and what the kernel's io_uring offers.
    ///
    /// Containers and hardened hosts turn io_uring off in three places: the sysctl
    /// `kernel.io_uring_disabled` (1: only CAP_SYS_ADMIN or members of `kernel.io_uring_group`;
    /// 2: nobody), a seccomp filter that refuses io_uring_setup (Docker's default profile,
    /// since 25.0), and RLIMIT_MEMLOCK, which the ring's own memory counts against.
    package struct RingAccess: Sendable, Equatable {
        /// `kernel.io_uring_disabled`: 0, 1 or 2; nil when the sysctl is missing (before 6.6).
        package var disabled: Int?
        /// `kernel.io_uring_group`: the group allowed when `disabled` is 1 (-1: none).
        package var group: Int?
        /// Whether this process is in `group` (real, effective or supplementary).
        package var inGroup: Bool?
        /// Whether this process has CAP_SYS_ADMIN (allowed when `disabled` is 1).
        package var capSysAdmin: Bool?
        /// This process's seccomp mode: 0 none, 1 strict, 2 filter (/proc/self/status).
        package var seccompMode: Int?
        /// Seccomp filters installed on this process.
        package var seccompFilters: Int?
        /// Whether a ring could be set up just now; nil when not tried (a fixture).
        package var available: Bool?
        /// Why setting up a ring failed.
        package var setupError: String?
        /// The setup flags the kernel accepted for the fastest ring DirectIO asks for.
        package var setupFlags: String?
        /// The highest opcode number this kernel knows.
        package var lastOpcode: Int?
        /// The opcodes DirectIO uses that this kernel supports, and those it lacks.
        package var opcodes: [String]
        package var missingOpcodes: [String]
    }
}

extension Preflight.RingAccess {
    /// Reads the sysctls and this process's status under `files`; with `tryRing`, also sets up
    /// a small ring to see what the kernel really allows and offers.
    init(files: SystemFiles, tryRing: Bool) {
        disabled = files.number("/proc/sys/kernel/io_uring_disabled")
        group = files.number("/proc/sys/kernel/io_uring_group")
        seccompMode = files.field("Seccomp", in: "/proc/self/status").flatMap { Int($0) }
        seccompFilters = files.field("Seccomp_filters", in: "/proc/self/status").flatMap { Int($0) }
        capSysAdmin = Preflight.hasCapability(21, files: files)  // CAP_SYS_ADMIN
        if let group, group >= 0 {
            let ids = ["Gid", "Groups"].compactMap { files.field($0, in: "/proc/self/status") }
                .flatMap { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }) }.compactMap { Int($0) }
            inGroup = ids.isEmpty ? nil : ids.contains(group)
        } else {
            inGroup = nil
        }
        opcodes = []
        missingOpcodes = []
        guard tryRing else { return }
        do {
            let ring = try IORing(entries: 4, flags: .threadPerCore)
            available = true
            setupFlags = ring.setupFlags.description
            if let support = try? ring.probe() {
                lastOpcode = Int(support.lastOpcode)
                for opcode in Opcode.allCases {
                    if support.supports(opcode) { opcodes.append(opcode.description) } else { missingOpcodes.append(opcode.description) }
                }
            }
        } catch {
            available = false
            setupError = "io_uring_setup: \(error) (errno \(error.rawValue))"
        }
    }
}

extension Preflight {
    /// Whether capability number `bit` is in this process's effective set (/proc/self/status
    /// CapEff, a hexadecimal mask; numbers from include/uapi/linux/capability.h).
    static func hasCapability(_ bit: Int, files: SystemFiles) -> Bool? {
        guard let mask = files.field("CapEff", in: "/proc/self/status").flatMap({ UInt64($0, radix: 16) }) else { return nil }
        return mask & (UInt64(1) << UInt64(bit)) != 0
    }
}
