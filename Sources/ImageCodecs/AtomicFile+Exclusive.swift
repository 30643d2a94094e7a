#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Placing a file without replacing one that is there: the bytes go to a hidden temporary (as in
/// `AtomicFile.write`), fsynced, then take the final name by `link(2)`, which fails when the name
/// exists, so a file in place is never replaced unless the caller decides to (`replace`).
extension AtomicFile {
    /// Where an exclusive placement stands.
    public enum Placement: Sendable, Equatable {
        /// The file is in place under its final name.
        case placed
        /// A file was there already; the temporary waits at `temporary` for `replace` or `discard`.
        case exists(temporary: String)
    }

    /// Writes `bytes` to a temporary beside `path` and links it to `path` unless a file is there.
    /// `beforeLink` runs once the temporary is durable, just before the link; what it throws ends
    /// the placement (the temporary removed).
    public static func placeExclusively(_ bytes: [UInt8], at path: String, mode: mode_t = 0o644,
                                        beforeLink: () throws -> Void = {}) throws -> Placement {
        let (dir, name) = split(path)
        let temp = "\(dir)/\(temporaryPrefix)\(name)\(temporaryMarker)\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ImageCodecError.io(path: temp, operation: "create", errno: errno) }
        do {
            try writeAll(fd: fd, bytes: bytes, path: temp)
            guard fsync(fd) == 0 else { throw ImageCodecError.io(path: temp, operation: "fsync", errno: errno) }
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
        guard close(fd) == 0 else {
            unlink(temp)
            throw ImageCodecError.io(path: temp, operation: "close", errno: errno)
        }
        do { try beforeLink() } catch {
            unlink(temp)
            throw error
        }
        if link(temp, path) == 0 {
            unlink(temp)
            try syncDirectory(dir)
            return .placed
        }
        let failure = errno
        if failure == EEXIST { return .exists(temporary: temp) }
        if failure == EPERM || failure == EOPNOTSUPP || failure == EXDEV || failure == EMLINK {
            // A file system without hard links: a rename, which replaces (one writer per name there).
            guard rename(temp, path) == 0 else {
                let e = errno
                unlink(temp)
                throw ImageCodecError.io(path: path, operation: "rename", errno: e)
            }
            try syncDirectory(dir)
            return .placed
        }
        unlink(temp)
        throw ImageCodecError.io(path: path, operation: "link", errno: failure)
    }

    /// Renames a temporary of `placeExclusively` over `path` (replacing what is there).
    public static func replace(_ path: String, with temporary: String) throws {
        guard rename(temporary, path) == 0 else {
            let e = errno
            unlink(temporary)
            throw ImageCodecError.io(path: path, operation: "rename", errno: e)
        }
        try syncDirectory(split(path).dir)
    }

    /// Removes a temporary of `placeExclusively` (the file in place was kept).
    public static func discard(temporary: String) { unlink(temporary) }

    /// The final name a temporary of this type stands for (`.<name>.tmp-<pid>-<n>` -> `<name>`), or nil.
    public static func finalName(ofTemporary name: String) -> String? {
        guard isTemporaryName(name) else { return nil }
        let chars = Array(name), marker = Array(temporaryMarker)
        var i = chars.count - marker.count
        while i >= 1 {
            if Array(chars[i ..< i + marker.count]) == marker { return String(chars[1 ..< i]) }
            i -= 1
        }
        return nil
    }

    /// Removes the temporaries in `dir` whose final name satisfies `belongs`; returns their names.
    @discardableResult
    public static func removeTemporaries(in dir: String, where belongs: (String) -> Bool) -> [String] {
        entryNames(in: dir).filter { name in
            guard let final = finalName(ofTemporary: name), belongs(final) else { return false }
            return unlink("\(dir)/\(name)") == 0
        }
    }
}
