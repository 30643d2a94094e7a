/// A precondition that survives `-Ounchecked` (the engine, Metrics and the benchmark are built
/// with it, which removes `precondition`): shape, count and range checks that guard memory stay
/// in release builds. Each is an O(1) comparison per call (a few are O(rank)), off the inner loops.
@inline(__always)
public func ensure(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = "",
                  file: StaticString = #fileID, line: UInt = #line) {
    if _slowPath(!condition()) { fatalError(message(), file: file, line: line) }
}
