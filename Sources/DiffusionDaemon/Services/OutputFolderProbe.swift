import Foundation
import ImageCodecs
#if canImport(Glibc)
import Glibc
#endif

/// The check a daemon on a shared store makes of its output folder at start. Workers on several
/// hosts write one shared folder (docs/scale-out.md), which must give them, within the folder:
/// files created under a temporary name and renamed into place atomically (a reader sees the whole
/// file or none), `link(2)` that refuses an existing name (so no worker replaces an image another
/// recorded), and what one worker wrote read back by the same path. The probe does each once on
/// a file of its own and removes it; a folder that fails refuses the start, naming the folder.
public enum OutputFolderProbe {
    /// The folder failed the probe.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var folder: String
        public var step: String
        public var description: String {
            "output folder \(folder) cannot be shared by workers: \(step). Workers that share a store need one output "
                + "folder with atomic rename and link(2) within it (a local file system, NFS v3/v4, CephFS; docs/scale-out.md)"
        }
    }

    /// Probes `folder` with files named after `worker` and this process.
    public static func check(_ folder: String, worker: String) throws(Failure) {
        let base = folder + "/" + AtomicFile.temporaryPrefix + "diffusiond-probe-\(worker)-\(getpid())"
        let first = base + ".a", second = base + ".b"
        let bytes = Array("diffusiond output probe \(UUID().uuidString)\n".utf8)
        defer { unlink(first); unlink(second) }
        func fail(_ step: String) -> Failure { Failure(folder: folder, step: step) }
        do {
            guard try AtomicFile.placeExclusively(bytes, at: first) == .placed else { throw fail("a new probe file was found in place already") }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw fail("cannot create a file and link it into place (\(error))")
        }
        do {
            switch try AtomicFile.placeExclusively(Array("another\n".utf8), at: first) {
            case .placed: throw fail("link(2) replaced an existing file (hard links unsupported: images of two workers could replace one another)")
            case let .exists(temporary): AtomicFile.discard(temporary: temporary)
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw fail("cannot write a second file beside the first (\(error))")
        }
        guard rename(first, second) == 0 else { throw fail("rename within the folder failed (\(String(cString: strerror(errno))))") }
        guard access(first, F_OK) != 0 else { throw fail("a renamed file is still there under its old name") }
        guard let back = try? FileBytes.read(path: second), back == bytes else {
            throw fail("a renamed file does not read back as written")
        }
    }
}
