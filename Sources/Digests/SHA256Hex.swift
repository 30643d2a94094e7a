import Crypto
import Foundation

/// Lowercase hex SHA-256 digests: the one helper behind bundle checksums, job-file hashes and
/// image rows.
public enum SHA256Hex {
    public static func of(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    public static func of(_ data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }
}
