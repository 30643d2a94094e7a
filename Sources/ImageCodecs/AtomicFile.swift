#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whole-file reads and crash-safe writes with plain POSIX calls.
public enum FileBytes {
    /// Reads a whole file; fails beyond `limit` bytes when one is given.
    public static func read(path: String, limit: Int? = nil) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ImageCodecError.io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageCodecError.io(path: path, operation: "read", errno: errno)
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0 ..< n])
            if let limit, out.count > limit {
                throw ImageCodecError.invalidArgument("\(path): larger than \(limit) bytes")
            }
        }
        return out
    }
}

/// Writes a file so that no reader ever sees it partly written: the bytes go to
/// a hidden temporary name in the same directory (`.<name>.tmp-<pid>-<n>`),
/// are fsynced, renamed over the final name, and the directory is fsynced so
/// the rename itself survives a crash.
public enum AtomicFile {
    /// The prefix of temporary names, so that cleaners and scanners can recognise them.
    public static let temporaryPrefix = "."
    public static let temporaryMarker = ".tmp-"

    /// True for names this type uses as temporaries.
    public static func isTemporaryName(_ name: String) -> Bool {
        name.hasPrefix(temporaryPrefix) && name.contains(temporaryMarker)
    }

    /// Writes `bytes` to `path` atomically with the given permission bits.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        let (dir, name) = split(path)
        let temp = "\(dir)/\(temporaryPrefix)\(name)\(temporaryMarker)\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ImageCodecError.io(path: temp, operation: "create", errno: errno) }
        var ok = false
        defer {
            if !ok { unlink(temp) }
        }
        do {
            try writeAll(fd: fd, bytes: bytes, path: temp)
            guard fsync(fd) == 0 else { throw ImageCodecError.io(path: temp, operation: "fsync", errno: errno) }
        } catch {
            close(fd)
            throw error
        }
        guard close(fd) == 0 else { throw ImageCodecError.io(path: temp, operation: "close", errno: errno) }
        guard rename(temp, path) == 0 else { throw ImageCodecError.io(path: path, operation: "rename", errno: errno) }
        ok = true
        try syncDirectory(dir)
    }

    /// fsyncs a directory so that renames and unlinks in it are durable.
    public static func syncDirectory(_ dir: String) throws {
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw ImageCodecError.io(path: dir, operation: "open", errno: errno) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw ImageCodecError.io(path: dir, operation: "fsync", errno: errno) }
    }

    /// Removes leftover temporaries in `dir` (from a crash mid-write); returns their names.
    @discardableResult
    public static func removeTemporaries(in dir: String) -> [String] {
        entryNames(in: dir).filter { isTemporaryName($0) && unlink("\(dir)/\($0)") == 0 }
    }

    /// The names of the entries in `dir` (none when it cannot be read).
    static func entryNames(in dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let entry = readdir(d) {
            names.append(withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            })
        }
        return names
    }

    static func writeAll(fd: Int32, bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ImageCodecError.io(path: path, operation: "write", errno: errno)
                }
                offset += n
            }
        }
    }

    static func split(_ path: String) -> (dir: String, name: String) {
        if let slash = path.lastIndex(of: "/") {
            let dir = String(path[..<slash])
            return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
        }
        return (".", path)
    }
}
