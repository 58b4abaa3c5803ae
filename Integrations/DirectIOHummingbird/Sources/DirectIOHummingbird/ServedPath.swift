import Foundation
import Glibc

/// Turns a request path into a file under the served root, or says why it may not be served.
///
/// FileMiddleware already refuses `..`, but a provider is the last line before `open`, so it
/// checks everything itself: NUL bytes, over-long paths and names, `..` segments before and
/// after percent-decoding (a path decoded once too often must not climb either), and, after
/// every symlink is resolved, that the file is still inside the root.
enum ServedPath {
    /// Linux's PATH_MAX and NAME_MAX.
    static let maxPathBytes = 4096
    static let maxNameBytes = 255

    enum Resolution: Equatable {
        case file(String)
        /// Nothing there (or not reachable): FileMiddleware answers 404.
        case missing
        /// An attempt to reach outside the root, or a path no file can have: logged, answered 404.
        case refused(String)
    }

    /// `requestPath` (as FileMiddleware passes it: decoded, starting with "/") under `root`
    /// (a resolved absolute path ending in "/").
    static func resolve(_ requestPath: String, under root: String) -> Resolution {
        if requestPath.utf8.contains(0) { return .refused("the path holds a NUL byte") }
        if requestPath.utf8.count > maxPathBytes { return .refused("the path is longer than \(maxPathBytes) bytes") }
        for form in [requestPath, requestPath.removingPercentEncoding ?? requestPath] {
            if form.utf8.contains(0) { return .refused("the path holds an encoded NUL byte") }
            let segments = form.split(separator: "/", omittingEmptySubsequences: true)
            if segments.contains(where: { $0 == ".." }) { return .refused("the path climbs out with '..'") }
            if segments.contains(where: { $0.utf8.count > maxNameBytes }) { return .refused("a name in the path is longer than \(maxNameBytes) bytes") }
        }
        // Leading slashes, however many, stay inside the root.
        let relative = requestPath.drop { $0 == "/" }
        let joined = root + relative
        guard joined.utf8.count < maxPathBytes else { return .refused("the path under the root is longer than \(maxPathBytes) bytes") }
        guard let resolved = realPath(joined) else { return .missing }
        let rootWithoutSlash = String(root.dropLast())
        guard resolved == rootWithoutSlash || resolved.hasPrefix(root) else {
            return .refused("a symlink leads out of the root (to \(resolved))")
        }
        return .file(resolved)
    }

    /// The path with every symlink, `.` and `..` resolved, or nil when it does not exist.
    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
