import Glibc

/// Names the filesystem a file lives on.
enum FilesystemName {
    /// The type field of the mount with `mountID` in /proc/self/mountinfo (proc(5)): exact,
    /// including FUSE subtypes ("fuse.sshfs").
    static func fromMountInfo(mountID: UInt64) -> String? {
        guard let text = readSmallFile("/proc/self/mountinfo") else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first, UInt64(first) == mountID,
                  let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count else { continue }
            return String(fields[separator + 1])
        }
        return nil
    }

    /// The name for a statfs f_type magic number (include/uapi/linux/magic.h), for kernels
    /// without STATX_MNT_ID.
    static func fromMagic(_ magic: Int64) -> String {
        switch UInt32(truncatingIfNeeded: magic) {
        case 0xEF53: "ext4"
        case 0x5846_5342: "xfs"
        case 0x9123_683E: "btrfs"
        case 0x0102_1994: "tmpfs"
        case 0x794C_7630: "overlay"
        case 0x6573_5546: "fuse"
        case 0x6969: "nfs"
        case 0x0102_1997: "9p"
        case 0x7371_7368: "squashfs"
        case 0xF2F5_2010: "f2fs"
        case 0x2FC1_2FC1: "zfs"
        case 0x6264_6576: "bdev"
        case 0x4D44: "vfat"
        case 0x8584_58F6: "ramfs"
        case 0x6E74_6673: "ntfs3"
        case 0xFF53_4D42: "cifs"
        case 0xCA45_1A4E: "bcachefs"
        default: "unknown (0x\(String(UInt64(bitPattern: magic), radix: 16)))"
        }
    }
}
