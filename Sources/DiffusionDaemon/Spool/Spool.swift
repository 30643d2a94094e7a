import Digests
import Foundation
import ImageCodecs
#if canImport(Glibc)
import Glibc
#endif

/// The spool directories and the file moves between them.
///
/// ```
/// spool/incoming/  users drop job files here (or `diffusionctl submit`)
/// spool/active/    claimed jobs: <millis>-<pid>-<n>--<original name>
/// spool/done/      finished jobs' files
/// spool/failed/    rejected, failed and canceled jobs' files, each beside <name>.error
/// ```
///
/// In incoming/, names starting with '.' (temporaries, editor probes), ending
/// in '~', '.swp', '.swx', '.tmp', '.part' or '.error', and '#...#' are
/// ignored. Only regular files are jobs: a symlink, FIFO, socket, device or
/// directory is moved to failed/ with an .error saying what it is (never
/// followed or opened). Files whose extension is not .yml, .yaml or .json are
/// rejected the same way.
public struct Spool: Sendable {
    public var root: String
    public var incoming: String { root + "/incoming" }
    public var active: String { root + "/active" }
    public var done: String { root + "/done" }
    public var failed: String { root + "/failed" }

    public init(root: String) { self.root = root }

    public static let jobExtensions = ["yml", "yaml", "json"]

    /// Creates the four directories.
    public func ensureDirectories() throws {
        for d in [root, incoming, active, done, failed] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
    }

    /// True for names the watcher never touches.
    public static func isIgnored(_ name: String) -> Bool {
        if name.isEmpty || name.hasPrefix(".") { return true }
        if name.hasSuffix("~") { return true }
        if name.hasPrefix("#") && name.hasSuffix("#") { return true }
        let lower = name.lowercased()
        for suffix in [".swp", ".swx", ".swo", ".tmp", ".part", ".error", ".crdownload"] where lower.hasSuffix(suffix) {
            return true
        }
        return false
    }

    /// Names in incoming/ that are not ignored, in arrival order: by the time each file took its
    /// present name and content (its ctime: set by the last write and by the rename into
    /// incoming/, unlike the mtime that `mv`, `cp -p` and `rsync -t` carry over), then, for equal
    /// ctimes (the kernel's clock ticks every few milliseconds), by `arrival` (the order the
    /// watcher saw them complete in), then name.
    public func candidates(arrival: (String) -> Int = { _ in 0 }) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: incoming)) ?? []
        return names.filter { !Self.isIgnored($0) }.map { name -> (String, Int, Int, Int) in
            var st = stat()
            guard lstat(incoming + "/" + name, &st) == 0 else { return (name, 0, 0, 0) }
            return (name, Int(st.st_ctim.tv_sec), Int(st.st_ctim.tv_nsec), arrival(name))
        }.sorted { ($0.1, $0.2, $0.3, $0.0) < ($1.1, $1.2, $1.3, $1.0) }.map(\.0)
    }

    /// What kind of directory entry a path is, without following symlinks.
    public static func entryKind(_ path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return "regular file"
        case S_IFLNK: return "symbolic link"
        case S_IFDIR: return "directory"
        case S_IFIFO: return "FIFO"
        case S_IFSOCK: return "socket"
        case S_IFCHR, S_IFBLK: return "device"
        default: return "special file"
        }
    }

    nonisolated(unsafe) private static var counter = 0
    private static let counterLock = NSLock()

    /// A fresh name in active/ for an incoming file.
    public static func makeSpoolName(for original: String) -> String {
        counterLock.lock()
        counter += 1
        let n = counter
        counterLock.unlock()
        let ms = Int(Date().timeIntervalSince1970 * 1000)
        // The random part keeps names apart across hosts sharing a store (containers all run as pid 1).
        let nonce = String(UInt32.random(in: 0 ... .max), radix: 16)
        return "\(ms)-\(getpid())-\(n)-\(nonce)--\(original)"
    }

    /// The original name inside a spool name.
    public static func originalName(ofSpoolName spoolName: String) -> String {
        if let r = spoolName.range(of: "--") { return String(spoolName[r.upperBound...]) }
        return spoolName
    }

    /// Claims an incoming file by renaming it into active/. Returns nil when it
    /// is gone (someone else claimed it).
    public func claim(_ name: String) throws -> String? {
        let spoolName = Self.makeSpoolName(for: name)
        if rename(incoming + "/" + name, active + "/" + spoolName) != 0 {
            if errno == ENOENT { return nil }
            throw ImageCodecError.io(path: incoming + "/" + name, operation: "rename", errno: errno)
        }
        try? AtomicFile.syncDirectory(active)
        return spoolName
    }

    /// Reads a claimed file without following symlinks, up to `limit` bytes.
    public func readActive(_ spoolName: String, limit: Int) throws -> [UInt8] {
        let path = active + "/" + spoolName
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw ImageCodecError.io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            throw ImageCodecError.invalidArgument("not a regular file")
        }
        if Int(st.st_size) > limit {
            throw ImageCodecError.invalidArgument("file is \(st.st_size) bytes, more than the limit of \(limit)")
        }
        var out = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var total = 0
        while total < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + total, $0.count - total) }
            if n < 0 { if errno == EINTR { continue }; throw ImageCodecError.io(path: path, operation: "read", errno: errno) }
            if n == 0 { break }
            total += n
        }
        if total > limit { throw ImageCodecError.invalidArgument("file is more than the limit of \(limit) bytes") }
        return Array(out[0 ..< total])
    }

    /// A name in `dir` based on `name` that does not exist yet (suffix -1, -2, ...).
    static func freeName(in dir: String, _ name: String, alsoFree suffix: String? = nil) -> String {
        func taken(_ n: String) -> Bool {
            Self.entryKind(dir + "/" + n) != nil || (suffix.map { Self.entryKind(dir + "/" + n + $0) != nil } ?? false)
        }
        if !taken(name) { return name }
        let ext = (name as NSString).pathExtension
        let stem = (name as NSString).deletingPathExtension
        for i in 1 ... 100_000 {
            let candidate = ext.isEmpty ? "\(stem)-\(i)" : "\(stem)-\(i).\(ext)"
            if !taken(candidate) { return candidate }
        }
        return "\(stem)-\(UUID().uuidString)"
    }

    /// Moves `path` to failed/ under (a free variant of) `name` and writes
    /// `<name>.error` beside it. Returns the name used.
    @discardableResult
    public func reject(path: String, name: String, error: String) throws -> String {
        let dest = Self.freeName(in: failed, name, alsoFree: ".error")
        let errorText = "\(name): \(error)\n"
        try AtomicFile.write(Array(errorText.utf8), to: failed + "/" + dest + ".error")
        if rename(path, failed + "/" + dest) != 0 && errno != ENOENT {
            throw ImageCodecError.io(path: path, operation: "rename", errno: errno)
        }
        try? AtomicFile.syncDirectory(failed)
        return dest
    }

    /// Moves a claimed file to done/ (original name, made unique). Returns the name used.
    @discardableResult
    public func finish(spoolName: String) throws -> String? {
        let src = active + "/" + spoolName
        guard Self.entryKind(src) != nil else { return nil }
        let dest = Self.freeName(in: done, Self.originalName(ofSpoolName: spoolName))
        guard rename(src, done + "/" + dest) == 0 else {
            throw ImageCodecError.io(path: src, operation: "rename", errno: errno)
        }
        try? AtomicFile.syncDirectory(done)
        return dest
    }

    /// Moves a claimed file to failed/ with an .error file.
    @discardableResult
    public func fail(spoolName: String, error: String) throws -> String? {
        let src = active + "/" + spoolName
        guard Self.entryKind(src) != nil else { return nil }
        return try reject(path: src, name: Self.originalName(ofSpoolName: spoolName), error: error)
    }

    /// Removes a job's file from failed/ (and its .error) when a job is retried: the file
    /// named `name` or a numbered variant of it whose content has the SHA-256 `sha256`.
    public func removeFailedCopy(named name: String, sha256: String) {
        let stem = (name as NSString).deletingPathExtension, ext = (name as NSString).pathExtension
        let names = (try? FileManager.default.contentsOfDirectory(atPath: failed)) ?? []
        for candidate in names where candidate == name || (candidate.hasPrefix(stem + "-") && candidate.hasSuffix("." + ext)) {
            let path = failed + "/" + candidate
            guard Self.entryKind(path) == "regular file", let bytes = try? readFile(path),
                  SHA256Hex.of(bytes) == sha256 else { continue }
            unlink(path)
            unlink(path + ".error")
            try? AtomicFile.syncDirectory(failed)
            return
        }
    }

    private func readFile(_ path: String) throws -> [UInt8] { try FileBytes.read(path: path, limit: 16 << 20) }

    /// Submits a job file the way `diffusionctl submit` does: write a hidden
    /// temporary in incoming/, fsync, rename to the final name (made unique), fsync the directory.
    public func submit(_ bytes: [UInt8], name: String) throws -> String {
        let dest = Self.freeName(in: incoming, name)
        try AtomicFile.write(bytes, to: incoming + "/" + dest, mode: 0o644)
        return dest
    }
}
