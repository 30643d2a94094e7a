import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The receiving end of sd_notify, as systemd holds it: a Unix datagram socket bound to a path
/// or, with a leading '@', to an abstract address. The one used by the daemon's tests and by the
/// benchmark's daemon stage.
public final class NotifySocket: @unchecked Sendable {
    /// What NOTIFY_SOCKET is set to.
    public let address: String
    private let fd: Int32

    public init(address: String) throws {
        self.address = address
        var bytes = Array(address.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 } else { unlink(address) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw NotifySocketError("socket path too long: \(address)") }
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw NotifySocketError("socket: errno \(errno)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard rc == 0 else { close(fd); throw NotifySocketError("bind \(address): errno \(errno)") }
    }

    deinit {
        close(fd)
        if !address.hasPrefix("@") { unlink(address) }
    }

    /// The next message, or nil after `timeout` seconds.
    public func receive(timeout: Double) -> String? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(max(0, timeout * 1000))) > 0 else { return nil }
        return receiveNow()
    }

    /// A message already waiting, or nil.
    public func receiveNow() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        return n > 0 ? String(decoding: buffer[0 ..< n], as: UTF8.self) : nil
    }

    /// Every message that arrives within `duration`.
    public func collect(for duration: Duration) async -> [String] {
        var out: [String] = []
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline {
            if let m = receiveNow() { out.append(m) } else { try? await Task.sleep(for: .milliseconds(10)) }
        }
        return out
    }
}

public struct NotifySocketError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
