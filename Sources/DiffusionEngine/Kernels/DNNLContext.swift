import CDNNL

/// The process-wide oneDNN CPU engine and stream.
final class DNNLContext: @unchecked Sendable {
    static let shared = DNNLContext()
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t

    private init() {
        var e: dnnl_engine_t?
        dnnlCheck(dnnl_engine_create(&e, dnnl_cpu, 0), "engine_create")
        var s: dnnl_stream_t?
        dnnlCheck(dnnl_stream_create(&s, e, dnnl_stream_default_flags.rawValue), "stream_create")
        engine = e!
        stream = s!
    }
}

@inline(__always)
func dnnlCheck(_ status: dnnl_status_t, _ what: @autoclosure () -> String) {
    ensure(status == dnnl_success, "oneDNN \(what()) failed with status \(status.rawValue)")
}

/// How an activation tensor is laid out in memory.
enum ActivationLayout {
    case nchw, nhwc, blocked16

    var tag: dnnl_format_tag_t {
        switch self {
        case .nchw: dnnl_nchw
        case .nhwc: dnnl_nhwc
        case .blocked16: dnnl_nChw16c
        }
    }
}
