import CDNNL

/// A oneDNN reorder from one description of a tensor to another (a layout change, a number-format
/// change, or both), created once and run on any pair of buffers; with `accumulate` it adds the
/// reordered source onto what the destination holds.
final class LayoutReorder {
    private var primitive: dnnl_primitive_t?
    private var source: dnnl_memory_t?, destination: dnnl_memory_t?

    init(from sourceLayout: UnsafePointer<dnnl_memory_desc_t>, to destinationLayout: UnsafePointer<dnnl_memory_desc_t>,
         accumulate: Bool = false) {
        let ctx = DNNLContext.shared
        var attr: dnnl_primitive_attr_t?
        dnnlCheck(dnnl_primitive_attr_create(&attr), "reorder attr")
        defer { dnnl_primitive_attr_destroy(attr) }
        if accumulate {
            var ops: dnnl_post_ops_t?
            dnnlCheck(dnnl_post_ops_create(&ops), "reorder post ops")
            dnnlCheck(dnnl_post_ops_append_sum(ops, 1), "reorder sum")
            dnnlCheck(dnnl_primitive_attr_set_post_ops(attr, ops), "set reorder post ops")
            dnnl_post_ops_destroy(ops)
        }
        var pd: dnnl_primitive_desc_t?
        dnnlCheck(dnnl_reorder_primitive_desc_create(&pd, sourceLayout, ctx.engine, destinationLayout, ctx.engine, attr), "reorder pd")
        defer { dnnl_primitive_desc_destroy(pd) }
        dnnlCheck(dnnl_primitive_create(&primitive, pd), "reorder")
        dnnlCheck(dnnl_memory_create(&source, sourceLayout, ctx.engine, nil), "reorder source")
        dnnlCheck(dnnl_memory_create(&destination, destinationLayout, ctx.engine, nil), "reorder destination")
    }

    /// Reorders `input` into `output` (adding onto it with `accumulate`), on the shared stream.
    func callAsFunction(_ input: UnsafeRawPointer, _ output: UnsafeMutableRawPointer) {
        dnnl_memory_set_data_handle(source, UnsafeMutableRawPointer(mutating: input))
        dnnl_memory_set_data_handle(destination, output)
        var args = (dnnl_exec_arg_t(arg: kDNNLArgSrc, memory: source), dnnl_exec_arg_t(arg: kDNNLArgDst, memory: destination))
        withUnsafePointer(to: &args) {
            $0.withMemoryRebound(to: dnnl_exec_arg_t.self, capacity: 2) {
                dnnlCheck(dnnl_primitive_execute(primitive, DNNLContext.shared.stream, 2, $0), "reorder exec")
            }
        }
    }

    deinit {
        dnnl_primitive_destroy(primitive)
        dnnl_memory_destroy(source)
        dnnl_memory_destroy(destination)
    }
}
