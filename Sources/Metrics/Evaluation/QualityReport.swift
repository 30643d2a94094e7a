/// The sample-quality metrics of a set of images, as `metrics.json` and `diffusionctl metrics --json` write them.
///
/// Every metric states the N it was measured at; where a held-out real set exists, the same
/// metric of N real images ("data floor") stands beside it, since FID and KID are biased by N.
public struct QualityReport: Codable, Sendable, Equatable {
    /// Fréchet distance to the reference statistics.
    public struct FID: Codable, Sendable, Equatable {
        public var value: Double
        /// Images measured.
        public var n: Int
        /// FID of n held-out real images against the same reference (nil without a floor set).
        public var dataFloor: Double?
        /// The N of the data floor (n, or the floor set's size when n exceeds it).
        public var dataFloorN: Int?
    }
    /// Kernel inception distance to the reference sample.
    public struct KID: Codable, Sendable, Equatable {
        public var mean: Double
        public var std: Double
        public var subsets: Int
        public var subsetSize: Int
        /// KID (mean) of held-out real images at the same sizes.
        public var dataFloorMean: Double?
    }
    /// Improved precision and recall against the reference sample.
    public struct PrecisionRecall: Codable, Sendable, Equatable {
        public var precision: Double
        public var recall: Double
        public var k: Int
        /// Reference samples the generated set was compared with.
        public var referenceN: Int
        /// Precision and recall of held-out real images at the same sizes.
        public var dataFloorPrecision: Double?
        public var dataFloorRecall: Double?
    }
    /// How often the features network recognises the requested class.
    public struct ClassAccuracy: Codable, Sendable, Equatable {
        public var value: Double
        /// Images that requested a class.
        public var n: Int
        /// The network's accuracy on held-out real images (its bundle's test accuracy).
        public var realImageAccuracy: Double?
    }
    /// The metrics of the images of one requested class.
    public struct PerClass: Codable, Sendable, Equatable {
        public var index: Int
        public var name: String?
        public var n: Int
        public var accuracy: Double
        /// FID against the class's reference statistics (nil below the minimum N).
        public var fid: Double?
        public var fidDataFloor: Double?
    }

    /// Images measured.
    public var n: Int
    /// The features bundle and its content hash.
    public var featuresModel: String
    public var featuresModelHash: String
    /// The reference set and how many images its statistics summarise.
    public var reference: String
    public var referenceImages: Int
    /// The smallest N that gets an FID.
    public var minimumImagesForFID: Int
    public var fid: FID?
    public var kid: KID?
    public var precisionRecall: PrecisionRecall?
    public var classAccuracy: ClassAccuracy?
    public var perClass: [PerClass]
    /// How many images the features network assigns to each class.
    public var predictedClassCounts: [Int]
    /// Why a metric is missing, by metric name ("fid", "kid", "precision_recall", "class_accuracy").
    public var omitted: [String: String]
    /// Seconds the measurement took (features and metrics; not reading files).
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case n, featuresModel = "features_model", featuresModelHash = "features_model_sha256", reference
        case referenceImages = "reference_images", minimumImagesForFID = "minimum_images_for_fid", fid, kid
        case precisionRecall = "precision_recall", classAccuracy = "class_accuracy", perClass = "per_class"
        case predictedClassCounts = "predicted_class_counts", omitted, seconds
    }
}

extension QualityReport.FID {
    enum CodingKeys: String, CodingKey { case value, n, dataFloor = "data_floor", dataFloorN = "data_floor_n" }
}
extension QualityReport.KID {
    enum CodingKeys: String, CodingKey { case mean, std, subsets, subsetSize = "subset_size", dataFloorMean = "data_floor_mean" }
}
extension QualityReport.PrecisionRecall {
    enum CodingKeys: String, CodingKey {
        case precision, recall, k, referenceN = "reference_n"
        case dataFloorPrecision = "data_floor_precision", dataFloorRecall = "data_floor_recall"
    }
}
extension QualityReport.ClassAccuracy {
    enum CodingKeys: String, CodingKey { case value, n, realImageAccuracy = "real_image_accuracy" }
}
extension QualityReport.PerClass {
    enum CodingKeys: String, CodingKey { case index, name, n, accuracy, fid, fidDataFloor = "fid_data_floor" }
}
