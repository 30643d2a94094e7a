import DiffusionEngine
import Foundation

ComputeRuntime.configure()
print(ComputeRuntime.summary)
print("sgemm", PeakMeasurement.sgemmGFLOPS())
for _ in 0..<2 {
for (c, hw) in [(32, 28), (64, 14), (64, 7), (64, 32)] {
    for b in [false, true] {
        print(c, hw, b ? "blk" : "nhwc", Int(PeakMeasurement.convolutionGFLOPS(batch: 64, channels: c, size: hw, blocked: b)))
    }
}
}
