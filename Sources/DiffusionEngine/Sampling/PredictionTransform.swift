/// Converts a network output to the x0 and eps estimates at one timestep, in float32 lanes.
///
/// Coefficients are computed in float64 from the (respaced) schedule and rounded to float32,
/// like the reference's extraction of float64 tables into float32 tensors.
struct PredictionTransform: Sendable {
    let prediction: PredictionType
    let sqrtAlphaBar: Float
    let sqrtOneMinusAlphaBar: Float
    let sqrtRecipAlphaBar: Float
    let sqrtRecipAlphaBarMinusOne: Float

    init(prediction: PredictionType, alphaBar: Double) {
        self.prediction = prediction
        sqrtAlphaBar = Float(alphaBar.squareRoot())
        sqrtOneMinusAlphaBar = Float((1 - alphaBar).squareRoot())
        sqrtRecipAlphaBar = Float((1 / alphaBar).squareRoot())
        sqrtRecipAlphaBarMinusOne = Float((1 / alphaBar - 1).squareRoot())
    }

    typealias Vector = SIMD16<Float>

    /// x0 from the output (not clipped).
    @inline(__always)
    func x0(x: Vector, output o: Vector) -> Vector {
        switch prediction {
        case .epsilon: return sqrtRecipAlphaBar * x - sqrtRecipAlphaBarMinusOne * o
        case .sample: return o
        case .velocity: return sqrtAlphaBar * x - sqrtOneMinusAlphaBar * o
        }
    }

    /// eps from the output (no clipping involved).
    @inline(__always)
    func epsilon(x: Vector, output o: Vector) -> Vector {
        switch prediction {
        case .epsilon: return o
        case .sample: return (sqrtRecipAlphaBar * x - o) / sqrtRecipAlphaBarMinusOne
        case .velocity: return sqrtAlphaBar * o + sqrtOneMinusAlphaBar * x
        }
    }

    /// eps re-derived from an x0 estimate: (x / sqrt(abar) - x0) / sqrt(1/abar - 1).
    @inline(__always)
    func epsilon(x: Vector, x0: Vector) -> Vector {
        (sqrtRecipAlphaBar * x - x0) / sqrtRecipAlphaBarMinusOne
    }

    /// x0 from an eps estimate: x / sqrt(abar) - sqrt(1/abar - 1) eps.
    @inline(__always)
    func x0(x: Vector, epsilon e: Vector) -> Vector {
        sqrtRecipAlphaBar * x - sqrtRecipAlphaBarMinusOne * e
    }
}
